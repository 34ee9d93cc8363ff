"""Speaker embeddings of recordings of any length (verify, enrol, identify: CLI and service).

An encoder with a fixed window (Whisper: 30 s) cannot embed a longer recording in one pass;
``Polyhead.embed`` raises a bare ValueError then. Here a recording longer than the window is
cut into equal windows of at most the window's length (a 40 s file: two of 20 s), each window
is embedded, and the unit embeddings are averaged, weighted by the windows' lengths, and
renormalised: the mean of a speaker's embeddings, as the registry keeps for an enrolled speaker.
So a longer recording gives a steadier embedding rather than an error; recordings that fit one
window are embedded exactly as ``Polyhead.embed`` does. An encoder without a window of its own
is given one of MAX_WINDOW_S (60 s), so memory stays bounded. ``check``, when given, is called before
each window and may raise to stop (the service passes its request's deadline).

Where `polyhead evaluate` saved an AS-norm cohort with the run (polyhead/scoring.py), ``verify`` and
``identify`` report the normalised score beside the raw cosine and decide on it. That cohort is
the training speakers; on a new channel a cohort heard through that channel is what keeps the
threshold's meaning (docs/results.md: the out-of-domain speaker benchmark). ``channel_cohort``
makes one from recordings of other people on the target channel (`polyhead cohort`), and
``use_cohort`` puts it in place of the run's, with the run's calibrated threshold.
"""

from __future__ import annotations

import math

import numpy as np

from ..audio import SAMPLE_RATE, load_audio

# The longest window embedded in one pass by an encoder without a window of its own (a
# conformer): attention's memory grows with the square of the length, so an hour in one pass
# would not fit in memory (10 minutes of the tiny test model: 4 GB). Up to this, as before.
MAX_WINDOW_S = 60.0


def embed(model, audio, check=None) -> np.ndarray:
    """Unit-length speaker embedding of ``audio`` (a path, bytes, or 16 kHz mono samples)."""
    samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
    window = min(model.max_seconds, MAX_WINDOW_S) * SAMPLE_RATE
    if check is not None:
        check()
    if len(samples) <= window:
        return model.embed(samples, SAMPLE_RATE)
    n = math.ceil(len(samples) / int(window))
    bounds = np.linspace(0, len(samples), n + 1).round().astype(int)
    total = np.zeros(0)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if check is not None:
            check()
        e = model.embed(samples[a:b], SAMPLE_RATE).astype(np.float64) * (b - a)
        total = e if not total.size else total + e
    return (total / (np.linalg.norm(total) + 1e-12)).astype(np.float32)


CHANNEL_COHORT_TOP_K = 20  # cohort scores per side: the benchmark's own-set cohort used 20 of ~140 recordings
MIN_COHORT = 10  # fewer recordings than this give no steady cohort statistics


def _snorm_threshold(model) -> float:
    if getattr(model, "snorm", None) is None:
        raise ValueError("this model has no calibrated AS-norm threshold: run `polyhead evaluate` on it first")
    return model.snorm.threshold


def channel_cohort(model, files, top_k: int = CHANNEL_COHORT_TOP_K):
    """An AS-norm cohort (scoring.ScoreNorm) of one entry per recording in ``files``: people
    who are not the ones to be verified, recorded on the channel where verification happens.
    The threshold is the run's calibrated AS-norm threshold: normalised scores are measured
    in units of the cohort's own scores, which is what lets one threshold serve a new channel."""
    from ..scoring import ScoreNorm

    threshold = _snorm_threshold(model)
    files = [str(f) for f in files]
    if len(files) < MIN_COHORT:
        raise ValueError(f"a channel cohort needs at least {MIN_COHORT} recordings of other people; got {len(files)}")
    emb = np.stack([embed(model, f) for f in files])
    return ScoreNorm(emb, top_k=top_k, threshold=threshold, speakers=tuple(files))


def use_cohort(model, folder) -> None:
    """Verify and identify with the cohort saved in ``folder`` (``polyhead cohort``), at the
    model's calibrated AS-norm threshold."""
    from ..scoring import ScoreNorm

    norm = ScoreNorm.load(folder, {"verify_threshold_snorm": _snorm_threshold(model)})
    if norm is None:
        raise FileNotFoundError(f"{folder}: no cohort file (make one with `polyhead cohort`)")
    model.snorm = norm


def verify(model, a, b, check=None) -> dict:
    """``Polyhead.verify`` for recordings of any length: the raw cosine ``score`` and the
    decision at the calibrated ``threshold``; where the run has an AS-norm cohort
    (``model.snorm``, see snorm.py) also ``score_snorm`` and ``threshold_snorm``, and the
    decision is taken on those (``decided_on``: "snorm" or "raw")."""
    e, t = embed(model, a, check), embed(model, b, check)
    score = float(e @ t)
    norm = getattr(model, "snorm", None)
    if norm is None:
        return {"score": round(score, 4), "same_speaker": score >= model.threshold,
                "threshold": round(model.threshold, 4), "decided_on": "raw"}
    _, normed = norm.score(e, t)
    return {"score": round(score, 4), "score_snorm": round(normed, 4), "same_speaker": normed >= norm.threshold,
            "threshold": round(model.threshold, 4), "threshold_snorm": round(norm.threshold, 4),
            "decided_on": "snorm"}


SHORTLIST = 100  # enrolled speakers, best by raw cosine, that identify normalises


def identify(model, registry, embedding: np.ndarray, top_k: int = 3) -> dict:
    """``SpeakerRegistry.identify`` with the model's calibration: the raw cosine ranking at
    the raw threshold, or, where the run has an AS-norm cohort, the SHORTLIST enrolled
    speakers of best raw score normalised (the query's and each enrolled mean's cohort
    statistics), ranked and decided at ``threshold_snorm``, each raw score beside it."""
    from .registry import UNKNOWN

    norm = getattr(model, "snorm", None)
    if norm is None:
        return {**registry.identify(embedding, model.threshold, top_k), "decided_on": "raw"}
    shortlist = registry.identify(embedding, float("inf"), max(top_k, SHORTLIST))["candidates"]
    if not shortlist:
        return {"speaker": UNKNOWN, "score": None, "score_snorm": None, "candidates": [], "decided_on": "snorm"}
    names = [c["speaker"] for c in shortlist]
    enrolled = registry.means(names, len(embedding))  # the shortlist's rows only (speakers(): all 1M)
    query = np.repeat(np.asarray(embedding, dtype=np.float64)[None], len(names), axis=0)
    raw, normed = norm.pair_scores(enrolled, query)
    order = np.argsort(-normed, kind="stable")[:top_k]
    best = order[0]
    return {"speaker": names[best] if normed[best] >= norm.threshold else UNKNOWN,
            "score": float(raw[best]), "score_snorm": float(normed[best]),
            "threshold_snorm": round(norm.threshold, 4), "decided_on": "snorm",
            "candidates": [{"speaker": names[i], "score": float(raw[i]), "score_snorm": float(normed[i])}
                           for i in order]}
