"""What a cut says, in the forms the tasks learn: the transcript as CTC reads it and as the
corpus writes it, and the phonemes."""

from __future__ import annotations

from ..text import normalize_text
from .corpus import label

CHARS = list(" 'abcdefghijklmnopqrstuvwxyz")  # CTC vocabulary after normalize_text; 0 = blank


def text_of(cut) -> str | None:
    t = label(cut, "text")
    return normalize_text(t) if t else None


def raw_text_of(cut) -> str | None:
    """The transcript as the corpus writes it (case, punctuation): what Whisper's decoder
    learns to write; ``text_of`` is what CTC learns and what WER scores."""
    t = label(cut, "text")
    return " ".join(t.split()) if t else None


def phonemes_of(cut) -> str | None:
    p = label(cut, "phonemes")
    return " ".join(p.split()) if p else None
