"""`polyhead synth`: generate the embedded multi-speaker, multilingual corpus offline.

Layout of the output folder (names are what the trainer and evaluator look for):

    corpus.json                      preset, seed, voices, counts, trial-list baselines
    audio/<set>/<speaker>/<utt>.wav  16 kHz mono PCM
    manifests/<set>_{recordings,supervisions,cuts}.jsonl.gz   lhotse
    nemo/<set>.jsonl                 NeMo ASR + speaker-label manifest
    trials/<set>.txt                 "<1|0> <enrol-cut-id> <test-cut-id>"
    rttm/<set>.rttm                  long recordings (VAD and conversations)

Sets: speech_{train,dev,test} (LibriSpeech-like: English, many sentences per speaker),
speaker_{train,dev,test} (VoxCeleb-like: many speakers x sessions, several languages),
ood_test (engines never used in training), vad_{train,dev,test} (one speaker, long, with
silences and noise, and stretches that are not speech: digital zeros, low noise, tones and
chords; ``NEGATIVE_KINDS``), conversations_{train,dev,test} (2-4 speakers taking turns), and natural
English the generator never wrote (``natural.py``): retention_{dev,test} read by the engines never
trained on, retention_tel_{dev,test} (the same recordings through a telephone channel) and
replay_train (read by the training engines' native English voices; its transcripts are not for
training: the replay strategy transcribes it with the pretrained model). Last, translation and
code-switching (``parallel.py``): translate_{train,dev,test} (German, French, Spanish, Italian or
Dutch read by that language's voices, each with its English translation) and codeswitch_test
(English with one or two nouns in one of those languages, read by English voices).

Translation and code-switching cuts are single utterances whose supervision has ``language``
the spoken language (de/fr/es/it/nl; "en" for code-switching), ``text`` the spoken sentence in
written form, and custom fields ``translation`` (the English written sentence), ``kind``
("parallel" or "codeswitch") and, for code-switching, ``codeswitch_language``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from tqdm import tqdm

from ...audio import SAMPLE_RATE, save_audio
from ..corpus import MANIFEST_DIR, Trial, write_info, write_trials
from . import channel as chan
from . import nonspeech
from .engines import EngineError, Voice, available_voices, report_missing, speak
from .text import TextSource, Utterance

log = logging.getLogger(__name__)

TRAINING_ENGINES = ("espeak", "mbrola")
OOD_ENGINES = ("flite", "festival", "piper")
# natural-English sets that also get a copy through a telephone channel: the test set's is
# reported beside it; the dev set's lets an interpolation coefficient be chosen on that channel too
TELEPHONE_COPIES = {"retention_dev": "retention_tel_dev", "retention_test": "retention_tel_test"}


@dataclass(frozen=True)
class Preset:
    speech_speakers: tuple[int, int, int]  # train, dev, test
    speech_utts: int | tuple[int, int, int]  # per speaker; one number, or train, dev, test
    speech_sessions: int
    speaker_speakers: tuple[int, int, int]
    speaker_sessions: int
    speaker_utts: int | tuple[int, int, int]  # per session; one number, or train, dev, test
    ood_speakers: int
    ood_utts: int  # per speaker
    vad_recordings: tuple[int, int, int]
    conversations: tuple[int, int] | tuple[int, int, int]  # dev, test (, train)
    held_out_voice_fraction: float = 0.3
    mbrola_share: float = 0.5  # share of speakers drawn from MBROLA (vs espeak formant) voices
    jitter: float = 1.0  # within-speaker prosody jitter scale
    snr_range: tuple[float, float] = (8.0, 35.0)
    reverb_prob: float = 0.5
    rt60_max: float = 0.7
    trials_per_utt: int = 4
    command_share: float = 0.15
    foreign_share: float = 0.5  # for speakers who read a second language
    # natural-English utterances: replay_train, retention_dev, retention_test (+ its telephone copy)
    natural: tuple[int, int, int] = (0, 0, 0)
    # utterances PER LANGUAGE in translate_train, translate_dev, translate_test
    translation: tuple[int, int, int] = (0, 0, 0)
    codeswitch: int = 0  # utterances in codeswitch_test
    # Pseudo-speakers: the share of training speakers (speech_train, speaker_train) whose
    # voice gets a per-speaker conversion (channel.VoiceTransform by `voice_method`: praat or
    # world). Dev and test speakers keep the plain profile, and their held-out base voices.
    pseudo_speakers: float = 0.0
    voice_method: str = "praat"
    room_simulator: bool = False  # reverberant sessions in a simulated shoebox room
    codec_prob: float = 0.0  # share of sessions through a codec (mu-law phone or low bitrate)


PRESETS = {
    "tiny": Preset((6, 2, 3), 6, 1, (6, 2, 4), 2, 2, 2, 2, (2, 1, 1), (1, 1, 1), natural=(4, 3, 3),
                   translation=(2, 1, 1), codeswitch=2),
    # The demo trains on a CPU in 15 minutes (Whisper or from scratch): milder channels than
    # bench. Many speakers with few utterances each (300 in speaker_train, 40 in every test
    # set, as a pretrained-encoder recipe needs), at about the training audio of the earlier
    # 64 x 45 speech and 80 x 12 speaker utterances (4.4 h instead of 3.6 h).
    # conversations_train (the training speakers, 40 recordings) teaches the decoder's
    # <|speakers|> task (configs/decoder_tasks.yaml).
    # natural: 400 replay utterances, 80 retention dev and 160 retention test (each also by telephone)
    "demo": Preset((160, 10, 40), (18, 24, 12), 2, (300, 20, 40), 3, 2, 40, 4, (12, 3, 4), (3, 4, 40),
                   snr_range=(15.0, 40.0), reverb_prob=0.25, rt60_max=0.45, natural=(400, 80, 160),
                   translation=(60, 8, 20), codeswitch=40),
    # demo's time budget spent on ~2,000 training speakers instead of 460: speech_train
    # 1440 x 2 utterances and speaker_train 600 x 3 sessions x 1 (the demo's 2880 and 1800
    # utterances), every training voice converted, simulated rooms and some codecs. Dev and
    # test sets keep the demo's sizes (their draws differ: the planner's stream moves).
    "demo_voices": Preset((1440, 10, 40), (2, 24, 12), 2, (600, 20, 40), 3, (1, 2, 2), 40, 4, (12, 3, 4),
                          (3, 4, 40), snr_range=(15.0, 40.0), reverb_prob=0.25, rt60_max=0.45,
                          natural=(400, 80, 160), translation=(60, 8, 20), codeswitch=40,
                          pseudo_speakers=1.0, room_simulator=True, codec_prob=0.1),
    "bench": Preset((200, 12, 24), 75, 3, (240, 24, 60), 4, 5, 12, 10, (40, 6, 10), (6, 12, 60),
                    natural=(400, 80, 160), translation=(60, 8, 20), codeswitch=40),
}


@dataclass
class Speaker:
    id: str
    voice: Voice
    languages: tuple[str, ...]
    profile: chan.SpeakerProfile
    sessions: list[chan.Channel]


@dataclass
class Job:
    """One output file: a single utterance, or a long recording of several placed turns."""

    set_name: str
    rec_id: str
    turns: list[tuple[Speaker, int, Utterance]]  # (speaker, session index, text)
    seed: int
    long: bool = False
    overlap_prob: float = 0.0
    telephone: bool = False  # through a telephone channel after the session's
    negatives: bool = False  # a long recording with non-speech stretches spliced in (VAD sets)


@dataclass
class Result:
    job: Job
    num_samples: int
    segments: list[dict] = field(default_factory=list)  # start, duration, turn index, phonemes
    error: str | None = None


# --- the worker side --------------------------------------------------------------------------

@dataclass
class Turn:
    samples: np.ndarray
    phonemes: str | None
    phoneme_times: list | None  # [symbol, start s, end s] relative to the first sample


def _dry_turn(spk: Speaker, utt: Utterance, rng: np.random.Generator) -> Turn:
    p = spk.profile
    pitch = int(np.clip(p.pitch + rng.integers(-p.pitch_jitter, p.pitch_jitter + 1), 0, 99))
    rate = p.rate_wpm * (1 + rng.uniform(-p.rate_jitter, p.rate_jitter))
    voice = spk.voice if utt.language == spk.voice.language else dataclasses.replace(spk.voice, language=utt.language)
    # The warp shortens audio by 1/warp; ask the engine for a slower rate to compensate.
    syn = speak(voice, utt.text, rate_wpm=int(rate / p.warp), pitch=pitch)
    # a pseudo-speaker's conversion after the warp (identity, no draw, for plain profiles)
    x = chan.change_voice(chan.warp_to_16k(syn.samples, syn.rate, p.warp), p.transform, rng)
    x, start = chan.trim_silence(x)
    if len(x) < SAMPLE_RATE // 10:
        raise EngineError(f"{voice.id} produced no audio for {utt.text!r}")
    times = None
    if syn.phoneme_times:
        # the warp divides every time by `warp`, the conversion multiplies it by its duration;
        # trimming shifts them by the cut start
        scale, shift, dur = p.transform.duration / p.warp, start / SAMPLE_RATE, len(x) / SAMPLE_RATE
        times = [[sym, round(max(0.0, a * scale - shift), 3), round(min(dur, b * scale - shift), 3)]
                 for sym, a, b in syn.phoneme_times if b * scale - shift > 0 and a * scale - shift < dur]
    return Turn(x / (np.abs(x).max() + 1e-9), syn.phonemes, times)


def _shifted(times: list | None, offset_s: float) -> list | None:
    return [[sym, round(a + offset_s, 3), round(b + offset_s, 3)] for sym, a, b in times] if times else None


def run_job(job: Job, out_dir: Path) -> Result:
    rng = np.random.default_rng(job.seed)
    try:
        if not job.long:
            spk, sess, utt = job.turns[0]
            turn = _dry_turn(spk, utt, rng)
            pad = rng.integers(SAMPLE_RATE // 20, SAMPLE_RATE // 4, size=2)
            x = np.concatenate([np.zeros(pad[0], np.float32), turn.samples, np.zeros(pad[1], np.float32)])
            y = chan.apply_channel(x, spk.sessions[sess], rng)
            if job.telephone:
                y = chan.telephone(y, rng)
            segments = [dict(start=0.0, duration=len(y) / SAMPLE_RATE, turn=0, phonemes=turn.phonemes,
                             phoneme_times=_shifted(turn.phoneme_times, pad[0] / SAMPLE_RATE))]
        else:
            y, segments = _long_recording(job, rng)
        save_audio(out_dir / "audio" / job.set_name / f"{job.rec_id}.wav", y)
        return Result(job, len(y), segments)
    except (EngineError, OSError, ValueError) as e:
        return Result(job, 0, error=f"{job.rec_id}: {e}")


def _long_recording(job: Job, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Place turns on a timeline with pauses (and some overlap), then one room channel."""
    pieces, t = [], int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    segments = []
    for i, (spk, _, utt) in enumerate(job.turns):
        turn = _dry_turn(spk, utt, rng)
        x = turn.samples * 10 ** (rng.uniform(-4, 0) / 20)
        if i and rng.random() < job.overlap_prob:
            start = max(0, t - int(rng.uniform(0.2, 0.8) * SAMPLE_RATE))
        else:
            start = t + int(rng.uniform(0.3, 2.5 if not job.overlap_prob else 1.0) * SAMPLE_RATE)
        pieces.append((start, x))
        segments.append(dict(start=start / SAMPLE_RATE, duration=len(x) / SAMPLE_RATE, turn=i,
                             phonemes=turn.phonemes, phoneme_times=turn.phoneme_times))
        t = max(t, start + len(x))
    total = t + int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    mix = np.zeros(total, np.float32)
    for start, x in pieces:
        mix[start:start + len(x)] += x
    spk0, sess0, _ = job.turns[0]
    y = chan.apply_channel(mix, spk0.sessions[sess0], rng)
    if job.negatives:  # after the channel: the zeros stay exact, the turns stay as they were
        y, segments = _with_negatives(y, segments, rng)
    return y, segments


