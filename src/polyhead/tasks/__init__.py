"""Task kinds: one home per kind of task (see base.py); a config's ``head.type`` picks one."""

from . import classifier, ctc, frame, speaker, whisper_decoder  # noqa: F401  (registers the kinds)
from .base import TASK_KINDS, TaskKind, collator, task_kind, task_kinds

__all__ = ["TASK_KINDS", "TaskKind", "collator", "task_kind", "task_kinds"]
