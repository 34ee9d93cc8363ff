"""``classifier``: one label per utterance (language, intent, gender), scored by accuracy on
the test utterances that carry a trained label; a long recording is classified by the mean
log-probabilities of its windows."""

from __future__ import annotations

import torch

from .. import metrics
from ..data.corpus import label
from ..model.heads import ClassifierHead
from .base import TASK_KINDS, TaskKind, predict_windows

TOP_LABELS = 5  # probabilities an analysis lists


@TASK_KINDS.register("classifier")
class ClassifierKind(TaskKind):
    head_class = ClassifierHead
    targets = ("language", "intent", "gender")
    outputs = (("logits", "logits"),)
    answer_rank = 20

    def evaluate(self, model, corpus, set_name: str, cuts, limit=None, **calibration) -> dict[str, dict]:
        res = evaluate_classifier(model, list(cuts)[:limit] if limit else cuts, self.name)
        return {self.name: res} if res else {}

    def answer(self, out: dict, i: int) -> dict:
        probs = out["logits"][i].softmax(-1).tolist()
        ranked = sorted(zip(self.labels, probs), key=lambda kv: -kv[1])
        return {self.target: ranked[0][0],
                f"{self.target}_probs": {k: round(v, 4) for k, v in ranked[:TOP_LABELS]}}


def evaluate_classifier(model, cuts, task: str) -> dict:
    target = model.config.tasks[task].target
    vocab = model.config.vocab[target]
    cuts = [c for c in cuts if label(c, target) in set(vocab)]
    if not cuts:
        return {}
    refs, hyps = [], []
    for cut, pieces in predict_windows(model, cuts, task):
        refs.append(label(cut, target))
        hyps.append(vocab[int(torch.stack(pieces).float().log_softmax(-1).mean(0).argmax())])
    return {"accuracy": metrics.accuracy(refs, hyps), "n": len(refs)}
