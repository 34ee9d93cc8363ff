"""`polyhead evaluate`: every task on the test sets, in-distribution and OOD side by side.

Each task's kind (``tasks/``) says what it scores on which set: WER / CER for the speech
heads, EER and minDCF on trial lists for speaker heads, accuracy for classifiers, frame F1
for VAD, and a Whisper decoder's other tasks under "<task>/<decoder task>".
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..data.corpus import available_sets, load_set
from ..tasks import task_kinds

log = logging.getLogger(__name__)
# retention: natural English the generator never wrote (clean, telephone) next to every
# in-domain figure, so fitting the generator cannot pass for learning speech
DEFAULT_SETS = ("speech_test", "speaker_test", "ood_test", "retention_test", "retention_tel_test", "vad_test")


def evaluate_model(model, corpus: str | Path, sets: list[str] | None = None, limit: int | None = None,
                   snorm=None, verify_threshold: float | None = None, decoding=None) -> dict:
    """Every task on every applicable set of the corpus. Returns nested JSON-able results.
    ``snorm``, ``verify_threshold``: the calibrated cohort and raw threshold (see
    ``tasks.speaker.evaluate_speaker``), so trial lists also report normalised EERs and
    false accepts. ``decoding``: the decoder's ``DecodingOptions`` for the transcripts
    (default its own)."""
    have = set(available_sets(corpus))
    kinds = task_kinds(model.config)
    default = DEFAULT_SETS + tuple(s for k in kinds for s in k.extra_eval_sets() if s not in DEFAULT_SETS)
    sets = sets or [s for s in dict.fromkeys(default) if s in have]
    results: dict[str, dict] = {}
    for set_name in sets:
        cuts = load_set(corpus, set_name)
        r = {}
        for kind in kinds:
            r.update(kind.evaluate(model, corpus, set_name, cuts, limit,
                                   snorm=snorm, verify_threshold=verify_threshold, decoding=decoding))
        if r:
            results[set_name] = r
    return results


def criterion(results: dict, weights: dict[str, float]) -> float:
    """The papers' model-selection score, e.g. 1/4 WER + 3/4 EER (lower is better)."""
    wer = next((v["wer"] for s in results.values() for v in s.values() if v.get("wer") is not None), None)
    eer = next((v["eer"] for s in results.values() for v in s.values() if v.get("eer") is not None), None)
    total = 0.0
    for name, value in (("wer", wer), ("eer", eer)):
        if value is not None and name in weights:
            total += weights[name] * min(value, 1.0)
    return total
