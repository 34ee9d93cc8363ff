"""Text forms, the lowest floor for transcripts (no imports from the rest of polyhead).

Two normalisations with two purposes:

- ``normalize_text``: the form CTC learns and aligns (lower case, letters, digits, apostrophes
  inside words); it never changes the words themselves, so a CTC alignment maps back onto them.
- ``scoring_form``: the form every WER and CER is computed on, Whisper's own text normaliser
  (transformers' ``EnglishTextNormalizer`` for English, ``BasicTextNormalizer`` otherwise), so
  "39" against "thirty nine", "Mr." against "mister" or "colour" against "color" is not an error,
  and scores compare with published Whisper figures.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

SCORING_NORMALISER = "whisper"  # what the tables name as their normaliser
_CURLY_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
_NOT_WORD_SPACE_OR_APOSTROPHE = re.compile(r"[^\w\s']|_")
_STRAY_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")  # not between two word characters
_WHITESPACE = re.compile(r"\s+")
_HAS_WORD = re.compile(r"[^\W_]")
# British -> American spellings (Whisper's normalizer.json), where a tokenizer folder ships it.
SPELLING_FILE = "normalizer.json"


def normalize_text(s: str) -> str:
    """The CTC form: lower case, curly apostrophes straightened, every punctuation mark a
    space except an apostrophe inside a word ("don't" stays, "'quoted'" becomes "quoted"),
    whitespace collapsed. Digits are kept; words are never rewritten."""
    s = s.lower().translate(_CURLY_APOSTROPHES)
    s = _NOT_WORD_SPACE_OR_APOSTROPHE.sub(" ", s)
    s = _STRAY_APOSTROPHE.sub(" ", s)
    return _WHITESPACE.sub(" ", s).strip()


@lru_cache(maxsize=1)
def _spelling() -> dict[str, str]:
    """Whisper's spelling table from an installed model folder's tokenizer, if one is there
    (the converted catalogue folders carry none; the table only matters for British text)."""
    import os

    root = Path(os.environ.get("POLYHEAD_MODELS", Path.home() / ".cache" / "polyhead" / "models"))
    for path in sorted(root.glob(f"*/{SPELLING_FILE}")):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return {}


@lru_cache(maxsize=4)
def _normaliser(language: str):
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if language == "en":
        return EnglishTextNormalizer(_spelling())
    return BasicTextNormalizer(remove_diacritics=False)


def scoring_form(s: str, language: str = "en") -> str:
    """Whisper's normalisation, the form WER is scored on. Tokens left without a letter or
    digit (Whisper keeps a lone "." it takes for a decimal point) are not words."""
    return " ".join(w for w in _normaliser(language)(s).split() if _HAS_WORD.search(w))


def written_sentence(words: str, question: bool = False) -> str:
    """A generated word sequence in written form: capital first letter, a full stop or a
    question mark at the end (what Whisper writes, and what its decoder learns)."""
    words = " ".join(words.split())
    if not words:
        return words
    return words[0].upper() + words[1:] + ("?" if question else ".")
