"""Read corpora users already have on disk into polyhead's representation (see corpus.py).

Every reader returns a CutSet with one cut and one supervision per utterance; nothing is ever
downloaded. Only audio headers are read here (rate, length, channels); samples are decoded later
by polyhead.audio, which also down-mixes: multi-channel files become a MultiCut over all channels.

Bad entries (missing, empty or unreadable audio, duplicate ids, malformed lines) raise
ManifestError naming the file and, where there is one, the line. With ``on_error="skip"`` they
are left out and one warning gives the count, so a partial corpus is never silent.

    cuts = read_corpus("librispeech:/data/LibriSpeech/test-clean")
    cuts, trials = read_voxceleb("/data/vox1", trials="veri_test2.txt")
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import soundfile as sf
from lhotse import (CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet,
                    load_manifest)
from lhotse.cut import Cut, MonoCut, MultiCut

from polyhead.data.corpus import (ManifestError, Trial, check_unique_ids, load_cuts, read_trials,
                                  source_problem)

logger = logging.getLogger(__name__)

CUSTOM_FIELDS = ("session", "intent", "slots", "phonemes", "voice", "engine")
ON_ERROR = ("raise", "skip")
# Manifests round durations (NeMo to 2 decimals); a segment ending later than this past the
# end of its audio is a real mismatch, not rounding.
LENGTH_TOLERANCE_S = 0.05
M4A_HINT = ("AAC (.m4a) audio is not supported (polyhead decodes with soundfile); convert it to "
            "WAV first, e.g. ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav")


# ---------------------------------------------------------------------------------------------
# Shared machinery: every reader turns its format into calls to _Builder.add / _Builder.fail.

class _Builder:
    """Collects the cuts of one reader, applying the shared checks and the on_error policy."""

    def __init__(self, source: str | Path, on_error: str):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.source = str(source)
        self.skip = on_error == "skip"
        self.cuts: list[Cut] = []
        self.skipped: list[str] = []
        self._first_seen: dict[str, str] = {}  # cut id -> where, for duplicate messages
        self._recordings: dict[Path, Recording | ManifestError] = {}  # segments share files

    def fail(self, message: str) -> None:
        if not self.skip:
            raise ManifestError(message)
        self.skipped.append(message)

    def add(self, where: str | None, cut_id: str, audio: Path, *, recording_id: str | None = None,
            offset: float = 0.0, duration: float | None = None, text: str | None = None,
            speaker: str | None = None, gender: str | None = None, language: str | None = None,
            session: str | None = None) -> None:
        """Add one utterance: ``where`` is "file:line" of its entry (None when the audio file
        itself is the entry); offset/duration select a segment, None means to the end."""
        prefix = f"{where}: " if where else ""
        try:
            self._check_new(cut_id)
            rec = self._recording(audio, recording_id or cut_id)
            offset, duration = _span(rec, audio, offset, duration)
        except ManifestError as e:
            self.fail(prefix + str(e))
            return
        mono = len(rec.channel_ids) == 1
        channel = rec.channel_ids[0] if mono else list(rec.channel_ids)
        sup = SupervisionSegment(
            id=cut_id, recording_id=rec.id, start=0.0, duration=duration, channel=channel,
            text=text, speaker=speaker, gender=gender, language=language,
            custom={**dict.fromkeys(CUSTOM_FIELDS), "session": session})
        cut_type = MonoCut if mono else MultiCut
        self._keep(cut_type(id=cut_id, start=offset, duration=duration, channel=channel,
                            recording=rec, supervisions=[sup]), where or str(audio))

    def add_cut(self, cut: Cut, where: str) -> None:
        """Add a cut read from a lhotse manifest, checking what add() would have checked:
        lhotse builds cuts from whatever JSON it is given, types unchecked."""
        try:
            if not isinstance(cut.id, str) or not cut.id.strip():
                raise ManifestError(f"cut id must be a non-empty string, got {cut.id!r}")
            self._check_new(cut.id)
            self._check_cut(cut)
        except ManifestError as e:
            self.fail(f"{where}: cut {str(cut.id)[:100]!r}: {e}")
            return
        self._keep(cut, where)

    def _check_cut(self, cut: Cut) -> None:
        if not (_seconds(cut.start) and _seconds(cut.duration) and cut.duration > 0):
            raise ManifestError(f"start {cut.start!r} and duration {cut.duration!r} must be seconds, duration > 0")
        rec = getattr(cut, "recording", None)
        problem = "no recording" if rec is None else source_problem(rec)
        if problem:
            raise ManifestError(problem)
        if not _seconds(rec.duration) or cut.start + cut.duration > rec.duration + LENGTH_TOLERANCE_S:
            raise ManifestError(f"{cut.start!r}-{cut.start + cut.duration!r} s runs past the end of its "
                                f"recording ({rec.duration!r} s)")
        for source in (s for s in rec.sources if s.type == "file"):
            audio = Path(source.source)
            header = self._recording(audio, str(rec.id))
            if header.sampling_rate != rec.sampling_rate or header.duration + LENGTH_TOLERANCE_S < rec.duration:
                raise ManifestError(f"{audio}: the manifest says {rec.sampling_rate!r} Hz, {rec.duration!r} s; "
                                    f"the file has {header.sampling_rate} Hz, {header.duration:.3f} s")
        if not isinstance(cut.supervisions, list):
            raise ManifestError("supervisions must be a list")
        for sup in cut.supervisions:
            for field in ("text", "speaker", "gender", "language"):
                if not isinstance(getattr(sup, field, None), (str, type(None))):
                    raise ManifestError(f"supervision {field} must be a string, got {getattr(sup, field)!r}")
            if not (_seconds(sup.start, negative=True) and _seconds(sup.duration) and sup.duration > 0):
                raise ManifestError(f"supervision start {sup.start!r} and duration {sup.duration!r} must be "
                                    f"seconds, duration > 0")
            if not isinstance(sup.custom, (dict, type(None))):
                raise ManifestError(f"supervision custom must be a mapping, got {sup.custom!r}")

    def finish(self) -> CutSet:
        if self.skipped:
            n = len(self.skipped)
            logger.warning("%s: skipped %d bad entr%s (on_error='skip'); first: %s",
                           self.source, n, "y" if n == 1 else "ies", self.skipped[0])
        if not self.cuts:
            raise ManifestError(f"{self.source}: no usable utterances"
                                + (f" ({len(self.skipped)} skipped)" if self.skipped else ""))
        cuts = CutSet.from_cuts(self.cuts)
        check_unique_ids(cuts, self.source)  # invariant; _check_new already gave file and line
        return cuts

    def _check_new(self, cut_id: str) -> None:
        if cut_id in self._first_seen:
            raise ManifestError(f"duplicate id {cut_id!r} (first at {self._first_seen[cut_id]})")

    def _keep(self, cut: Cut, where: str) -> None:
        self._first_seen[cut.id] = where
        self.cuts.append(cut)

    def _recording(self, audio: Path, recording_id: str) -> Recording:
        audio = audio.absolute()  # manifests must not depend on the working directory
        if audio not in self._recordings:
            try:
                self._recordings[audio] = _open_recording(audio, recording_id)
            except ManifestError as e:
                self._recordings[audio] = e
        found = self._recordings[audio]
        if isinstance(found, ManifestError):
            raise found
        return found


def _seconds(x, negative: bool = False) -> bool:
    """A finite number of seconds (not a bool, a string or a list that JSON let through)."""
    return (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            and (negative or x >= 0))


def _number(x):
    """A number written as a string ("1.5", as some scripts write NeMo durations) as a float."""
    try:
        return float(x) if isinstance(x, str) else x
    except ValueError:
        return x


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name longer than the file system allows
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _open_recording(audio: Path, recording_id: str) -> Recording:
    """Read the header of one file; ManifestError naming the file if it cannot be used."""
    if audio.suffix.lower() == ".m4a":
        raise ManifestError(f"{audio}: {M4A_HINT}")
    if not _is_file(audio):
        raise ManifestError(f"{str(audio)[:300]}: audio file not found")
    try:
        rec = Recording.from_file(audio, recording_id=recording_id)
    except Exception:  # lhotse wraps every backend's error; soundfile's reason is the clear one
        reason = _why_unreadable(audio)
        raise ManifestError(f"{audio}: not a readable audio file ({reason})") from None
    if rec.num_samples == 0:
        raise ManifestError(f"{audio}: empty audio (0 samples)")
    return rec


def _why_unreadable(audio: Path) -> str:
    try:
        sf.info(str(audio))
    except Exception as e:
        return str(e)
    return "lhotse could not read its header"


def _span(rec: Recording, audio: Path, offset: float,
          duration: float | None) -> tuple[float, float]:
    """Validate a segment against its audio; clip rounding overhang at the end."""
    if not 0 <= offset < rec.duration:
        raise ManifestError(f"{audio}: offset {offset} s outside audio of {rec.duration:.3f} s")
    available = rec.duration - offset
    if duration is None:
        return offset, available
    if duration <= 0:
        raise ManifestError(f"{audio}: segment duration {duration} s is not positive")
    if duration > available + LENGTH_TOLERANCE_S:
        raise ManifestError(f"{audio}: segment {offset:.3f}-{offset + duration:.3f} s runs past "
                            f"the end of the audio ({rec.duration:.3f} s)")
    return offset, min(duration, available)


def _lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, first field, rest) of each non-blank line: Kaldi tables, LibriSpeech
    transcripts. The rest may be empty (an empty transcript)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split(maxsplit=1)  # Kaldi allows tabs as well as spaces
            if fields:
                yield lineno, fields[0], fields[1].strip() if len(fields) > 1 else ""


def _table(path: Path, fail: Callable[[str], None]) -> dict[str, str]:
    """An optional ``<key> <value>`` file as a dict ({} when absent); duplicate keys fail."""
    table: dict[str, str] = {}
    if path.is_file():
        for lineno, key, value in _lines(path):
            if key in table:
                fail(f"{path}:{lineno}: duplicate key {key!r}")
                continue
            table[key] = value
    return table


def _resolve(value: str, *bases: Path) -> Path:
    """A relative path against the first base where it exists (else the first base, so the
    error message names a sensible path)."""
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError:  # ~user that does not exist: left as written, reported as not found
        pass
    if path.is_absolute():
        return path
    candidates = [base / path for base in bases]
    return next((c for c in candidates if _exists(c)), candidates[0])


def _find(name: str, *folders: Path) -> Path | None:
    return next((f / name for f in folders if (f / name).is_file()), None)


def _gender(value: str | None) -> str | None:
    """"M", "f", "male", "Female" -> "m" / "f"; anything else -> None."""
    value = (value or "").strip().lower()
    return value[0] if value[:1] in ("m", "f") else None


# ---------------------------------------------------------------------------------------------
# LibriSpeech

def read_librispeech(root: str | Path, split: str | None = None, *,
                     on_error: str = "raise") -> CutSet:
    """``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac`` plus ``*.trans.txt``.

    ``root`` is the LibriSpeech folder (with ``split``, e.g. "test-clean") or a split folder
    itself. Session = chapter. Gender comes from ``SPEAKERS.TXT`` when it is there.
    """
    base = Path(root) / split if split else Path(root)
    transcripts = sorted(base.rglob("*.trans.txt"))
    if not transcripts:
        raise ManifestError(f"{base}: no *.trans.txt files "
                            "(expected LibriSpeech layout <speaker>/<chapter>/<id>.flac)")
    speakers_txt = _find("SPEAKERS.TXT", base, base.parent)
    genders = _librispeech_genders(speakers_txt) if speakers_txt else {}
    b = _Builder(base, on_error)
    for trans in transcripts:
        for lineno, utt_id, text in _lines(trans):
            where = f"{trans}:{lineno}"
            parts = utt_id.split("-")
            if len(parts) != 3:
                b.fail(f"{where}: expected <speaker>-<chapter>-<NNNN>, got {utt_id!r}")
                continue
            b.add(where, utt_id, trans.parent / f"{utt_id}.flac", text=text, speaker=parts[0],
                  gender=genders.get(parts[0]), language="en", session=parts[1])
    return b.finish()


def _librispeech_genders(path: Path) -> dict[str, str | None]:
    """``14   | F | train-clean-360  | 25.03 | name`` lines; ``;`` starts a comment."""
    genders = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if not line.startswith(";") and len(fields) >= 2:
            genders[fields[0]] = _gender(fields[1])
    return genders


# ---------------------------------------------------------------------------------------------
# VoxCeleb

def voxceleb_id(path: str | Path) -> str:
    """Cut id of a VoxCeleb file or trial entry: ``id10003/na8-QEFmj44/00002.wav`` (with any
    leading folders) -> ``id10003/na8-QEFmj44/00002``."""
    return "/".join(PurePosixPath(Path(path).as_posix()).with_suffix("").parts[-3:])


def read_voxceleb(root: str | Path, trials: str | Path | None = None, *,
                  on_error: str = "raise") -> tuple[CutSet, list[Trial] | None]:
    """``<speaker>/<video>/<utt>.wav`` anywhere under ``root`` (VoxCeleb1, or VoxCeleb2 after
    converting its m4a to wav). Session = video. Gender from ``vox1_meta.csv`` (tab) or
    ``vox2_meta.csv`` (comma) in ``root`` or its parent. ``trials`` (a path, or a name inside
    ``root``) is read offline, mapping its paths to cut ids."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: folder not found")
    genders = _voxceleb_genders(root)
    b = _Builder(root, on_error)
    # An m4a without its converted wav beside it is an entry that cannot be used (add refuses it).
    audio = list(root.rglob("*.wav")) + [
        m4a for m4a in root.rglob("*.m4a") if not m4a.with_suffix(".wav").is_file()]
    for path in sorted(audio):
        parts = path.relative_to(root).parts
        if len(parts) < 3:
            b.fail(f"{path}: expected <speaker>/<video>/<utterance>.wav under {root}")
            continue
        speaker, video = parts[-3], parts[-2]
        b.add(None, voxceleb_id(path), path, speaker=speaker, gender=genders.get(speaker),
              session=video)
    cuts = b.finish()
    if trials is None:
        return cuts, None
    return cuts, _voxceleb_trials(_resolve(str(trials), Path.cwd(), root), cuts, b.skip)


