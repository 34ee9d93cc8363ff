"""Speaker-attributed transcription of long recordings from one model.

The file is read in chunks of at most CHUNK_S (bounded memory however long it is). Each
chunk gets one encoder pass for the VAD head's speech segments (a low layer, so the pass
stops there); each speech segment (cut at the VAD head's likeliest pause when longer than
MAX_UTTERANCE_S) then gets a pass of its own for the speech head, all segments of a chunk in
one padded batch and one batched decoding: the decoder was fine-tuned on single utterances,
and Whisper's absolute positions make the same speech later in a 30 s window read
differently to it (it writes only the ends of the turns). CTC alignment times the words.
The segments are cut into pieces of at most MAX_PIECE_S, and each piece gets a pass of its
own for the speaker head too (again one batch per chunk): it was trained on one speaker at a
time, and on a shared pass attention mixes the neighbours' voices into a piece. A speech segment still open at a
chunk's end is not cut there: the next chunk starts at its beginning, so no word is lost or
written twice. Piece embeddings are clustered (speaker count given, or estimated with a
distance threshold), clusters take enrolled names where they match, and neighbouring
segments of the same speaker are merged. ``method="tokens"`` instead asks a decoder trained
on <|speakers|> for each chunk's turns (one pass of the whole chunk, as it was trained on
windows of conversations) and links the chunks' speakers by embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from ..audio import BLOCK_VALUES, SAMPLE_RATE, AudioError, is_silent, to_model_audio
from ..model.decoder_tasks import TRANSCRIBE, TRANSLATE
from ..model.encoders.whisper import WHISPER_FRAMES_PER_SECOND
from ..text import normalize_text
from .pipeline import GREEDY, Decoding, Polyhead, compression_ratio, decode, load, no_speech_prob, pad_batch, words_in

CHUNK_S = 30.0  # seconds per encoder pass: memory stays bounded for hour-long files
MIN_SEGMENT_FRAMES = 3
# Transcribed segments of one speaker closer than this are one segment: coarser than the VAD's
# own (pipeline.VAD_MERGE_GAP_S, pauses inside one segment): these are turns already attributed.
SPEAKER_MERGE_GAP_S = 0.5
# A VAD segment may hold several turns when speakers follow each other closely (or when the VAD
# head marks everything speech): it is cut again at pauses between CTC words, and into pieces
# of at most MAX_PIECE_S, so each embedding covers one speaker; clustering then re-joins them.
# 3 s chosen on conversations_dev with the demo model (DER 13.2%, against 18.5% for 1.5 s and
# 21.2% for 8 s: docs/results.md).
PAUSE_S = 0.3
MAX_PIECE_S = 3.0
MAX_UTTERANCE_S = 8.0  # longer units are cut where speech is least likely (Whisper was
MIN_UTTERANCE_S = 1.0  # fine-tuned on single utterances of a few seconds)
# Above this a decoded text is a loop (Whisper's threshold): the CTC head's words replace it.
MAX_COMPRESSION_RATIO = 2.4
# A segment reaching this close to a chunk's end is left to the next chunk (it may go on).
EDGE_S = 0.3
MIN_ADVANCE_S = 1.0  # a chunk always moves the reading on by at least this much
DEFAULT_CLUSTER_THRESHOLD = 0.6  # cosine distance above which segments are different speakers
METHODS = ("clustering", "tokens")  # who speaks: embedding clustering, or the decoder's speaker tokens


def read_chunks(path: str | Path, chunk_s: float = CHUNK_S, feedback: list | None = None):
    """Yield (start seconds, 16 kHz mono samples, is-last) without loading the whole file.
    With ``feedback``, a one-item list in which the caller puts how many seconds of the chunk
    it used, the next chunk starts there (at least MIN_ADVANCE_S on, so reading advances)."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for non-audio
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    frames, rate = int(chunk_s * info.samplerate), info.samplerate
    with sf.SoundFile(str(path)) as f:
        start = 0
        while start < info.frames:
            f.seek(start)
            data = _read_mono(f, frames)
            if len(data) == 0:
                break
            last = start + len(data) >= info.frames
            used = len(data)
            if len(data) >= rate // 10:  # a tail under 0.1 s carries no speech
                if feedback is not None:
                    feedback[0] = None
                yield start / rate, to_model_audio(data, rate, name=str(path)), last
                if feedback is not None and feedback[0] is not None:
                    used = min(len(data), max(int(MIN_ADVANCE_S * rate), int(feedback[0] * rate)))
            start += used


