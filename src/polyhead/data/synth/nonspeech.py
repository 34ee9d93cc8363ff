"""Sound that is not speech, for a voice-activity head to learn to ignore: a muted input
(exact digital zeros), a quiet line (white, pink or brown noise), and music-like tones (a
test tone, or chords of harmonic notes with plucked envelopes).

The synthesiser splices one stretch of each kind into every VAD recording (``build.py``);
a frame task's ``nonspeech`` option adds whole clips of them to its training cuts, made in
memory when training starts (``clips``), so a corpus of real recordings gets them too.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording

from ...audio import SAMPLE_RATE
from . import channel as chan

KINDS = ("zeros", "noise", "tones")
NOISE_DBFS = (-60.0, -45.0)  # RMS of a quiet line inside a VAD recording
CLIP_NOISE_DBFS = (-75.0, -35.0)  # wider for whole clips: from a muted line to an open one
TONE_PEAK_DBFS = (-30.0, -6.0)
STRETCH_SECONDS = (0.5, 4.0)  # one kind lasts this long inside a clip


def stretch(kind: str, n: int, rng: np.random.Generator, noise_dbfs: tuple[float, float] = NOISE_DBFS) -> np.ndarray:
    """``n`` samples of one kind of non-speech."""
    if kind == "zeros":
        return np.zeros(n, np.float32)
    if kind == "noise":
        level = 10 ** (rng.uniform(*noise_dbfs) / 20)
        return (chan.coloured_noise(rng, n, float(rng.choice([0.0, 1.0, 2.0]))) * level).astype(np.float32)
    t = np.arange(n) / SAMPLE_RATE
    if rng.random() < 0.25:  # a test tone
        x = np.sin(2 * np.pi * float(rng.choice([440.0, 1000.0, rng.uniform(200.0, 3000.0)])) * t)
    else:  # chords: 2-4 notes a few semitones apart, 1-5 harmonics each, a new chord every 0.2-0.8 s
        x = np.zeros(n)
        a = 0
        while a < n:
            b = min(n, a + int(rng.uniform(0.2, 0.8) * SAMPLE_RATE))
            root = int(rng.integers(45, 76))  # MIDI note
            above = rng.choice([3, 4, 7, 10, 12], size=int(rng.integers(1, 4)), replace=False)  # semitones
            notes = [root] + [root + int(k) for k in above]
            u = t[: b - a]
            env = (1 - np.exp(-u / 0.005)) * np.exp(-u / rng.uniform(0.15, 0.8))
            for note in notes:
                f0 = 440.0 * 2 ** ((note - 69) / 12)
                for h in range(1, int(rng.integers(1, 6)) + 1):
                    if h * f0 < SAMPLE_RATE / 2 - 500:
                        x[a:b] += np.sin(2 * np.pi * h * f0 * u + rng.uniform(0, 2 * np.pi)) * env / h
            a = b
    return chan.normalise_peak(x.astype(np.float32), float(rng.uniform(*TONE_PEAK_DBFS)))


def clip(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A clip of ``seconds`` made of stretches of random kinds, one after the other."""
    n, pieces = int(seconds * SAMPLE_RATE), []
    while sum(map(len, pieces)) < n:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        pieces.append(stretch(kind, int(rng.uniform(*STRETCH_SECONDS) * SAMPLE_RATE), rng, CLIP_NOISE_DBFS))
    return np.concatenate(pieces)[:n]


def clips(count: int, seconds: float, seed: int) -> CutSet:
    """``count`` non-speech clips as cuts with no supervision (every frame: not speech), their
    audio held in memory as 16-bit WAV (a quiet line keeps tens of levels at -60 dBFS)."""
    rng = np.random.default_rng(seed)
    cuts = []
    for i in range(count):
        buf = io.BytesIO()
        sf.write(buf, clip(seconds, rng), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        cuts.append(Recording.from_bytes(buf.getvalue(), f"nonspeech_{seed}_{i:04d}").to_cut())
    return CutSet.from_cuts(cuts)