# Non-speech a VAD head must not call speech (nonspeech.py), one stretch of each kind per VAD
# recording, spliced in after the room channel: a muted input (exact digital zeros), a quiet
# line (noise at -60 to -45 dBFS RMS), and music-like tones (peak -30 to -6 dBFS).
NEGATIVE_KINDS = nonspeech.KINDS
NEGATIVE_SECONDS = (1.0, 3.0)


def _with_negatives(y: np.ndarray, segments: list[dict], rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """``y`` with one stretch of each NEGATIVE_KINDS inserted in its pauses (the leading and
    trailing silence included; the turns do not overlap), and the turns' segments moved by
    what was inserted before them. Labels: the stretches are no supervision, i.e. non-speech."""
    starts = [round(seg["start"] * SAMPLE_RATE) for seg in segments]
    ends = [a + round(seg["duration"] * SAMPLE_RATE) for a, seg in zip(starts, segments)]
    pauses = list(zip(sorted(ends)[:-1], sorted(starts)[1:]))
    bounds = [(0, min(starts))] + pauses + [(max(ends), len(y))]
    gaps = [(a + b) // 2 for a, b in bounds if b - a >= SAMPLE_RATE // 5]
    if not gaps:
        return y, segments
    points = sorted(int(p) for p in rng.choice(gaps, size=len(NEGATIVE_KINDS), replace=len(gaps) < len(NEGATIVE_KINDS)))
    kinds = [NEGATIVE_KINDS[i] for i in rng.permutation(len(NEGATIVE_KINDS))]
    pieces, inserted, last = [], [], 0
    for point, kind in zip(points, kinds):
        stretch = nonspeech.stretch(kind, int(rng.uniform(*NEGATIVE_SECONDS) * SAMPLE_RATE), rng)
        pieces += [y[last:point], stretch]
        inserted.append((point, len(stretch)))
        last = point
    pieces.append(y[last:])
    moved = [dict(seg, start=round((a + sum(n for p, n in inserted if p <= a)) / SAMPLE_RATE, 6))
             for seg, a in zip(segments, starts)]
    return np.concatenate(pieces).astype(np.float32), moved


def _worker(args):
    job, out_dir = args
    return run_job(job, out_dir)


# --- planning (main process, deterministic) -------------------------------------------------

class Planner:
    def __init__(self, preset: Preset, seed: int, voices: tuple[Voice, ...]):
        self.p, self.seed = preset, seed
        self.rng = np.random.default_rng(seed)
        self.text = TextSource(seed)
        self.used_text: set[str] = set()
        self.voices = voices
        self.n_spk = 0
        self._voice_order: dict[tuple, tuple[list[str], set[str]]] = {}

    def _held_out(self, engines) -> tuple[list[str], set[str]]:
        """One shuffled order and one held-out split of base voices, shared by every set, so
        that a voice held out of one set's training speakers is in no other set's either."""
        key = tuple(engines)
        if key not in self._voice_order:
            names = sorted({v.id for v in self.voices if v.engine in engines})
            self.rng.shuffle(names)
            n_held = max(2, int(round(len(names) * self.p.held_out_voice_fraction))) if len(names) > 3 else 0
            self._voice_order[key] = (names, set(names[:n_held]))
        return self._voice_order[key]

    def _voice_pools(self, engines, english_only: bool):
        """Split base voices (one entry per engine voice, all its languages) into train/held-out."""
        by_name: dict[str, list[Voice]] = {}
        for v in self.voices:
            if v.engine in engines and (v.language == "en" or not english_only):
                by_name.setdefault(v.id, []).append(v)
        order, held_out = self._held_out(engines)
        names = [n for n in order if n in by_name]
        train = [n for n in names if n not in held_out]
        held = [n for n in names if n in held_out]
        if len(names) <= 3 or not train:  # too few voices to hold any out
            train, held = names, []
        return [by_name[n] for n in train], [by_name[n] for n in held]

    def _pick_voice(self, pool: list[list[Voice]]) -> list[Voice]:
        mb = [v for v in pool if v[0].engine == "mbrola"]
        other = [v for v in pool if v[0].engine != "mbrola"]
        use_mb = mb and (not other or self.rng.random() < self.p.mbrola_share)
        choice = mb if use_mb else other
        return choice[int(self.rng.integers(len(choice)))]

    def _speaker(self, variants: list[Voice], n_sessions: int, prefix: str, training: bool = False) -> Speaker:
        p = self.p
        self.n_spk += 1
        native = next((v for v in variants if v.language != "en"), variants[0])
        langs = tuple(dict.fromkeys(v.language for v in variants))
        profile = chan.random_profile(self.rng, p.jitter)
        sessions = [chan.random_channel(self.rng, p.snr_range, p.reverb_prob, p.rt60_max, p.room_simulator, p.codec_prob)
                    for _ in range(n_sessions)]
        # drawn last and only when asked: presets without pseudo-speakers keep their draws
        if training and p.pseudo_speakers > 0 and self.rng.random() < p.pseudo_speakers:
            profile = dataclasses.replace(profile, transform=chan.random_transform(
                self.rng, native.gender, p.voice_method, p.jitter))
        return Speaker(id=f"{prefix}{self.n_spk:04d}", voice=native, languages=langs, profile=profile,
                       sessions=sessions)

    def speakers(self, counts, n_sessions, engines, english_only, prefix) -> dict[str, list[Speaker]]:
        """Train speakers come from the train voices; dev/test half from held-out voices,
        and in pairs sharing a base voice so that trials contain same-voice impostors."""
        train_pool, held = self._voice_pools(engines, english_only)
        out = {"train": [self._speaker(self._pick_voice(train_pool), n_sessions, prefix, training=True)
                         for _ in range(counts[0])]}
        for split, n in (("dev", counts[1]), ("test", counts[2])):
            spks = []
            while len(spks) < n:
                pool = held if (held and len(spks) % 4 < 2) else train_pool
                v = self._pick_voice(pool)
                spks += [self._speaker(v, n_sessions, prefix) for _ in range(min(2, n - len(spks)))]
            out[split] = spks
        return out

    def utterance(self, spk: Speaker, allow_foreign=True, english_text_only=False) -> Utterance:
        for _ in range(100):
            foreign = [l for l in spk.languages if l != "en"]
            if foreign and allow_foreign and ("en" not in spk.languages or self.rng.random() < self.p.foreign_share):
                u = self.text.foreign_sentence(foreign[0])
            elif not english_text_only and self.rng.random() < self.p.command_share:
                u = self.text.command()
            else:
                u = self.text.sentence()
            # Commands repeat by nature; sentences must not (no memorisable text).
            if u.kind == "command" or u.text not in self.used_text:
                self.used_text.add(u.text)
                return u
        raise RuntimeError("text source exhausted")

    def job(self, set_name, spk: Speaker, sess: int, utt: Utterance, idx: int) -> Job:
        rec_id = f"{spk.id}/{spk.id}-s{sess}-{idx:04d}"
        return Job(set_name, rec_id, [(spk, sess, utt)], seed=int(self.rng.integers(2**31)))

    def plan(self) -> tuple[list[Job], dict[str, list[Speaker]]]:
        p = self.p
        jobs: list[Job] = []
        speakers: dict[str, list[Speaker]] = {}
        # Speech set: English-reading speakers, many sentences each.
        speech = self.speakers(p.speech_speakers, p.speech_sessions, TRAINING_ENGINES, True, "sp")
        utts = p.speech_utts if isinstance(p.speech_utts, tuple) else (p.speech_utts,) * 3
        for (split, spks), n_utts in zip(speech.items(), utts):
            speakers[f"speech_{split}"] = spks
            for spk in spks:
                spk.languages = ("en",)
                for i in range(n_utts):
                    jobs.append(self.job(f"speech_{split}", spk, i % p.speech_sessions, self.utterance(spk), i))
        # Speaker set: every voice, several sessions, several languages.
        skr = self.speakers(p.speaker_speakers, p.speaker_sessions, TRAINING_ENGINES, False, "sk")
        skr_utts = p.speaker_utts if isinstance(p.speaker_utts, tuple) else (p.speaker_utts,) * 3
        for (split, spks), n_utts in zip(skr.items(), skr_utts):
            speakers[f"speaker_{split}"] = spks
            for spk in spks:
                for s in range(p.speaker_sessions):
                    for i in range(n_utts):
                        jobs.append(self.job(f"speaker_{split}", spk, s, self.utterance(spk), s * 100 + i))
        # Out-of-distribution: only engines never used for training.
        ood_pool = [[v] for v in self.voices if v.engine in OOD_ENGINES]
        if ood_pool:
            ood = [self._speaker(ood_pool[i % len(ood_pool)], 2, "ood") for i in range(p.ood_speakers)]
            speakers["ood_test"] = ood
            for spk in ood:
                for i in range(p.ood_utts):
                    # festival is ~20x slower than the rest; keep its share of the work small
                    if spk.voice.engine == "festival" and i >= max(2, p.ood_utts // 3):
                        break
                    jobs.append(self.job("ood_test", spk, i % 2, self.utterance(spk, english_text_only=True), i))
        jobs += self.natural_jobs(speakers)
        # Long recordings: VAD (one speaker) and conversations (2-4 speakers, some overlap).
        for split, n in zip(("train", "dev", "test"), p.vad_recordings):
            pool = speakers[f"speech_{split}"]
            for r in range(n):
                spk = pool[int(self.rng.integers(len(pool)))]
                turns = [(spk, 0, self.utterance(spk)) for _ in range(int(self.rng.integers(5, 10)))]
                jobs.append(Job(f"vad_{split}", f"vad_{split}_{r:03d}", turns,
                                seed=int(self.rng.integers(2**31)), long=True, negatives=True))
        # train last: adding it leaves the dev and test recordings of a preset as they were
        for split, n in zip(("dev", "test", "train"), p.conversations):
            pool = speakers[f"speech_{split}"]
            for r in range(n):
                k = int(self.rng.integers(2, 5))
                members = [pool[i] for i in self.rng.choice(len(pool), size=min(k, len(pool)), replace=False)]
                order = [members[i % len(members)] if i < len(members) else members[int(self.rng.integers(len(members)))]
                         for i in range(int(self.rng.integers(8, 14)))]
                turns = [(s, 0, self.utterance(s, english_text_only=True)) for s in order]
                jobs.append(Job(f"conversations_{split}", f"conv_{split}_{r:03d}", turns,
                                seed=int(self.rng.integers(2**31)), long=True, overlap_prob=0.15))
        # last of all: the draws of every set above stay what they were before these sets existed
        jobs += self.translation_jobs(speakers)
        return jobs, speakers

    def translation_jobs(self, speakers: dict[str, list[Speaker]]) -> list[Job]:
        """translate_{train,dev,test}: parallel sentences read by each language's own voices
        (MBROLA and espeak), train from the training voices, dev and test at least half from
        the held-out ones; codeswitch_test: code-switched English read by English voices,
        held-out ones where there are any."""
        p = self.p
        if not any(p.translation) and not p.codeswitch:
            return []
        from .parallel import LANGUAGES, ParallelSource

        have = {v.language for v in self.voices if v.engine in TRAINING_ENGINES}
        langs = [lang for lang in LANGUAGES if lang in have]
        if missing := [lang for lang in LANGUAGES if lang not in have]:
            log.warning("no voice reads %s: the translation sets leave it out", ", ".join(missing))
        if not langs:
            return []
        source = ParallelSource(self.seed, langs)
        train_pool, held_pool = self._voice_pools(TRAINING_ENGINES, english_only=False)
        jobs: list[Job] = []
        per_speaker = {"train": 4, "dev": 2, "test": 2}
        for split, n in zip(("train", "dev", "test"), p.translation):
            set_name = f"translate_{split}"
            for lang in langs if n else []:
                # each base voice's variant that reads this language (none: not in the pool)
                train = [[v for v in vs if v.language == lang] for vs in train_pool]
                held = [[v for v in vs if v.language == lang] for vs in held_pool]
                train, held = [v for v in train if v], [v for v in held if v]
                if split == "train":
                    pools = [train]
                else:
                    pools = [held, train] if held else [train]  # alternate: half held out
                if not any(pools):
                    continue
                n_spk = -(-n // per_speaker[split])
                spks = [self._translation_speaker(pools[i % len(pools)] or held or train, "tr") for i in range(n_spk)]
                speakers.setdefault(set_name, []).extend(spks)
                for i in range(n):
                    spk = spks[i % n_spk]
                    utt = self._fresh(lambda: source.parallel(lang))
                    jobs.append(self.job(set_name, spk, 0, utt, i // n_spk))
        if p.codeswitch:
            en_train, en_held = self._voice_pools(TRAINING_ENGINES, english_only=True)
            pool = en_held or en_train
            if pool:
                spks = [self._translation_speaker(pool, "cs") for _ in range(-(-p.codeswitch // 2))]
                speakers["codeswitch_test"] = spks
                for i in range(p.codeswitch):
                    utt = self._fresh(lambda: source.codeswitch(langs[i % len(langs)]))
                    jobs.append(self.job("codeswitch_test", spks[i % len(spks)], 0, utt, i // len(spks)))
        return jobs

    def _translation_speaker(self, pool: list[list[Voice]], prefix: str) -> Speaker:
        # every variant in the pool reads the one language: _speaker makes it the voice
        return self._speaker(self._pick_voice(pool), 1, prefix)

    def _fresh(self, make) -> Utterance:
        """A sentence no other set has (so no test sentence is also a training one)."""
        for _ in range(100):
            u = make()
            if u.text not in self.used_text:
                self.used_text.add(u.text)
                return u
        raise RuntimeError("parallel text source exhausted")


    def natural_jobs(self, speakers: dict[str, list[Speaker]]) -> list[Job]:
        """Natural English text (never the generator's), read as naturally as the engines can:
        retention sets by the engines never trained on (piper, flite; festival is slow and
        gets a small share), clean and by telephone; the replay pool by the training engines'
        native English voices (MBROLA us1-3, en1 and espeak's en-us)."""
        n_replay, n_dev, n_test = self.p.natural
        if not any(self.p.natural):
            return []
        from .natural import NoNaturalText, split_sentences

        try:
            pools = split_sentences()
        except NoNaturalText as e:
            log.warning("%s: the retention and replay sets are skipped", e)
            return []
        for pool in pools.values():
            self.rng.shuffle(pool)
        held = [v for v in self.voices if v.engine in ("piper", "flite")]
        held += [v for v in self.voices if v.engine == "festival"][:1]
        native = [v for v in self.voices if v.engine == "mbrola" and v.language == "en"]
        native += [v for v in self.voices if v.engine == "espeak" and v.name.startswith("en-us+")][:4]
        jobs: list[Job] = []
        for set_name, pool_name, n, voices in (("replay_train", "replay", n_replay, native),
                                               ("retention_dev", "dev", n_dev, held),
                                               ("retention_test", "test", n_test, held)):
            if not n or not voices:
                continue
            spks = [self._natural_speaker(v, "nat") for v in voices]
            speakers[set_name] = spks
            for i, text in enumerate(pools[pool_name][:n]):
                # festival costs ~20x the others per call: every 8th utterance at most
                spk = spks[i % len(spks)]
                if spk.voice.engine == "festival" and i % 8:
                    spk = spks[(i + 1) % len(spks)]
                job = self.job(set_name, spk, 0, Utterance(text=text, kind="natural"), i)
                jobs.append(job)
                if set_name in TELEPHONE_COPIES:  # the same recording through a telephone line
                    jobs.append(dataclasses.replace(job, set_name=TELEPHONE_COPIES[set_name], telephone=True))
        return jobs

    def _natural_speaker(self, voice: Voice, prefix: str) -> Speaker:
        self.n_spk += 1
        return Speaker(id=f"{prefix}{self.n_spk:04d}", voice=voice, languages=("en",),
                       profile=chan.natural_profile(self.rng), sessions=[chan.clean_channel(self.rng)])


# --- writing manifests ------------------------------------------------------------------------

def _supervision(res: Result, seg: dict, spk: Speaker, sess: int, utt: Utterance, idx: int) -> SupervisionSegment:
    sup_id = res.job.rec_id.replace("/", "_") + (f"-{idx:02d}" if res.job.long else "")
    return SupervisionSegment(
        id=sup_id, recording_id=res.job.rec_id, start=round(seg["start"], 4),
        duration=round(seg["duration"], 4), channel=0, text=utt.text, language=utt.language,
        speaker=spk.id, gender=spk.voice.gender,
        custom={"session": f"{spk.id}-s{sess}", "intent": utt.intent, "slots": utt.slots or None,
                "phonemes": seg["phonemes"], "phoneme_times": seg.get("phoneme_times"), "voice": spk.voice.id, "engine": spk.voice.engine,
                "kind": utt.kind,
                # only where set: every other set's manifests stay as they were
                **({"translation": utt.translation} if utt.translation is not None else {}),
                **({"codeswitch_language": utt.codeswitch_language} if utt.codeswitch_language else {})})


def write_set(out_dir: Path, set_name: str, results: list[Result]) -> CutSet:
    recordings, sups = [], []
    for res in results:
        path = Path("audio") / set_name / f"{res.job.rec_id}.wav"
        recordings.append(Recording.from_dict(dict(
            id=res.job.rec_id, sources=[dict(type="file", channels=[0], source=str(path))],
            sampling_rate=SAMPLE_RATE, num_samples=res.num_samples,
            duration=res.num_samples / SAMPLE_RATE, channel_ids=[0])))
        for seg in res.segments:
            spk, sess, utt = res.job.turns[seg["turn"]]
            sups.append(_supervision(res, seg, spk, sess, utt, seg["turn"]))
    rec_set, sup_set = RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(sups)
    by_rec: dict[str, list[SupervisionSegment]] = {}
    for sup in sups:
        by_rec.setdefault(sup.recording_id, []).append(sup)
    # One cut per recording, with the recording's id: trial lists and readers refer to it.
    cuts = CutSet.from_cuts(MonoCut(id=r.id, start=0.0, duration=r.duration, channel=0, recording=r,
                                    supervisions=by_rec.get(r.id, [])) for r in recordings)
    man = out_dir / MANIFEST_DIR
    man.mkdir(parents=True, exist_ok=True)
    rec_set.to_file(man / f"{set_name}_recordings.jsonl.gz")
    sup_set.to_file(man / f"{set_name}_supervisions.jsonl.gz")
    cuts.to_file(man / f"{set_name}_cuts.jsonl.gz")
    _write_nemo(out_dir, set_name, results)
    if results and results[0].job.long:
        _write_rttm(out_dir / "rttm" / f"{set_name}.rttm", sups)
    return cuts


def _write_nemo(out_dir: Path, set_name: str, results: list[Result]) -> None:
    import json

    if not results or results[0].job.long:
        return
    path = out_dir / "nemo" / f"{set_name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for res in results:
            spk, _, utt = res.job.turns[0]
            f.write(json.dumps({"audio_filepath": f"../audio/{set_name}/{res.job.rec_id}.wav",
                                "duration": round(res.num_samples / SAMPLE_RATE, 4), "text": utt.text,
                                "label": spk.id, "lang": utt.language}) + "\n")


def _write_rttm(path: Path, sups: list[SupervisionSegment]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for s in sups:
            f.write(f"SPEAKER {s.recording_id} 1 {s.start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n")


def make_trials(cuts: CutSet, per_utt: int, rng: np.random.Generator) -> list[Trial]:
    """Targets across sessions of one speaker; non-targets of the same gender, half of them
    from a speaker built on the same base voice (another profile) where one exists."""
    info = [(c.id, c.supervisions[0].speaker, c.supervisions[0].gender, c.supervisions[0].custom["session"],
             c.supervisions[0].custom["voice"]) for c in cuts]
    by_spk: dict[str, list] = {}
    for row in info:
        by_spk.setdefault(row[1], []).append(row)
    trials = []
    for cid, spk, gender, sess, voice in info:
        other_sess = [r for r in by_spk[spk] if r[3] != sess]
        same_gender = [r for r in info if r[1] != spk and r[2] == gender]
        same_voice = [r for r in same_gender if r[4] == voice]
        for k in range(per_utt // 2):
            if other_sess:
                trials.append(Trial(True, cid, other_sess[int(rng.integers(len(other_sess)))][0]))
            pool = same_voice if (same_voice and k % 2 == 0) else same_gender
            if pool:
                trials.append(Trial(False, cid, pool[int(rng.integers(len(pool)))][0]))
    # Sampling may repeat a pair, in either order (A-B and B-A score the same); keep the first.
    seen: set[frozenset] = set()
    unique = []
    for t in trials:
        if (pair := frozenset((t.enrol, t.test))) not in seen:
            seen.add(pair)
            unique.append(t)
    return unique


# --- entry point ------------------------------------------------------------------------------

def synthesize(out_dir: str | Path, preset: str | Preset = "demo", seed: int = 0,
               workers: int | None = None, progress: bool = True) -> dict:
    """Generate a corpus; returns the summary also written to corpus.json."""
    t0 = time.time()
    out_dir = Path(out_dir)
    p = PRESETS[preset] if isinstance(preset, str) else preset
    voices = available_voices()
    for note in report_missing():
        log.warning(note)
    if not any(v.engine in TRAINING_ENGINES for v in voices):
        raise RuntimeError("no training voices: espeak-ng is not installed (run scripts/install_engines.sh)")
    if not any(v.engine in OOD_ENGINES for v in voices):
        log.warning("no OOD engine (flite, festival, piper) installed: the ood_test set is skipped")
    jobs, speakers = Planner(p, seed, voices).plan()
    workers = workers or max(1, os.cpu_count() or 1)
    results: list[Result] = []
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        it = pool.imap(_worker, [(j, out_dir) for j in jobs], chunksize=4)
        for res in tqdm(it, total=len(jobs), desc="synth", unit="file", disable=not progress):
            results.append(res)
    failed = [r.error for r in results if r.error]
    if len(failed) > 0.02 * len(jobs):
        raise RuntimeError(f"{len(failed)} of {len(jobs)} files failed, e.g. {failed[:3]}")
    for err in failed:
        log.warning("skipped %s", err)
    by_set: dict[str, list[Result]] = {}
    for r in results:
        if not r.error:
            by_set.setdefault(r.job.set_name, []).append(r)
    summary = {"preset": preset if isinstance(preset, str) else "custom", "seed": seed,
               "voices": sorted(v.id + "/" + v.language for v in voices), "sets": {},
               "skipped_files": len(failed)}
    trial_rng = np.random.default_rng(seed + 1)
    from ..stats import set_stats
    from ..baseline import mfcc_baseline_eer

    for name in sorted(by_set):
        cuts = write_set(out_dir, name, by_set[name])
        summary["sets"][name] = set_stats(cuts)
        if name.startswith(("speaker_dev", "speaker_test", "ood_test")):
            trials = make_trials(cuts, p.trials_per_utt, trial_rng)
            write_trials(out_dir / "trials" / f"{name}.txt", trials)
            summary["sets"][name]["trials"] = len(trials)
            summary["sets"][name]["mfcc_baseline_eer"] = mfcc_baseline_eer(
                cuts.with_recording_path_prefix(str(out_dir)), trials)
    summary["seconds"] = round(time.time() - t0, 1)
    write_info(out_dir, summary)
    return summary
