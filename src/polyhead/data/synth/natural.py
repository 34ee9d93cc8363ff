"""Natural English text the generator never wrote: sentences from Debian's ``fortunes``.

The retention sets (how much of its pretrained English a fine-tuned model keeps) must not share
the grammar of ``text.py``: a model that learnt the generator's sentence shapes would score well
on them for the wrong reason. BSD fortune's collections (Debian package ``fortunes``, installed
by ``scripts/install_engines.sh``) are written by people, in their own case and punctuation.

Each sentence is assigned to one split by a hash of its text, so the replay pool, the retention
dev split (where an interpolation coefficient may be chosen) and the retention test split never
share a sentence, whatever the counts asked for.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Collections of plain prose; the others hold verse, code, ASCII art or offensive text.
COLLECTIONS = ("wisdom", "literature", "people", "science", "work", "education", "food", "kids",
               "platitudes", "fortunes")
MIN_WORDS, MAX_WORDS = 5, 22
# Share of sentences per split, by hash: replay (untranscribed training audio), dev, test.
SPLITS = {"replay": (0.0, 0.6), "dev": (0.6, 0.75), "test": (0.75, 1.0)}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
# What TTS engines read plainly and Whisper writes: letters, digits, common punctuation.
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.;:!?'\"-]+$")


class NoNaturalText(RuntimeError):
    """The fortunes collections are missing (Debian package ``fortunes``)."""


def _entries(path: Path) -> list[str]:
    text = path.read_text(encoding="latin-1")
    return [e for e in text.split("\n%\n") if e.strip()]


def _clean_entry(entry: str) -> str:
    lines = [ln.strip() for ln in entry.splitlines()]
    # the attribution ("-- Author") and numbered lists are not read as prose
    lines = [ln for ln in lines if ln and not ln.startswith("--") and not re.match(r"^\(?\d+[.)]", ln)]
    return " ".join(" ".join(lines).split())


def sentences(directory: Path = FORTUNE_DIR) -> list[str]:
    """Every usable sentence, in a fixed order (sorted, de-duplicated)."""
    found = [directory / c for c in COLLECTIONS if (directory / c).is_file()]
    if not found:
        raise NoNaturalText(f"no fortune collections in {directory}: install Debian's 'fortunes' package "
                            "(scripts/install_engines.sh does)")
    out = set()
    for path in found:
        for entry in _entries(path):
            for s in _SENTENCE_END.split(_clean_entry(entry)):
                s = " ".join(re.sub(r"\s*--\s*", ", ", s).split())
                n = len(s.split())
                if MIN_WORDS <= n <= MAX_WORDS and _ALLOWED.match(s) and s[0].isupper() and s[-1] in ".!?":
                    out.add(s)
    return sorted(out)


def split_of(sentence: str) -> str:
    h = int(hashlib.sha1(sentence.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return next(name for name, (lo, hi) in SPLITS.items() if lo <= h < hi or (hi == 1.0 and h == 1.0))


def split_sentences(directory: Path = FORTUNE_DIR) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for s in sentences(directory):
        out[split_of(s)].append(s)
    return out
