"""Long recordings in pieces: windows of whole speech segments (what a decoder learns
speaker turns on) and plain consecutive pieces (an encoder's input limit)."""

from __future__ import annotations

import math

import numpy as np

TIME_TOLERANCE_S = 1e-3  # manifests round times to 0.1 ms: a segment this far out is still inside
MIN_PIECE_S = 0.05  # a last piece shorter than this is dropped


def speaker_windows(cut, max_seconds: float) -> list:
    """A long recording as windows of whole speech segments, each at most ``max_seconds``
    from its first segment's start to its last one's end, cut only where no segment is
    under way (an overlap is never split). A stretch of overlapping segments longer than the
    limit is in no window. Ids are the recording's with the start in ms."""
    units, end = [], -math.inf  # runs of segments that overlap one another
    for s in sorted(cut.supervisions, key=lambda s: s.start):
        if not units or s.start >= end:
            units.append([])
        units[-1].append(s)
        end = max(end, s.end)
    windows, current = [], []
    for unit in units + [None]:
        if unit is not None and max(s.end for s in unit) - (current or unit)[0].start <= max_seconds:
            current += unit
            continue
        if current:
            windows.append(window_of(cut, current))
        current = unit if unit and max(s.end for s in unit) - unit[0].start <= max_seconds else []
    return windows


def window_of(cut, sups):
    """The part of ``cut`` from the first of ``sups`` to the end of the last, with the
    segments inside it."""
    start, end = sups[0].start, max(s.end for s in sups)
    w = cut.truncate(offset=start, duration=end - start, preserve_id=False)
    w = w.filter_supervisions(lambda s: s.start >= -TIME_TOLERANCE_S and s.end <= w.duration + TIME_TOLERANCE_S)
    return w.with_id(f"{cut.id}_{int(round(start * 1000)):07d}")


def pieces(cut, seconds: float | None) -> list:
    """The cut in consecutive pieces of at most ``seconds`` (an encoder's input limit)."""
    if not seconds or cut.duration <= seconds:
        return [cut]
    starts = np.arange(0.0, cut.duration, seconds)
    return [cut.truncate(offset=float(s), duration=float(min(seconds, cut.duration - s)), preserve_id=False)
            for s in starts if cut.duration - s > MIN_PIECE_S]