def _voxceleb_genders(root: Path) -> dict[str, str | None]:
    genders = {}
    for name, delimiter in (("vox1_meta.csv", "\t"), ("vox2_meta.csv", ",")):
        path = _find(name, root, root.parent)
        if path is None:
            continue
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            rows = [[cell.strip() for cell in row] for row in csv.reader(f, delimiter=delimiter)]
        header = [h.lower() for h in rows[0]] if rows else []
        id_col = next((i for i, h in enumerate(header) if h.startswith("voxceleb")), None)
        if id_col is None or "gender" not in header:
            raise ManifestError(f"{path}:1: expected a header with 'VoxCeleb1 ID' (or "
                                f"'VoxCeleb2 ID') and 'Gender', separated by {delimiter!r}")
        gender_col = header.index("gender")
        for row in rows[1:]:
            if len(row) > max(id_col, gender_col):
                genders[row[id_col]] = _gender(row[gender_col])
    return genders


def _voxceleb_trials(path: Path, cuts: CutSet, skip: bool) -> list[Trial]:
    known = set(cuts.ids)
    if not skip:
        return read_trials(path, known, id_of=voxceleb_id)
    # Skipped audio leaves trials pointing at nothing: drop those too, and say so.
    trials = read_trials(path, id_of=voxceleb_id)
    kept = [t for t in trials if t.enrol in known and t.test in known]
    if len(kept) < len(trials):
        logger.warning("%s: skipped %d of %d trials whose utterances were not read "
                       "(on_error='skip')", path, len(trials) - len(kept), len(trials))
    if not kept:
        raise ManifestError(f"{path}: no trial has both utterances in the corpus")
    return kept