def _read_mono(f: sf.SoundFile, frames: int) -> np.ndarray:
    """Up to ``frames`` frames from where ``f`` stands, down-mixed (the mean of the channels,
    as ``to_model_audio`` takes it) block by block: a chunk is held as one channel at the
    file's rate, never as all of them (30 s of an 8-channel 384 kHz file: 46 MB, not 368 MB)."""
    block, parts, got = max(1, BLOCK_VALUES // f.channels), [], 0
    while got < frames:
        data = f.read(min(block, frames - got), dtype="float32", always_2d=True)
        if len(data) == 0:
            break
        got += len(data)
        parts.append(data[:, 0] if data.shape[1] == 1 else data.mean(axis=1))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass
class ChunkPass:
    """One chunk's encoder pass and what every speaker method starts from: the heads' outputs,
    the tasks of the VAD, text and speaker heads (None where absent), the
    speech segments, and the seconds of the chunk they cover (see ``open_at_end``)."""

    out: dict
    fps: float
    vad: str | None
    asr: str | None
    spk: str | None
    segs: list[dict]
    covered: float

    @classmethod
    def run(cls, ph: Polyhead, samples: np.ndarray, last: bool, text: bool = True) -> "ChunkPass":
        """``text=False``: the pass leaves out the speech head (and the layers only it reads)."""
        model = ph.model
        first = lambda found: found[0].name if found else None  # noqa: E731
        vad = first([k for k in ph.kinds if k.detects_speech])
        asr, spk = first([k for k in ph.kinds if k.transcribes]), first([k for k in ph.kinds if k.embeds])
        # the speaker head runs on each piece's own pass (describe), not on this one
        tasks = [t for t in model.config.tasks if t != spk and (text or t != asr)]
        if is_silent(samples):  # below the silence floor (audio.is_silent): no speech, and no pass
            return cls({}, model.encoder.frames_per_second, vad, asr, spk, [], len(samples) / SAMPLE_RATE)
        inputs, lengths = ph.model_inputs(samples)
        out = model(inputs, lengths, tasks)  # the chunk's pass
        fps, chunk_s = model.encoder.frames_per_second, len(samples) / SAMPLE_RATE
        segs = ph.speech_segments(out[vad]["logits"][0], fps) if vad else [{"start": 0.0, "end": chunk_s}]
        covered = chunk_s
        if not last and (cut := open_at_end(segs, chunk_s)) is not None:
            segs, covered = segs[:-1], cut
        return cls(out, fps, vad, asr, spk, segs, covered)

    def describe(self, ph: Polyhead, items: list[tuple[dict, int, int]], samples: np.ndarray) -> list[dict]:
        """Each ``item`` (a segment on frames a..b) with its no_speech_prob and speaker
        embedding. The speaker head embeds each piece on a pass of the piece's audio alone
        (all of a chunk's pieces in one padded batch), as it was trained on single-speaker
        utterances: on the chunk's pass, attention has mixed the other speakers' frames into
        a piece's (on conversations_dev, known count: DER 7.5% against 21.1% on the bench
        corpus, 18.9% against 19.5% on the demo's; docs/results.md)."""
        for item, a, b in items:
            if self.vad:
                item["no_speech_prob"] = no_speech_prob(self.out[self.vad]["logits"][0, a:b])
        if self.spk and items:
            rate = SAMPLE_RATE / self.fps
            feats = [ph.model.encoder.features(samples[int(a * rate):int(b * rate)]) for _, a, b in items]
            embs = ph.model(*pad_batch(feats), [self.spk])[self.spk]["embedding"].numpy()
            for (item, _, _), e in zip(items, embs):
                item["embedding"] = e
        return [item for item, _, _ in items]


def utterances(segs: list[dict], vad_logits: torch.Tensor | None = None,
               fps: float = WHISPER_FRAMES_PER_SECOND) -> list[dict]:
    """The decoder's units: the speech segments, those longer than MAX_UTTERANCE_S cut where
    speech is least likely (the VAD head's lowest logit at least MIN_UTTERANCE_S from either
    end; the middle without a VAD head)."""
    return [u for seg in segs for u in _shorter(seg["start"], seg["end"], vad_logits, fps)]


def _shorter(a: float, b: float, vad_logits: torch.Tensor | None, fps: float) -> list[dict]:
    if b - a <= MAX_UTTERANCE_S:
        return [{"start": a, "end": b}]
    lo, hi = int((a + MIN_UTTERANCE_S) * fps), int((b - MIN_UTTERANCE_S) * fps)
    if vad_logits is not None and hi > lo and hi <= len(vad_logits):
        cut = (lo + int(vad_logits[lo:hi].argmin())) / fps
    else:
        cut = (a + b) / 2
    return _shorter(a, cut, vad_logits, fps) + _shorter(cut, b, vad_logits, fps)


def open_at_end(segs: list[dict], chunk_s: float) -> float | None:
    """Where the speech still going on at the chunk's end began: the next chunk starts
    there. None when nothing is open, or when that segment began at the chunk's start (it
    fills the chunk: cutting it is the only way forward)."""
    if segs and segs[-1]["end"] >= chunk_s - EDGE_S and segs[-1]["start"] >= MIN_ADVANCE_S:
        return segs[-1]["start"]
    return None


@torch.no_grad()
def chunk_segments(ph: Polyhead, samples: np.ndarray, offset: float, decoding: Decoding = GREEDY,
                   last: bool = True) -> tuple[list[dict], float]:
    """Speech segments of one chunk, each with its words, its speaker embedding and, where
    the heads give them, its utterance's ``avg_logprob`` and its ``no_speech_prob``; and how
    many seconds of the chunk they cover (less than all when ``last`` is False and speech is
    still going on at its end: the caller starts the next chunk there)."""
    decoder = ph.decoder() is not None
    p = ChunkPass.run(ph, samples, last, text=not decoder)
    if not p.segs:
        return [], p.covered  # the VAD heard no speech: nothing for the decoder to write
    out, fps, vad, asr, segs = p.out, p.fps, p.vad, p.asr, p.segs
    if decoder:
        units = utterances(segs, out[vad]["logits"][0] if vad else None, fps)
        for u in units if vad else []:  # the VAD head's no-speech probability: Whisper's rules read it
            u["no_speech_prob"] = no_speech_prob(out[vad]["logits"][0, int(u["start"] * fps):int(u["end"] * fps)])
        # a unit the no-speech rule silenced is no segment (Whisper skips it)
        units = [u for u in utterance_transcripts(ph, asr, samples, units, decoding) if not u.get("silence")]
    elif asr:  # CTC: its words on the chunk's pass
        words = ph.ctc_transcript(out[asr]["logits"][0, :int(out[asr]["lengths"][0])], fps)["words"]
        units = [dict(s, words=words_in(words, s["start"], s["end"])) for s in segs]
    else:
        units = [dict(s, words=[]) for s in segs]
    result = []
    for unit in units:
        for s in split_segment(unit, unit["words"]):
            a, b = int(s["start"] * fps), max(int(s["end"] * fps), int(s["start"] * fps) + MIN_SEGMENT_FRAMES)
            seg_words = [dict(w, start=round(w["start"] + offset, 2), end=round(w["end"] + offset, 2))
                         for w in s["words"]]
            item = {"start": round(s["start"] + offset, 2), "end": round(s["end"] + offset, 2),
                    "text": " ".join(w["word"] for w in seg_words), "words": seg_words,
                    # where the pass that wrote its words began (Whisper's `seek`): the
                    # utterance's own pass with a decoder, the chunk's for CTC
                    "window_start": round((unit["start"] if decoder else 0.0) + offset, 2)}
            if unit.get("avg_logprob") is not None:
                item["avg_logprob"] = unit["avg_logprob"]  # per decoded utterance, as Whisper's per segment
            result.append((item, a, b))
    return p.describe(ph, result, samples), p.covered


@torch.no_grad()
def chunk_speaker_turns(ph: Polyhead, samples: np.ndarray, offset: float, decoding: Decoding = GREEDY,
                        last: bool = True) -> tuple[list[dict], float]:
    """``--method tokens``: the decoder's <|speakers|> transcript of one chunk (one encoder
    pass, one decoding of the chunk's speech), its turns timed by CTC alignment, each with
    ``local`` (the chunk's speaker number) and an embedding of the turn's frames; and the
    seconds of the chunk used, as ``chunk_segments``."""
    from ..ctc import word_times, words_by_turn
    from ..model.decoder_tasks import SPEAKERS, parse_speakers

    p = ChunkPass.run(ph, samples, last)
    if not p.segs:
        return [], p.covered  # the VAD heard no speech: nothing for the decoder to write
    out, fps, asr, segs = p.out, p.fps, p.asr, p.segs
    n = min(int(out[asr]["lengths"][0]), int(round(p.covered * fps)))
    res = decode(ph.model.heads[asr], out[asr]["memory"][:, :n], torch.tensor([n]), decoding,
                 frames_per_second=fps, task=SPEAKERS,
                 no_speech=[no_speech_prob(out[p.vad]["logits"][0, :n])] if p.vad else None)[0]
    turns = parse_speakers(res["text"])
    times = None
    if "logits" in out[asr]:
        logp = out[asr]["logits"][0, :n].float().log_softmax(-1).numpy()
        times = word_times(" ".join(t for _, t in turns), logp, ph.config.vocab["text"], fps)
    words_of = [normalize_text(t).split() for _, t in turns]
    spoken = [w for ws in words_of for w in ws]
    if times is None or len(times) != len(spoken):  # no fit: the speech, evenly
        times = _spread(spoken, [(s["start"], s["end"]) for s in segs])
    result = []
    for local, mine in words_by_turn(turns, times):
        if not mine:
            continue
        seg_words = [dict(w, start=round(w["start"] + offset, 2), end=round(w["end"] + offset, 2)) for w in mine]
        a = int(mine[0]["start"] * fps)
        b = max(int(mine[-1]["end"] * fps), a + MIN_SEGMENT_FRAMES)
        item = {"start": seg_words[0]["start"], "end": seg_words[-1]["end"], "local": local,
                "text": " ".join(w["word"] for w in seg_words), "words": seg_words, "avg_logprob": res["avg_logprob"],
                "window_start": round(offset, 2)}
        result.append((item, a, b))
    return p.describe(ph, result, samples), p.covered


def _spread(words: list[str], speech: list[tuple[float, float]]) -> list[dict]:
    """Times for ``words`` spread evenly over the speech (when CTC alignment cannot time them)."""
    if not words:
        return []
    total = sum(b - a for a, b in speech) or 1e-9
    step, out = total / len(words), []
    for k, w in enumerate(words):
        at, t = k * step, None
        for a, b in speech:
            if at < b - a:
                t = a + at
                break
            at -= b - a
        t = speech[-1][1] - step if t is None else t
        out.append({"word": w, "start": round(t, 2), "end": round(t + step, 2)})
    return out


def link_speakers(segments: list[dict], num_speakers: int | None, threshold: float) -> list:
    """``--method tokens``: the decoder numbers speakers per chunk; a (chunk, number) group is
    one speaker, and the groups of all chunks are clustered by their mean embedding. Labels
    per segment (the group's cluster). One chunk needs no clustering: its numbers stand."""
    groups = sorted({(s["chunk"], s["local"]) for s in segments})
    if len({c for c, _ in groups}) == 1 or "embedding" not in segments[0]:
        return [s["local"] for s in segments]
    means = []
    for g in groups:
        e = np.stack([s["embedding"] for s in segments if (s["chunk"], s["local"]) == g]).mean(0)
        means.append(e / (np.linalg.norm(e) + 1e-9))
    labels = cluster(np.stack(means), num_speakers, threshold)
    of = dict(zip(groups, labels))
    return [of[(s["chunk"], s["local"])] for s in segments]


@torch.no_grad()
def utterance_transcripts(ph: Polyhead, task: str, samples: np.ndarray, units: list[dict],
                          decoding: Decoding) -> list[dict]:
    """Each unit (chunk times) with the decoder's text and its ``words``: every unit gets an
    encoder pass of its own audio (all in one padded batch), as the decoder was fine-tuned on
    single utterances that start at the encoder's first position (its positions are
    absolute: the same speech later in a 30 s window reads differently to it), then one
    batched decoding; word times from CTC alignment on the unit's frames, and the CTC head's
    own words where the decoder looped."""
    from ..ctc import word_times

    units = [u for u in units if int(u["end"] * SAMPLE_RATE) - int(u["start"] * SAMPLE_RATE) >= SAMPLE_RATE // 10]
    if not units:
        return []
    feats = [ph.model.encoder.features(samples[int(u["start"] * SAMPLE_RATE):int(u["end"] * SAMPLE_RATE)])
             for u in units]
    out = ph.model(*pad_batch(feats), [task])[task]
    fps, head = out["frames_per_second"], ph.model.heads[task]
    prompts = [decoding.prompt] + [None] * (len(units) - 1)  # the prompt conditions what comes first
    quiet = [u.get("no_speech_prob") for u in units]
    by_row = {}
    for prompt in dict.fromkeys(prompts):
        rows = [i for i, p in enumerate(prompts) if p == prompt]
        # Whisper's temperature fallback and no-speech rule, per unit
        res = decode(head, out["memory"][rows], out["lengths"][rows], replace(decoding, prompt=prompt),
                     frames_per_second=fps, ctc_logits=out["logits"][rows] if "logits" in out else None,
                     vocab=ph.config.vocab.get("text"),
                     no_speech=[quiet[i] for i in rows] if all(q is not None for q in quiet) else None)
        by_row.update(zip(rows, res))
    spells = decoding.task == TRANSCRIBE  # a translation's words are not the speech's: no CTC times
    for i, u in enumerate(units):
        d, n = by_row[i], int(out["lengths"][i])
        u["avg_logprob"], u["words"], words = d["avg_logprob"], [], []
        u["silence"] = d["silence"]
        logits = out["logits"][i, :n] if "logits" in out else None
        if d["silence"]:
            pass  # Whisper's no-speech rule: no words
        elif logits is not None and spells and compression_ratio(d["text"]) > MAX_COMPRESSION_RATIO:
            words = ph.ctc_transcript(logits, fps)["words"]  # the CTC head's own
        elif d["text"].strip():
            spoken = normalize_text(d["text"]).split()
            if logits is not None and spells:
                words = word_times(d["text"], logits.float().log_softmax(-1).numpy(), ph.config.vocab["text"], fps)
            if not words:  # no CTC head, or the text does not fit the frames: spread evenly
                words = _spread(spoken, [(0.0, u["end"] - u["start"])])
        u["words"] = [dict(w, start=round(w["start"] + u["start"], 2), end=round(w["end"] + u["start"], 2))
                      for w in words]
    return units


def split_segment(seg: dict, words: list[dict]) -> list[dict]:
    """Cut a speech segment at word pauses of PAUSE_S or more (the cut in the middle of the
    pause), then into pieces no longer than MAX_PIECE_S; each piece carries its words."""
    inner = words_in(words, seg["start"], seg["end"])
    cuts = [seg["start"]]
    for prev, nxt in zip(inner, inner[1:]):
        if nxt["start"] - prev["end"] >= PAUSE_S:
            cuts.append((prev["end"] + nxt["start"]) / 2)
    cuts.append(seg["end"])
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        n = max(1, int(np.ceil((b - a) / MAX_PIECE_S - 1e-9)))
        step = (b - a) / n
        pieces += [{"start": a + i * step, "end": a + (i + 1) * step, "words": []} for i in range(n)]
    # each word goes to exactly one piece (the one its start falls in), so none is repeated
    starts = [p["start"] for p in pieces]
    for w in inner:
        pieces[max(0, int(np.searchsorted(starts, w["start"], side="right")) - 1)]["words"].append(w)
    return pieces


def cluster(embeddings: np.ndarray, num_speakers: int | None, threshold: float) -> np.ndarray:
    if len(embeddings) == 1:
        return np.zeros(1, dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    if num_speakers:
        algo = AgglomerativeClustering(n_clusters=min(num_speakers, len(embeddings)), metric="cosine",
                                       linkage="average")
    else:
        algo = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, metric="cosine",
                                       linkage="average")
    return algo.fit_predict(embeddings)


def transcribe(ph: Polyhead, path: str | Path, num_speakers: int | None = None,
               threshold: float = DEFAULT_CLUSTER_THRESHOLD, registry=None, id_threshold: float = 0.5,
               progress: bool = False, decoding: Decoding = GREEDY, method: str = "clustering",
               advance=None) -> dict:
    """Speaker-attributed transcript: {"segments": [{start, end, speaker, text, words}], ...}.
    ``method``: ``clustering`` (speaker-head embeddings of short pieces, clustered) or
    ``tokens`` (the decoder's <|speakers|> task writes the turns of each chunk; chunks are
    linked by embedding). ``decoding.prompt`` conditions the first chunk only, as Whisper's
    initial prompt does when it does not condition on its own previous text. ``advance``:
    called with the seconds of audio each chunk used (a progress bar over many files)."""
    ph.check_decoding(decoding)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "tokens":
        check_speaker_tokens(ph)
    per_chunk = chunk_speaker_turns if method == "tokens" else chunk_segments
    if not Path(path).is_file():
        raise AudioError(f"{path}: file not found")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for non-audio
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    segments: list[dict] = []
    total = info.frames / info.samplerate
    with tqdm(total=round(total), unit="s", desc="transcribe", disable=not progress) as bar:
        covered: list = [None]  # read_chunks starts the next chunk where this one's speech ended
        for k, (offset, samples, last) in enumerate(read_chunks(path, feedback=covered)):
            found, covered[0] = per_chunk(ph, samples, offset, decoding, last=last)
            segments += [dict(s, chunk=k) for s in found]
            if found:
                decoding = replace(decoding, prompt=None)
            bar.update(round(covered[0]))
            if advance is not None:
                advance(covered[0])
    if segments and (method == "tokens" or "embedding" in segments[0]):
        labels = np.asarray(link_speakers(segments, num_speakers, threshold) if method == "tokens"
                            else cluster(np.stack([s["embedding"] for s in segments]), num_speakers, threshold))
        embs = np.stack([s["embedding"] for s in segments]) if "embedding" in segments[0] else None
        names = {}
        for k in sorted(set(labels), key=lambda k: int(np.argmax(labels == k))):  # in order of appearance
            name = f"SPEAKER_{len(names):02d}"
            if registry is not None and embs is not None:
                centroid = embs[labels == k].mean(axis=0)
                match = registry.identify(centroid, id_threshold)
                if match["speaker"] != "unknown":
                    name = match["speaker"]
            names[k] = name
        for s, k in zip(segments, labels):
            s["speaker"] = names[k]
            for w in s["words"]:
                w["speaker"] = names[k]
    for s in segments:
        for key in ("embedding", "chunk", "local"):
            s.pop(key, None)
    segments = merge_segments(segments)
    return {"duration": round(total, 2), "segments": segments,
            "speakers": sorted({s.get("speaker") for s in segments if s.get("speaker")})}


def check_speaker_tokens(ph: Polyhead) -> None:
    """``--method tokens`` needs a decoder trained on <|speakers|>: refuse up front otherwise."""
    from ..model.decoder_tasks import SPEAKERS

    head = ph.decoder()
    if head is None or SPEAKERS not in getattr(head, "tasks", []):
        raise ValueError("method tokens: this model's decoder was not trained on <|speakers|> "
                         "(decoder_tasks; configs/decoder_tasks.yaml); use method clustering")


def merge_segments(segments: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for s in sorted(segments, key=lambda s: s["start"]):
        if (merged and merged[-1].get("speaker") == s.get("speaker")
                and s["start"] - merged[-1]["end"] < SPEAKER_MERGE_GAP_S):
            m = merged[-1]
            for key in ("avg_logprob", "no_speech_prob"):
                if key in m and key in s:  # the merged segment's: weighted by duration
                    wm, ws = m["end"] - m["start"], s["end"] - s["start"]
                    m[key] = round((m[key] * wm + s[key] * ws) / max(wm + ws, 1e-9), 4)
            m["end"] = max(m["end"], s["end"])
            m["words"] += s["words"]
            m["text"] = " ".join(w["word"] for w in m["words"])
        else:
            merged.append(dict(s))
    return merged


def analyze_file(path: str | Path, audio: str | Path, model: Polyhead | None = None, translate: bool = False) -> dict:
    """Every head on one file. A recording longer than the encoder's window (Whisper: 30 s)
    is transcribed in windows, by speaker, instead (``diarize.transcribe``); ``translate``:
    with its English translation too (for a long one: translated in the same windows)."""
    ph = model or load(path)
    info = sf.info(str(audio)) if Path(audio).is_file() else None
    if info is not None and info.frames / info.samplerate > ph.max_seconds:
        res = transcribe(ph, audio)
        res["text"] = " ".join(s["text"] for s in res["segments"])
        if translate:
            ph.check_translation()
            english = transcribe(ph, audio, decoding=replace(GREEDY, task=TRANSLATE))
            res["translation"] = " ".join(s["text"] for s in english["segments"] if s["text"])
        return res
    res = ph.analyze(audio, translate=translate)
    res.pop("speaker_embedding", None)
    return res
