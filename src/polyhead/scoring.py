"""Adaptive symmetric score normalisation (AS-norm) of cosine speaker scores.

A raw cosine score means different things on different channels: embeddings of a new channel
(a telephone line, a voice the model never heard) sit closer to everything, so every score
rises and a threshold picked on the dev set accepts impostors. AS-norm scores each side of a
trial against a cohort of training speakers and measures the trial in units of that side's
own score distribution:

    s_norm(e, t) = 1/2 [ (s - mu_e) / sd_e  +  (s - mu_t) / sd_t ]

where ``s`` is the cosine score of enrolment ``e`` and test ``t``, and ``mu_x``, ``sd_x`` are
the mean and standard deviation of the ``top_k`` highest cosine scores of ``x`` against the
cohort (the cohort speakers most like ``x``: Matejka et al., Interspeech 2017).

What it cancels exactly: a positive affine change of every score a trial's normalisation
sees (the trial score and both sides' cohort scores: ``a*s + b``, ``a > 0``); the top-k
choice keeps its order, so the normalised score, and every decision at one threshold, stay
the same. A shift that moves only the trial's side of the scores (a channel the cohort was
never recorded on) is reduced, not removed (tests/test_snorm.py measures both).

The cohort is one unit embedding per training speaker (the mean of a few of its utterances),
computed by ``polyhead evaluate`` when it calibrates and saved as COHORT_FILE next to
calibration.json, with ``verify_threshold_snorm`` picked on the dev trials' normalised scores.
Pure numpy: no model here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runs import COHORT_FILE

DEFAULT_TOP_K = 50  # cohort scores per side (capped at the cohort's size)
MIN_SD = 1e-4  # a side whose cohort scores are all equal is not divided by zero


def unit_rows(x) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float64)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def top_k_stats(cohort_scores, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) of the ``top_k`` highest scores of each row of
    ``cohort_scores`` [n, cohort]; ``top_k`` is capped at the cohort's size."""
    s = np.atleast_2d(np.asarray(cohort_scores, dtype=np.float64))
    k = max(1, min(int(top_k), s.shape[1]))
    top = -np.partition(-s, k - 1, axis=1)[:, :k]
    return top.mean(axis=1), np.maximum(top.std(axis=1), MIN_SD)


def as_norm_scores(scores, enrol_cohort_scores, test_cohort_scores, top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """AS-norm at the score level: raw trial ``scores`` [n] with each trial's enrolment and
    test scores against the cohort ([n, cohort] each, or [cohort] for one trial)."""
    mu_e, sd_e = top_k_stats(enrol_cohort_scores, top_k)
    mu_t, sd_t = top_k_stats(test_cohort_scores, top_k)
    return as_norm(scores, (mu_e, sd_e), (mu_t, sd_t))


def as_norm(scores, enrol_stats, test_stats) -> np.ndarray:
    """``scores`` [n] normalised with each side's (mean, sd) of ``top_k_stats``."""
    s = np.asarray(scores, dtype=np.float64)
    (mu_e, sd_e), (mu_t, sd_t) = enrol_stats, test_stats
    return 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)


def speaker_means(embeddings: dict[str, np.ndarray], speaker_of: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """(speaker names, [speakers, dim] unit mean embeddings) from utterance embeddings by id
    and each id's speaker: the cohort."""
    groups: dict[str, list[np.ndarray]] = {}
    for uid in sorted(embeddings):
        groups.setdefault(speaker_of[uid], []).append(unit_rows(embeddings[uid])[0])
    names = sorted(groups)
    if not names:
        return [], np.zeros((0, 0), dtype=np.float32)
    return names, unit_rows(np.stack([np.mean(groups[n], axis=0) for n in names])).astype(np.float32)


def false_accept_rate(scores, labels, threshold: float) -> float | None:
    """Share of non-target trials (label 0) scored at or above ``threshold``."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    return float((s[y == 0] >= threshold).mean()) if (y == 0).any() else None


@dataclass
class ScoreNorm:
    """A cohort ([speakers, dim] unit rows) and how it is used: ``top_k`` cohort scores per
    side, and the decision threshold on normalised scores (None until calibrated)."""

    cohort: np.ndarray
    top_k: int = DEFAULT_TOP_K
    threshold: float | None = None
    speakers: tuple[str, ...] = ()

    def __post_init__(self):
        self.cohort = unit_rows(self.cohort)
        if len(self.cohort) < 2:
            raise ValueError(f"an s-norm cohort needs at least 2 speakers; got {len(self.cohort)}")

    def stats(self, embeddings) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) of each embedding's top-k cohort scores."""
        return top_k_stats(unit_rows(embeddings) @ self.cohort.T, self.top_k)

    def normalise(self, scores, enrol_stats, test_stats) -> np.ndarray:
        return as_norm(scores, enrol_stats, test_stats)

    def pair_scores(self, enrol, test) -> tuple[np.ndarray, np.ndarray]:
        """(raw cosine, normalised) scores of paired rows ``enrol[i]``, ``test[i]``."""
        e, t = unit_rows(enrol), unit_rows(test)
        raw = np.einsum("ij,ij->i", e, t)
        return raw, as_norm(raw, self.stats(e), self.stats(t))

    def score(self, enrol, test) -> tuple[float, float]:
        """(raw cosine, normalised) score of one trial."""
        raw, norm = self.pair_scores(enrol, test)
        return float(raw[0]), float(norm[0])

    def trial_scores(self, embeddings: dict[str, np.ndarray], trials) -> tuple[np.ndarray, np.ndarray]:
        """(raw, normalised) scores of a trial list (``.enrol``, ``.test`` ids) over
        embeddings by id; each embedding's cohort statistics are computed once."""
        ids = sorted({t.enrol for t in trials} | {t.test for t in trials})
        row = {k: i for i, k in enumerate(ids)}
        emb = unit_rows(np.stack([embeddings[k] for k in ids]))
        mu, sd = self.stats(emb)
        a = np.array([row[t.enrol] for t in trials], dtype=int)
        b = np.array([row[t.test] for t in trials], dtype=int)
        raw = np.einsum("ij,ij->i", emb[a], emb[b])
        return raw, as_norm(raw, (mu[a], sd[a]), (mu[b], sd[b]))

    # ------------------------------------------------------------------ files

    def save(self, folder: str | Path) -> Path:
        """COHORT_FILE in ``folder``: the cohort as float32, top_k and speakers as metadata
        (the threshold lives in calibration.json)."""
        from safetensors.numpy import save

        path = Path(folder) / COHORT_FILE
        meta = {"top_k": str(self.top_k), "speakers": json.dumps(list(self.speakers))}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(save({"cohort": np.ascontiguousarray(self.cohort, dtype=np.float32)}, metadata=meta))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path, calibration: dict | None = None) -> "ScoreNorm | None":
        """The cohort saved in ``folder`` with the threshold from ``calibration``
        (``verify_threshold_snorm``); None where there is no cohort file or no threshold."""
        from safetensors import safe_open

        path = Path(folder) / COHORT_FILE
        threshold = (calibration or {}).get("verify_threshold_snorm")
        if not path.is_file() or threshold is None:
            return None
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            cohort = f.get_tensor("cohort")
        return cls(cohort, int(meta.get("top_k", DEFAULT_TOP_K)), float(threshold),
                   tuple(json.loads(meta.get("speakers", "[]"))))
