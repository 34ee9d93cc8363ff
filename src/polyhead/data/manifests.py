"""Streamed manifests: a set read line by line, memory flat however large it is, a
damaged line skipped and counted rather than stopping a run."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.lazy import Dillable, LazyIteratorChain, count_newlines_fast
from lhotse.serialization import decode_json_line, deserialize_item, open_best

from ..config import Config
from .corpus import ManifestError, cuts_path, read_info, recordings_of, source_problem

log = logging.getLogger(__name__)

# Lines of streamed manifests that were not a cut (cut short, not JSON): path -> line -> why
MALFORMED: dict[str, dict[int, str]] = {}
NOT_A_CUT = (ValueError, KeyError, TypeError, AttributeError, IndexError)  # JSON or lhotse's from_dict


class TolerantManifest(Dillable):
    """lhotse's ``LazyManifestIterator`` over a cuts JSONL manifest, except that a line that is
    not a cut (cut short by a copy, not JSON, not a cut's fields) is skipped: a warning names
    the file and line the first time, and it is counted (``malformed_lines``). One damaged
    line among millions no longer stops a run with a JSON error naming neither."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def __iter__(self):
        bad = MALFORMED.setdefault(self.path, {})
        with open_best(self.path, "r") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    cut = deserialize_item(decode_json_line(line))
                    if not isinstance(cut, Cut):
                        raise ValueError(f"a {type(cut).__name__}, not a cut")
                except NOT_A_CUT as e:
                    if number not in bad:
                        bad[number] = f"{type(e).__name__}: {e}"
                        log.warning("%s:%d: not a cut, line skipped (%d in this manifest so far): %s",
                                    self.path, number, len(bad), bad[number][:200])
                    continue
                yield cut

    def __len__(self) -> int:
        return count_newlines_fast(self.path)

    def __add__(self, other) -> LazyIteratorChain:
        return LazyIteratorChain(self, other)


def malformed_lines(config: Config) -> int:
    """Manifest lines skipped so far as not a cut, over the train sets of ``config``."""
    paths = {str(cuts_path(config.corpus, s)) for t in config.tasks.values() for s in t.train_sets}
    return sum(len(MALFORMED.get(p, ())) for p in paths)


def lazy_set(corpus_dir: str | Path, name: str) -> CutSet:
    """A named set streamed from its manifest (as lhotse's ``CutSet.from_jsonl_lazy``, but a
    malformed line is skipped and counted: ``TolerantManifest``): memory stays flat however
    large the set. Each cut's audio sources are checked as it is read, as ``load_cuts``
    checks them all up front."""
    path = cuts_path(corpus_dir, name)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    return (CutSet(TolerantManifest(path)).map(partial(_checked_sources, path=str(path)))
            .with_recording_path_prefix(str(Path(corpus_dir).resolve())))


def _checked_sources(cut, path: str):
    for rec in recordings_of(cut):
        problem = source_problem(rec)
        if problem:
            raise ManifestError(f"{path}: cut {cut.id!r}: {problem}")
    return cut


def set_hours(corpus_dir: str | Path, name: str) -> float:
    """Hours of audio in a set: as corpus.json declares them (no pass over a large
    manifest), else summed from the streamed manifest."""
    declared = read_info(corpus_dir).get("sets", {}).get(name, {}).get("hours")
    if declared is not None:
        return float(declared)
    return sum(c.duration for c in lazy_set(corpus_dir, name)) / 3600.0
