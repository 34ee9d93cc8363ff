"""Speaker-attributed transcription of long recordings from one model.

The file is read in fixed chunks (bounded memory however long it is); each chunk gets ONE
encoder pass, from which the VAD head gives speech segments, the CTC head words with times,
and the speaker head an embedding per segment (pooled over that segment's frames only).
Segment embeddings are then clustered (speaker count given, or estimated with a distance
threshold), clusters take enrolled names where they match, and neighbouring segments of the
same speaker are merged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE, AudioError, to_model_audio
from ..model.heads import HeadInput
from .pipeline import GREEDY, Decoding, Polyhead, no_speech_prob, words_in

CHUNK_S = 30.0  # seconds per encoder pass: memory stays bounded for hour-long files
MIN_SEGMENT_FRAMES = 3
MERGE_GAP_S = 0.5
# A VAD segment may hold several turns when speakers follow each other closely (or when the VAD
# head marks everything speech): it is cut again at pauses between CTC words, and into pieces
# of at most MAX_PIECE_S, so each embedding covers one speaker; clustering then re-joins them.
PAUSE_S = 0.3
MAX_PIECE_S = 1.5
DEFAULT_CLUSTER_THRESHOLD = 0.6  # cosine distance above which segments are different speakers


def read_chunks(path: str | Path, chunk_s: float = CHUNK_S):
    """Yield (start seconds, 16 kHz mono samples) without loading the whole file."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for non-audio
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    frames = int(chunk_s * info.samplerate)
    with sf.SoundFile(str(path)) as f:
        start = 0
        while True:
            data = f.read(frames, dtype="float32", always_2d=True)
            if len(data) == 0:
                break
            if len(data) >= info.samplerate // 10:  # a tail under 0.1 s carries no speech
                yield start / info.samplerate, to_model_audio(data, info.samplerate, name=str(path))
            start += len(data)


@torch.no_grad()
def chunk_segments(ph: Polyhead, samples: np.ndarray, offset: float, decoding: Decoding = GREEDY) -> list[dict]:
    """Speech segments of one chunk, each with its words, its speaker embedding and, where
    the heads give them, the chunk's ``avg_logprob`` and the segment's ``no_speech_prob``."""
    model = ph.model
    inputs, lengths = ph._inputs(samples)
    out, states = model(inputs, lengths, return_states=True)  # the one encoder pass
    fps = model.encoder.frames_per_second
    first = lambda found: found[0] if found else None  # noqa: E731
    vad, asr = first(model.tasks_with(target="vad")), first(model.tasks_with(target="text"))
    spk = first(model.tasks_with(head_type="speaker"))
    segs = ph._segments(out[vad]["logits"][0], fps) if vad else [{"start": 0.0, "end": len(samples) / SAMPLE_RATE}]
    if not segs:
        return []  # the VAD heard no speech: nothing for the decoder to write
    transcript = ph._transcript_of(asr, out[asr], 0, ph._decode(asr, out[asr], [decoding]), fps) if asr else {}
    words = transcript.get("words", [])
    result = []
    for s in (piece for seg in segs for piece in split_segment(seg, words)):
        a, b = int(s["start"] * fps), max(int(s["end"] * fps), int(s["start"] * fps) + MIN_SEGMENT_FRAMES)
        seg_words = [dict(w, start=round(w["start"] + offset, 2), end=round(w["end"] + offset, 2))
                     for w in s["words"]]
        item = {"start": round(s["start"] + offset, 2), "end": round(s["end"] + offset, 2),
                "text": " ".join(w["word"] for w in seg_words), "words": seg_words}
        if "avg_logprob" in transcript:
            item["avg_logprob"] = transcript["avg_logprob"]  # per decoding window, as Whisper's
        if vad:
            item["no_speech_prob"] = no_speech_prob(out[vad]["logits"][0, a:b])
        if spk:
            item["embedding"] = segment_embedding(ph, out, states, spk, samples, a, b)
        result.append(item)
    return result


def segment_embedding(ph: Polyhead, out: dict, states: dict, task: str, samples: np.ndarray,
                      a: int, b: int) -> np.ndarray:
    """The speaker head on frames a..b of the chunk's pass, its input built as the model's
    forward builds it (CTC-pooled heads get the CTC head's blank decisions for those frames).
    A CLS vector (pooling ``first``) summarises the whole input it attended to, so a segment's
    needs a pass over that segment's audio alone."""
    model, fps = ph.model, ph.model.encoder.frames_per_second
    head = model.heads[task]
    if head.needs_cls:
        rate = SAMPLE_RATE / fps
        return ph.embed(samples[int(a * rate):int(b * rate)])
    x = states[(model.branch_of(task), model.layer_index(task))]
    x = x[:, 1:] if model.cls is not None else x
    blank = None
    if head.needs_blank:
        blank = out[model.blank_source]["logits"][:, a:b].argmax(-1) == 0
    piece = x[:, a:b]
    inp = HeadInput(piece, torch.tensor([piece.shape[1]]), blank=blank, frames_per_second=fps)
    return head(inp)["embedding"][0].numpy()


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
               progress: bool = False, decoding: Decoding = GREEDY) -> dict:
    """Speaker-attributed transcript: {"segments": [{start, end, speaker, text, words}], ...}.
    ``decoding.prompt`` conditions the first chunk only, as Whisper's initial prompt does
    when it does not condition on its own previous text."""
    ph.check_decoding(decoding)
    info = sf.info(str(path)) if Path(path).is_file() else None
    if info is None:
        raise AudioError(f"{path}: file not found")
    segments: list[dict] = []
    total = info.frames / info.samplerate
    with tqdm(total=round(total), unit="s", desc="transcribe", disable=not progress) as bar:
        for offset, samples in read_chunks(path):
            segments += chunk_segments(ph, samples, offset, decoding)
            decoding = replace(decoding, prompt=None)
            bar.update(round(len(samples) / SAMPLE_RATE))
    if segments and "embedding" in segments[0]:
        embs = np.stack([s.pop("embedding") for s in segments])
        labels = cluster(embs, num_speakers, threshold)
        names = {}
        for k in sorted(set(labels)):
            centroid = embs[labels == k].mean(axis=0)
            name = f"SPEAKER_{len(names):02d}"
            if registry is not None:
                match = registry.identify(centroid, id_threshold)
                if match["speaker"] != "unknown":
                    name = match["speaker"]
            names[k] = name
        for s, k in zip(segments, labels):
            s["speaker"] = names[k]
            for w in s["words"]:
                w["speaker"] = names[k]
    segments = merge_segments(segments)
    return {"duration": round(total, 2), "segments": segments,
            "speakers": sorted({s.get("speaker") for s in segments if s.get("speaker")})}


def merge_segments(segments: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for s in sorted(segments, key=lambda s: s["start"]):
        if merged and merged[-1].get("speaker") == s.get("speaker") and s["start"] - merged[-1]["end"] < MERGE_GAP_S:
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
