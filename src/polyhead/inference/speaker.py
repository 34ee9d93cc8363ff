"""Speaker embeddings of recordings of any length (verify, enrol, identify: CLI and service).

An encoder with a fixed window (Whisper: 30 s) cannot embed a longer recording in one pass;
``Polyhead.embed`` raises a bare ValueError then. Here a recording longer than the window is
cut into equal windows of at most the window's length (a 40 s file: two of 20 s), each window
is embedded, and the unit embeddings are averaged, weighted by the windows' lengths, and
renormalised: the mean of a speaker's embeddings, as the registry keeps for an enrolled speaker.
So a longer recording gives a steadier embedding rather than an error; recordings that fit one
window are embedded exactly as ``Polyhead.embed`` does.
"""

from __future__ import annotations

import math

import numpy as np

from ..audio import SAMPLE_RATE, load_audio


def embed(model, audio) -> np.ndarray:
    """Unit-length speaker embedding of ``audio`` (a path, bytes, or 16 kHz mono samples)."""
    samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
    window = model.max_seconds * SAMPLE_RATE
    if len(samples) <= window:
        return model.embed(samples, SAMPLE_RATE)
    n = math.ceil(len(samples) / int(window))
    bounds = np.linspace(0, len(samples), n + 1).round().astype(int)
    total = np.zeros(0)
    for a, b in zip(bounds[:-1], bounds[1:]):
        e = model.embed(samples[a:b], SAMPLE_RATE).astype(np.float64) * (b - a)
        total = e if not total.size else total + e
    return (total / (np.linalg.norm(total) + 1e-12)).astype(np.float32)


def verify(model, a, b) -> dict:
    """``Polyhead.verify`` for recordings of any length."""
    score = float(embed(model, a) @ embed(model, b))
    return {"score": round(score, 4), "same_speaker": score >= model.threshold,
            "threshold": round(model.threshold, 4)}
