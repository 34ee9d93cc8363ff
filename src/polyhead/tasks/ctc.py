"""``ctc``: characters or phonemes by a linear CTC head, greedy-decoded."""

from __future__ import annotations

from ..model.heads import CTCHead
from .base import TASK_KINDS
from .speech import SpeechKind


@TASK_KINDS.register("ctc")
class CTCKind(SpeechKind):
    head_class = CTCHead
    outputs = (("log_probs", "logits"),)
