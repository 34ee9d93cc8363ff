"""The internal representation every reader produces and every trainer consumes.

A corpus is a folder of lhotse manifests (one CutSet per named set, e.g. ``speech_train``)
plus speaker-verification trial lists. Each cut has exactly one supervision that carries all
labels the utterance has; missing labels are None:

    supervision.text       transcript (original casing and punctuation)
    supervision.speaker    speaker id
    supervision.gender     "m" / "f" / None
    supervision.language   ISO 639-1 code, e.g. "en"
    supervision.custom     {"session", "intent", "slots", "phonemes", "phoneme_times",
                            "voice", "engine", "kind"}
                           phoneme_times: [[symbol, start, end], ...] in seconds from the
                           supervision's start, where the TTS engine reports durations
                           translation sets only: "translation" (the English written
                           sentence); code-switching also "codeswitch_language"

Long recordings (VAD, conversations) have several supervisions, one per speech segment.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lhotse import CutSet, load_manifest

MANIFEST_DIR = "manifests"
TRIALS_DIR = "trials"
CORPUS_INFO = "corpus.json"


class ManifestError(ValueError):
    """A manifest or trial list that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Trial:
    target: bool
    enrol: str  # cut id
    test: str  # cut id


def cuts_path(corpus_dir: str | Path, name: str) -> Path:
    return Path(corpus_dir) / MANIFEST_DIR / f"{name}_cuts.jsonl.gz"


def trials_path(corpus_dir: str | Path, name: str) -> Path:
    return Path(corpus_dir) / TRIALS_DIR / f"{name}.txt"


# lhotse would run a "command" source in a shell and download a "url" one: a manifest is data,
# so only files (and bytes held in the manifest itself) are audio sources here.
AUDIO_SOURCES = ("file", "memory")


def load_cuts(path: str | Path) -> CutSet:
    """Load a CutSet manifest, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        cuts = load_manifest(path)
        if cuts is not None and not isinstance(cuts, CutSet):
            cuts = CutSet.from_manifests(recordings=cuts)
    except Exception as e:  # lhotse raises many types for malformed JSON
        raise ManifestError(f"{path}: not a valid lhotse manifest ({e})") from None
    if cuts is None:
        raise ManifestError(f"{path}: empty manifest")
    for cut in cuts:
        for rec in recordings_of(cut):
            problem = source_problem(rec)
            if problem:
                raise ManifestError(f"{path}: cut {cut.id!r}: {problem}")
    return cuts


def source_problem(rec) -> str | None:
    sources = getattr(rec, "sources", None)
    if not isinstance(sources, list) or not sources:
        return "recording without audio sources"
    for s in sources:
        if getattr(s, "type", None) not in AUDIO_SOURCES:
            return (f"audio source type {getattr(s, 'type', None)!r} is not allowed "
                    f"(only {', '.join(AUDIO_SOURCES)})")
        if s.type == "file" and not isinstance(s.source, str):
            return f"audio source must be a path, got {s.source!r}"
    return None


def recordings_of(cut) -> Iterable:
    """The recordings a cut reads from: its own, or its tracks' (mixed cuts)."""
    rec = getattr(cut, "recording", None)
    if rec is not None:
        yield rec
    for track in getattr(cut, "tracks", None) or []:
        yield from recordings_of(track.cut)


def load_set(corpus_dir: str | Path, name: str) -> CutSet:
    """A named set of a corpus folder; audio paths in it are relative to that folder."""
    return load_cuts(cuts_path(corpus_dir, name)).with_recording_path_prefix(str(Path(corpus_dir).resolve()))


def available_sets(corpus_dir: str | Path) -> list[str]:
    folder = Path(corpus_dir) / MANIFEST_DIR
    return sorted(p.name[: -len("_cuts.jsonl.gz")] for p in folder.glob("*_cuts.jsonl.gz"))


def read_trials(path: str | Path, known_ids: Iterable[str] | None = None,
                id_of=lambda s: s) -> list[Trial]:
    """Read a trial list in either common layout.

    ``<1|0> <enrol> <test>`` (VoxCeleb) or ``<enrol> <test> target|nontarget`` (Kaldi).
    ``id_of`` maps a path in the list to a cut id (readers use it for VoxCeleb paths).
    Unknown ids (when ``known_ids`` is given) and malformed lines raise ManifestError.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: trial list not found")
    known = set(known_ids) if known_ids is not None else None
    trials = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ManifestError(f"{path}:{lineno}: expected 3 fields, got {len(parts)}: {line!r}")
        if parts[0] in ("0", "1"):
            target, enrol, test = parts[0] == "1", parts[1], parts[2]
        elif parts[2] in ("target", "nontarget"):
            target, enrol, test = parts[2] == "target", parts[0], parts[1]
        else:
            raise ManifestError(
                f"{path}:{lineno}: label must be 0/1 first or target/nontarget last: {line!r}")
        enrol, test = id_of(enrol), id_of(test)
        if known is not None:
            for cid in (enrol, test):
                if cid not in known:
                    raise ManifestError(f"{path}:{lineno}: unknown utterance {cid!r}")
        trials.append(Trial(target, enrol, test))
    if not trials:
        raise ManifestError(f"{path}: no trials")
    return trials


def write_trials(path: str | Path, trials: Iterable[Trial]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in trials:
            f.write(f"{int(t.target)} {t.enrol} {t.test}\n")


def check_unique_ids(cuts: CutSet, source: str) -> None:
    counts = Counter(c.id for c in cuts)
    dupes = [i for i, n in counts.items() if n > 1]
    if dupes:
        raise ManifestError(f"{source}: duplicate ids, e.g. {dupes[:3]} ({len(dupes)} in all)")


def write_info(corpus_dir: str | Path, info: dict) -> None:
    path = Path(corpus_dir) / CORPUS_INFO
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_info(corpus_dir: str | Path) -> dict:
    path = Path(corpus_dir) / CORPUS_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def label(cut, field: str):
    """A label of a single-utterance cut: a supervision attribute or a custom field."""
    if not cut.supervisions:
        return None
    sup = cut.supervisions[0]
    if field in ("text", "speaker", "gender", "language"):
        return getattr(sup, field)
    return (sup.custom or {}).get(field)
