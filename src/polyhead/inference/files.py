"""Transcribing many files: ``polyhead transcribe FILE|DIR ...``.

Folders are searched recursively for the given extensions (hidden files and folders are
left out). Every file's header is read first, so that one progress bar runs over the total
audio duration and unreadable or empty files are named before any work. Files that fit the
encoder's window (Whisper: 30 s) go through the one-pass analysis in padded batches of
similar lengths (``Polyhead.analyze_features``: one encoder pass and one batched decoding
per batch); longer ones, and every file when speakers are asked for, through the chunked
long-form path (``diarize.transcribe``). A file that fails (corrupt, empty, unreadable,
refused) is recorded with its reason and the others go on; the caller writes each result
as it comes (``on_result``) and reports the failures at the end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import soundfile as sf
from tqdm import tqdm

from ..audio import AudioError
from .pipeline import GREEDY, Decoding, Polyhead, words_in

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "m4a")
DEFAULT_BATCH = 8  # files per encoder pass (short files)
WINDOW_MARGIN_S = 0.01  # a header's duration and the decoded one may differ by a sample


@dataclass
class Input:
    """One file to transcribe: its path, the name its outputs get (relative to the output
    folder, without extension) and, once read, its duration or why it cannot be used."""

    path: Path
    name: str
    duration: float = 0.0
    error: str | None = None


@dataclass
class Summary:
    files: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    failed: list[Input] = field(default_factory=list)

    def lines(self) -> list[str]:
        done = self.files - len(self.failed)
        rtf = f" (real-time factor {self.wall_s / self.audio_s:.3f})" if self.audio_s > 0 else ""
        head = (f"transcribed {done} of {self.files} file{'s' * (self.files != 1)}: "
                f"{self.audio_s:.1f} s of audio in {self.wall_s:.1f} s{rtf}")
        if not self.failed:
            return [head]
        return [f"{head}; {len(self.failed)} failed:"] + [f"  {i.path}: {i.error}" for i in self.failed]


def parse_extensions(text: str | None) -> tuple[str, ...]:
    """``"wav,flac,.MP3"`` -> ``(".wav", ".flac", ".mp3")``."""
    exts = [e.strip().lower().lstrip(".") for e in (text or ",".join(DEFAULT_EXTENSIONS)).split(",")]
    if not any(exts):
        raise ValueError("--extensions: name at least one, e.g. wav,flac")
    return tuple(f".{e}" for e in exts if e)


def collect(paths: list[str | Path], extensions: tuple[str, ...]) -> list[Input]:
    """The files to transcribe, in order: a file as given (whatever its extension), a folder's
    files with one of ``extensions`` found recursively, sorted; each file once. Outputs are
    named after the file's path inside the folder it was found in (the folder tree is
    mirrored), or its stem; ``a.wav`` and ``a.flac`` side by side get ``a`` and ``a.flac``."""
    inputs, names, seen = [], set(), set()
    for arg in paths:
        root = Path(arg)
        if root.is_dir():
            found = sorted(f for f in root.rglob("*") if f.suffix.lower() in extensions and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(root).parts))
            if not found:
                log.warning("%s: no file with extension %s", root, ", ".join(extensions))
            entries = [(f, f.relative_to(root).with_suffix("")) for f in found]
        else:  # a file, or a path that is not there (named as a failure)
            entries = [(root, Path(root.stem or root.name))]
        for f, rel in entries:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            name = rel.as_posix()
            if name in names:
                name = (rel.parent / f.name).as_posix()
            base, k = name, 2
            while name in names:
                name, k = f"{base}-{k}", k + 1
            names.add(name)
            inputs.append(Input(f, name))
    return inputs


def probe(item: Input) -> None:
    """Read the file's header: its duration, or why it cannot be used."""
    if not item.path.is_file():
        item.error = "file not found"
        return
    try:
        info = sf.info(str(item.path))
    except Exception as e:  # soundfile raises several types for non-audio
        item.error = f"not a readable audio file ({_reason(e, item.path)})"
        return
    if info.frames <= 0 or info.samplerate <= 0:
        item.error = "empty: no audio in the file"
        return
    item.duration = info.frames / info.samplerate


