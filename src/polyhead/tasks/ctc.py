"""``ctc``: characters or phonemes by a linear CTC head, greedy-decoded."""

from __future__ import annotations

import torch

from ..model.heads import CTCHead
from .base import TASK_KINDS
from .speech import SpeechKind


@TASK_KINDS.register("ctc")
class CTCKind(SpeechKind):
    head_class = CTCHead
    outputs = (("log_probs", "logits"),)


def decode_ctc(logits: torch.Tensor, vocab: list[str]) -> str:
    """Greedy transcript of one utterance's CTC logits [T, V]."""
    ids = CTCHead.greedy({"logits": logits[None], "lengths": torch.tensor([len(logits)])})[0]
    return "".join(vocab[i - 1] for i in ids)
