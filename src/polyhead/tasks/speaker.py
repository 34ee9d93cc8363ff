"""``speaker``: a pooled embedding trained with AAM softmax over the training speakers;
scored by EER and minDCF (P_target 0.01 and 0.05) of cosine scores of full-utterance
embeddings on trial lists, next to the untrained MFCC baseline's EER."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import metrics
from ..data.corpus import label, load_set, read_info, read_trials, trials_path
from ..model.heads import SpeakerHead
from ..scoring import false_accept_rate
from .base import TASK_KINDS, TaskKind, predict

# per-trial arrays that evaluate_speaker returns for calibration, not for a results table
TRIAL_ARRAYS = ("scores", "labels", "scores_snorm")


@TASK_KINDS.register("speaker")
class SpeakerKind(TaskKind):
    head_class = SpeakerHead
    targets = ("speaker",)
    outputs = (("embedding", "embedding"),)
    embeds = True
    answer_rank = 10

    def check_cut(self, cut, vocab: dict) -> str | None:
        if label(cut, "speaker") not in vocab["speaker"]:
            return "speaker not in the training vocabulary"
        return None

    def evaluate(self, model, corpus, set_name: str, cuts, limit=None, snorm=None, verify_threshold=None,
                 **calibration) -> dict[str, dict]:
        if not trials_path(corpus, set_name).is_file():
            return {}
        res = evaluate_speaker(model, corpus, set_name, self.name, snorm, verify_threshold)
        return {self.name: {k: v for k, v in res.items() if k not in TRIAL_ARRAYS}}

    def dev_metrics(self, model, corpus, set_name: str, limit: int) -> dict | None:
        r = evaluate_speaker(model, corpus, set_name, self.name)
        return {"eer": r["eer"]} if r["eer"] is not None else None

    def answer(self, out: dict, i: int) -> dict:
        return {"speaker_embedding": out["embedding"][i].tolist()}


def embeddings(model, cuts, task: str) -> dict[str, np.ndarray]:
    out = {}
    for cut, o in predict(model, cuts, [task]):
        e = o[task]["embedding"].float().cpu().numpy()
        out[cut.id] = e / (np.linalg.norm(e) + 1e-9)
    return out


def evaluate_trials(emb: dict[str, np.ndarray], trials) -> dict:
    scores = np.array([float(emb[t.enrol] @ emb[t.test]) for t in trials])
    labels = np.array([t.target for t in trials], dtype=int)
    eer, thr = metrics.eer(scores, labels)
    return {"eer": eer, "threshold": thr, "trials": len(trials),
            "min_dcf_0.01": metrics.min_dcf(scores, labels, p_target=0.01)[0],
            "min_dcf_0.05": metrics.min_dcf(scores, labels, p_target=0.05)[0],
            "scores": scores, "labels": labels}


def evaluate_speaker(model, corpus: str | Path, set_name: str, task: str, snorm=None,
                     threshold: float | None = None) -> dict:
    """EER and minDCF of a trial list's cosine scores. With ``snorm`` (an
    ``scoring.ScoreNorm``) also those of the AS-normalised scores (``*_snorm``,
    ``scores_snorm``); ``far`` / ``far_snorm``: the share of non-target trials accepted at
    ``threshold`` / at the cohort's calibrated threshold, where those are given."""
    cuts = load_set(corpus, set_name)
    trials = read_trials(trials_path(corpus, set_name), known_ids={c.id for c in cuts})
    if len({t.target for t in trials}) < 2:
        return {"eer": None, "trials": len(trials), "note": "trial list lacks targets or non-targets"}
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    emb = embeddings(model, [c for c in cuts if c.id in needed], task)
    res = evaluate_trials(emb, trials)
    if threshold is not None:
        res["far"] = false_accept_rate(res["scores"], res["labels"], threshold)
    if snorm is not None:
        _, normed = snorm.trial_scores(emb, trials)
        eer, thr = metrics.eer(normed, res["labels"])
        res.update(eer_snorm=eer, threshold_snorm=thr, scores_snorm=normed,
                   **{"min_dcf_0.01_snorm": metrics.min_dcf(normed, res["labels"], p_target=0.01)[0]})
        if snorm.threshold is not None:
            res["far_snorm"] = false_accept_rate(normed, res["labels"], snorm.threshold)
    base = read_info(corpus).get("sets", {}).get(set_name, {}).get("mfcc_baseline_eer")
    res["mfcc_baseline_eer"] = base
    return res