def transcript_of(res: dict, language: str | None = None) -> dict:
    """An analysis as a transcript: {text, language, duration, segments}. The decoding window
    is one segment, as Whisper's without timestamps, over the speech the VAD head heard (the
    whole input without one); where it heard several stretches and the words are timed, each
    stretch is a segment with the words that begin in it. No speech, or a transcript the
    no-speech rule silenced: no segment."""
    text, words = res.get("text", ""), res.get("words") or []
    scores = {k: res[k] for k in ("avg_logprob", "temperature", "compression_ratio") if k in res}
    heard = res.get("segments")
    if heard is None:
        spans = [{"start": 0.0, "end": res["duration"], "no_speech_prob": res.get("no_speech_prob")}]
    else:
        spans = [dict(s) for s in heard]
    segments = []
    if text.strip() and spans:
        if len(spans) > 1 and words:
            for s in spans:
                inner = words_in(words, s["start"], s["end"])
                if inner:
                    segments.append({**s, "text": " ".join(w["word"] for w in inner), "words": inner, **scores})
        else:
            whole = {"start": spans[0]["start"], "end": spans[-1]["end"],
                     "no_speech_prob": res.get("no_speech_prob")}
            segments.append({**whole, "text": text, "words": words, **scores})
    return {"text": text, "language": language or res.get("decoder_language") or res.get("language"),
            "duration": res["duration"], "segments": segments}


def _reason(e: Exception, path: Path) -> str:
    """The exception's message without the file name it may start with (the summary names it)."""
    msg = str(e) or type(e).__name__
    for prefix in (f"{path}: ", f"{path.name}: "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def transcribe_files(ph: Polyhead, inputs: list[Input], decoding: Decoding = GREEDY, *,
                     on_result: Callable[[Input, dict], None], speakers: bool = False,
                     num_speakers: int | None = None, registry=None, method: str = "clustering",
                     batch_size: int = DEFAULT_BATCH, progress: bool = True) -> Summary:
    """Transcribe ``inputs``; ``on_result(item, result)`` for each one done (an exception it
    raises, e.g. a full disk, marks that file failed). Returns the summary: files, seconds of
    audio, wall time and the failed inputs (each with its ``error``)."""
    from .diarize import transcribe

    start = time.monotonic()
    ph.check_decoding(decoding)
    for item in inputs:
        probe(item)
    ok = [i for i in inputs if i.error is None]
    summary = Summary(files=len(inputs), audio_s=round(sum(i.duration for i in ok), 3))
    language = ph.decoding_language(decoding)
    one_pass = [] if speakers else sorted((i for i in ok if i.duration <= ph.max_seconds - WINDOW_MARGIN_S),
                                          key=lambda i: i.duration)
    short = {id(i) for i in one_pass}
    chunked = [i for i in ok if id(i) not in short]

    def fail(item: Input, e: Exception) -> None:
        item.error = _reason(e, item.path)
        if not isinstance(e, (AudioError, ValueError, OSError)):
            log.warning("%s: %s", item.path, item.error, exc_info=log.isEnabledFor(logging.DEBUG))

    def done(item: Input, result: dict) -> None:
        try:
            on_result(item, result)
        except Exception as e:  # writing its outputs failed
            fail(item, e)

    with tqdm(total=round(summary.audio_s, 1), unit="s", desc="transcribe", disable=not progress,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]") as bar:
        for b in range(0, len(one_pass), max(1, batch_size)):
            batch, features = one_pass[b:b + max(1, batch_size)], []
            for item in batch:
                try:
                    features.append((item, ph.features(item.path, decoding=decoding)))
                except Exception as e:
                    fail(item, e)
                    bar.update(item.duration)
            try:
                answers = ph.analyze_features([f for _, f in features])
            except Exception:  # one bad input spoils the batch: run each alone to find it
                answers = []
                for item, f in features:
                    try:
                        answers.append(ph.analyze_features([f])[0])
                    except Exception as e:
                        fail(item, e)
                        answers.append(None)
            for (item, _), res in zip(features, answers):
                if res is not None:
                    done(item, transcript_of(res, language))
                bar.update(item.duration)
        for item in chunked:
            used = [0.0]

            def advance(seconds: float, used=used) -> None:
                seconds = min(seconds, item.duration - used[0])
                used[0] += seconds
                bar.update(seconds)

            try:
                res = transcribe(ph, item.path, num_speakers=num_speakers, registry=registry,
                                 id_threshold=ph.threshold, decoding=decoding, method=method, advance=advance)
            except Exception as e:
                fail(item, e)
            else:
                if not speakers:
                    res.pop("speakers", None)
                    for s in res["segments"]:
                        s.pop("speaker", None)
                        for w in s["words"]:
                            w.pop("speaker", None)
                done(item, {"text": " ".join(s["text"] for s in res["segments"] if s["text"]),
                            "language": language, **res})
            bar.update(max(0.0, item.duration - used[0]))
    summary.failed = [i for i in inputs if i.error is not None]
    summary.wall_s = round(time.monotonic() - start, 2)
    return summary
