"""What bench/latency.py and bench/deploy.py share: test audio loaded once, and timing.

Audio is decoded before any clock starts, so timings cover features, the model and
decoding (what `Polyhead.analyze` does), not reading files.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from polyhead.audio import SAMPLE_RATE, to_model_audio
from polyhead.data.corpus import load_set

REPEATS = 5  # timed runs per clip where the median is reported


def load_cut(cut) -> np.ndarray:
    audio = cut.load_audio()
    return to_model_audio(audio.T if audio.ndim == 2 else audio, cut.sampling_rate, name=cut.id)


def load_clips(corpus: str | Path, set_name: str, limit: int | None = None,
               where=lambda cut: True) -> list[tuple[object, np.ndarray]]:
    """(cut, 16 kHz samples) for the first ``limit`` cuts of a set that pass ``where``."""
    cuts = [c for c in load_set(corpus, set_name) if where(c)][:limit]
    return [(c, load_cut(c)) for c in cuts]


def seconds(samples: np.ndarray) -> float:
    return len(samples) / SAMPLE_RATE


def timed(fn, *args):
    """(result, wall seconds) of one call."""
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def median_time(fn, *args, repeats: int = REPEATS) -> float:
    """Median wall seconds of ``repeats`` calls after one warm-up call."""
    fn(*args)
    return statistics.median(timed(fn, *args)[1] for _ in range(repeats))


def latency_summary(latencies: list[float], durations: list[float]) -> dict:
    """Real-time factor (processing seconds per audio second) and per-utterance latency."""
    ms = np.array(latencies) * 1000.0
    return {"utterances": len(latencies), "audio_s": round(sum(durations), 2),
            "rtf": round(sum(latencies) / sum(durations), 4),
            "latency_ms_mean": round(float(ms.mean()), 1), "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
            "latency_ms_p90": round(float(np.percentile(ms, 90)), 1)}