# ---------------------------------------------------------------------------------------------
# NeMo JSONL

def read_nemo(manifest_path: str | Path, *, on_error: str = "raise") -> CutSet:
    """NeMo JSONL: ``audio_filepath`` and ``duration`` (plus optional ``offset``), with ``text``
    (ASR) and/or ``label`` (speaker), ``lang`` or ``source_lang`` (language). Relative paths
    are taken from the manifest's folder first. Cut id = the audio path as written, without
    extension, plus ``-<offset in ms>`` for entries that give an offset."""
    path = Path(manifest_path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    b = _Builder(path, on_error)
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                entry, audio, offset, duration = _nemo_entry(line)
            except ManifestError as e:
                b.fail(f"{where}: {e}")
                continue
            cut_id = str(PurePosixPath(audio).with_suffix("")).removeprefix("./")
            label = entry.get("label")
            b.add(where, cut_id + (f"-{round(offset * 1000):07d}" if "offset" in entry else ""),
                  _resolve(audio, path.parent, Path.cwd()), recording_id=cut_id,
                  offset=offset, duration=duration, text=entry.get("text"),
                  speaker=None if label is None else str(label),
                  language=entry.get("lang") or entry.get("source_lang"))
    return b.finish()


def _nemo_entry(line: str) -> tuple[dict, str, float, float]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(entry, dict):
        raise ManifestError("expected a JSON object per line")
    missing = [k for k in ("audio_filepath", "duration") if k not in entry]
    if missing:
        raise ManifestError(f"missing key(s) {', '.join(missing)}")
    if not isinstance(entry["audio_filepath"], str) or not entry["audio_filepath"].strip():
        raise ManifestError(f"audio_filepath must be a non-empty path, got {entry['audio_filepath']!r:.100}")
    for key in ("text", "lang", "source_lang"):
        if not isinstance(entry.get(key), (str, type(None))):
            raise ManifestError(f"{key} must be a string, got {entry[key]!r:.100}")
    if not isinstance(entry.get("label"), (str, int, type(None))) or isinstance(entry.get("label"), bool):
        raise ManifestError(f"label must be a string, got {entry['label']!r:.100}")
    offset, duration = (_number(entry.get("offset") or 0.0), _number(entry["duration"]))
    if not (_seconds(offset) and _seconds(duration)):
        raise ManifestError(f"duration and offset must be seconds, got {duration!r:.50} and {offset!r:.50}")
    return entry, entry["audio_filepath"], float(offset), float(duration)


# ---------------------------------------------------------------------------------------------
# Kaldi / ESPnet data dir

def read_kaldi(data_dir: str | Path, *, on_error: str = "raise") -> CutSet:
    """A Kaldi/ESPnet data dir: ``wav.scp`` (files only, not pipe commands), optional ``text``,
    ``utt2spk``, ``segments``, ``spk2gender``, ``utt2lang``. Relative paths in wav.scp are taken
    from the working directory first (Kaldi runs from the recipe folder), then the data dir.
    ``text`` is optional because speaker-recognition data dirs have none."""
    d = Path(data_dir)
    wav_scp = d / "wav.scp"
    if not wav_scp.is_file():
        raise ManifestError(f"{wav_scp}: not found (a Kaldi data dir needs wav.scp)")
    b = _Builder(d, on_error)
    recordings: dict[str, tuple[str, Path | None]] = {}  # rec id -> (where, path; None: skipped)
    for lineno, rec_id, value in _lines(wav_scp):
        where = f"{wav_scp}:{lineno}"
        if rec_id in recordings:
            b.fail(f"{where}: duplicate id {rec_id!r} (first at {recordings[rec_id][0]})")
            continue
        bad = ("pipe commands are not supported; convert to audio files first and list their "
               "paths" if value.endswith("|") else "no path" if not value else None)
        if bad:
            b.fail(f"{where}: {bad}: {value!r}")
        recordings[rec_id] = (where, None if bad else _resolve(value, Path.cwd(), d))
    text, utt2spk, spk2gender, utt2lang = (
        _table(d / name, b.fail) for name in ("text", "utt2spk", "spk2gender", "utt2lang"))
    for where, utt, rec_id, start, duration in _kaldi_utterances(d, recordings, b.fail):
        rec_where, audio = recordings[rec_id]
        if audio is None:  # its wav.scp line was already counted as skipped
            continue
        speaker = utt2spk.get(utt)
        b.add(where if where == rec_where else f"{where} ({rec_where})", utt, audio,
              recording_id=rec_id, offset=start, duration=duration, text=text.get(utt),
              speaker=speaker, gender=_gender(spk2gender.get(speaker)),
              language=utt2lang.get(utt) or None)
    return b.finish()


def _kaldi_utterances(d: Path, recordings: dict, fail: Callable[[str], None]):
    """(where, utt id, rec id, start, duration or None) from segments, else one per recording."""
    segments = d / "segments"
    if not segments.is_file():
        yield from ((where, rec, rec, 0.0, None) for rec, (where, _) in recordings.items())
        return
    for lineno, utt, value in _lines(segments):
        where = f"{segments}:{lineno}"
        fields = value.split()
        try:
            rec_id, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            fail(f"{where}: expected '<utt> <recording> <start> <end>', got {utt} {value!r}")
            continue
        if rec_id not in recordings:
            fail(f"{where}: recording {rec_id!r} is not in wav.scp")
            continue
        yield where, utt, rec_id, start, (end - start if end >= 0 else None)  # end -1: to the end


# ---------------------------------------------------------------------------------------------
# lhotse

def read_lhotse(path_or_dir: str | Path, *, on_error: str = "raise") -> CutSet:
    """A cuts manifest, or a folder of ``<name>_recordings.jsonl.gz`` +
    ``<name>_supervisions.jsonl.gz`` pairs, combined and trimmed to one cut per supervision."""
    path = Path(path_or_dir)
    cuts = _lhotse_pairs(path) if path.is_dir() else load_cuts(path)
    b = _Builder(path, on_error)
    for cut in cuts:
        b.add_cut(cut, str(path))
    return b.finish()


def _lhotse_pairs(folder: Path) -> CutSet:
    rec_paths = sorted(folder.glob("*_recordings.jsonl*"))
    if not rec_paths:
        raise ManifestError(f"{folder}: no *_recordings.jsonl.gz manifests (pass a cuts "
                            "manifest file, or a folder of *_recordings/*_supervisions pairs)")
    cuts: list[Cut] = []
    for rec_path in rec_paths:
        stem, _, ext = rec_path.name.rpartition("_recordings")
        sup_path = rec_path.with_name(f"{stem}_supervisions{ext}")
        if not sup_path.is_file():
            raise ManifestError(f"{rec_path}: no matching {sup_path.name} beside it")
        recordings = _load_manifest(rec_path, RecordingSet)
        supervisions = _load_manifest(sup_path, SupervisionSet)
        try:
            pair = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
            cuts.extend(pair.trim_to_supervisions(keep_overlapping=False))
        except Exception as e:  # lhotse raises assorted types for mismatched manifests
            raise ManifestError(f"{sup_path}: cannot combine with {rec_path.name} ({e})") from None
    return CutSet.from_cuts(cuts)


def _load_manifest(path: Path, kind: type):
    try:
        manifest = load_manifest(path)
    except Exception as e:  # lhotse raises many types for malformed JSON
        raise ManifestError(f"{path}: not a valid lhotse manifest ({e})") from None
    if not isinstance(manifest, kind):
        raise ManifestError(f"{path}: expected a {kind.__name__}, got {type(manifest).__name__}")
    return manifest


# ---------------------------------------------------------------------------------------------
# Dispatch

READERS: dict[str, Callable[..., CutSet]] = {
    "librispeech": read_librispeech,
    "voxceleb": lambda path, **kw: read_voxceleb(path, **kw)[0],
    "nemo": read_nemo,
    "kaldi": read_kaldi,
    "lhotse": read_lhotse,
}


def read_corpus(spec: str, *, on_error: str = "raise") -> CutSet:
    """Read ``<format>:<path>``, e.g. ``librispeech:/data/LibriSpeech/test-clean``."""
    fmt, sep, path = spec.partition(":")
    reader = READERS.get(fmt.strip().lower())
    if not sep or not path or reader is None:
        raise ValueError(f"corpus spec must be <format>:<path> with format one of "
                         f"{', '.join(READERS)}; got {spec!r}")
    return reader(path, on_error=on_error)
