"""Transcript output formats: JSON (whisperX-style segments), plain text, SRT, WebVTT, TSV
(Whisper's names and layouts), RTTM; and writing several of them for one input."""

from __future__ import annotations

import json
import os
from pathlib import Path

# `--output-format all`: Whisper's set (txt, vtt, srt, tsv, json); RTTM too for speaker runs
ALL_FORMATS = ("txt", "srt", "vtt", "tsv", "json")
FORMATS = (*ALL_FORMATS, "rttm")
ALIASES = {"text": "txt"}


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(seg: dict) -> str:
    return f"[{seg['speaker']}] {seg['text']}" if seg.get("speaker") else seg["text"]


def to_srt(segments: list[dict]) -> str:
    cues = [f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{_cue_text(s)}\n"
            for i, s in enumerate(segments, 1)]
    return "\n".join(cues)


def to_vtt(segments: list[dict]) -> str:
    cues = [f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{_cue_text(s)}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_txt(segments: list[dict]) -> str:
    """One line per segment, as Whisper writes ``.txt`` (its speaker first where labelled)."""
    return "".join(_cue_text(s).strip() + "\n" for s in segments if s["text"].strip())


def to_tsv(segments: list[dict]) -> str:
    """Whisper's ``.tsv``: start and end in integer milliseconds, then the text (tabs and
    line breaks in it made spaces)."""
    rows = [f"{int(round(s['start'] * 1000))}\t{int(round(s['end'] * 1000))}\t"
            f"{' '.join(_cue_text(s).split())}\n" for s in segments]
    return "start\tend\ttext\n" + "".join(rows)


def to_rttm(segments: list[dict], uri: str) -> str:
    uri = "_".join(uri.split()) or "audio"
    return "".join(f"SPEAKER {uri} 1 {s['start']:.3f} {s['end'] - s['start']:.3f} <NA> <NA> "
                   f"{s.get('speaker') or 'SPEAKER_00'} <NA> <NA>\n" for s in segments)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2) + "\n"


def render(result: dict, fmt: str, uri: str = "audio") -> str:
    segments = result["segments"]
    writers = {"json": lambda: to_json(result), "srt": lambda: to_srt(segments),
               "vtt": lambda: to_vtt(segments), "rttm": lambda: to_rttm(segments, uri),
               "txt": lambda: to_txt(segments), "tsv": lambda: to_tsv(segments)}
    fmt = ALIASES.get(fmt, fmt)
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(writers)}")
    return writers[fmt]()


def formats_of(name: str, speakers: bool = False) -> tuple[str, ...]:
    """The formats ``--output-format NAME`` writes: one, or ``all`` (RTTM too with speakers)."""
    if name == "all":
        return (*ALL_FORMATS, "rttm") if speakers else ALL_FORMATS
    name = ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join((*FORMATS, 'all'))}")
    return (name,)


def write_outputs(result: dict, folder: str | Path, name: str, formats: tuple[str, ...],
                  uri: str | None = None) -> list[Path]:
    """``folder/name.<format>`` for each format (``name`` may hold sub-folders), each written
    under a temporary name and renamed into place: a file there is always a whole one."""
    written = []
    for fmt in formats:
        path = Path(folder) / f"{name}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(render(result, fmt, uri=uri or Path(name).name), encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


def to_summary(res: dict, name: str = "") -> str:
    """A few readable lines of an analysis: transcript, language, speech segments by
    speaker (the JSON has everything)."""
    lines = [f"{name} ({res.get('duration', 0):.1f} s)" if name else f"{res.get('duration', 0):.1f} s"]
    if res.get("language"):
        prob = res.get("language_probs", {}).get(res["language"])
        lines.append(f"language: {res['language']}" + (f" ({prob:.2f})" if prob is not None else ""))
    if res.get("decoder_language"):
        lines.append(f"language (decoder's token): {res['decoder_language']}")
    if res.get("intent"):
        lines.append(f"intent: {res['intent']}")
    if res.get("slu"):
        slots = "; ".join(f"{k} = {v}" for k, v in res["slu"]["slots"].items())
        lines.append(f"intent and slots (decoder): {res['slu']['intent']}" + (f" | {slots}" if slots else ""))
    lines.append(f"transcript: {res.get('text', '')}")
    if "translation" in res:
        source = f" (from {res['translation_from']})" if res.get("translation_from") else ""
        lines.append(f"translation{source}: {res['translation']}")
    segments = res.get("segments", [])
    if segments:
        lines.append("segments:")
        for s in segments:
            who = f"  {s['speaker']}" if s.get("speaker") else ""
            text = f"  {s['text']}" if s.get("text") else ""
            lines.append(f"  {s['start']:7.2f} - {s['end']:7.2f}{who}{text}")
    return "\n".join(lines)

