"""``frame``: a per-frame binary decision (voice activity), learnt from 100 Hz labels made
from the speech segments and scored by frame F1 on long recordings. The pipeline gates the
decoder on it and turns its logits into segments (``inference/pipeline.py``)."""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics
from ..data.batching import Rows
from ..model.heads import FrameHead
from .base import TASK_KINDS, TaskKind, predict_windows

LABEL_RATE = FrameHead.TARGET_RATE  # labels per second
VAD_SET_PREFIXES = ("vad", "conversations")  # test sets of long recordings with segments
VAD_THRESHOLDS = np.arange(-4.0, 6.01, 0.25)  # logit thresholds tried on the dev set


@TASK_KINDS.register("frame")
class FrameKind(TaskKind):
    head_class = FrameHead
    targets = ("vad",)
    outputs = (("logits", "logits"),)
    per_frame = True
    detects_speech = True
    answer_rank = 90

    def vocab(self, cuts_of) -> dict:
        return {}

    def check_cut(self, cut, vocab: dict) -> str | None:
        return None  # any recording: where no segment is, is no speech

    def collate(self, cuts: list, rows: Rows) -> torch.Tensor:
        """Speech (1) or not per 10 ms of each row's crop, 0 over its padding."""
        frames = int(float(rows.lengths.max()) * LABEL_RATE / rows.rate) + 1
        out = torch.zeros(len(cuts), frames)
        for i, (c, off) in enumerate(zip(cuts, rows.offsets)):
            dur = float(rows.lengths[i]) / rows.rate
            segs = [(s.start - off, s.end - off) for s in c.supervisions]
            out[i, :] = torch.from_numpy(metrics.segments_to_frames(segs, frames / LABEL_RATE)[:frames]
                                         .astype(np.float32))
            out[i, int(dur * LABEL_RATE):] = 0.0
        return out

    def evaluate(self, model, corpus, set_name: str, cuts, limit=None, **calibration) -> dict[str, dict]:
        if not set_name.startswith(VAD_SET_PREFIXES):
            return {}
        return {self.name: evaluate_vad(model, cuts, self.name)}


def vad_frames(model, cuts, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference speech, head logits) per 10 ms frame over ``cuts``, concatenated."""
    refs, logits = [], []
    fps = model.encoder.frames_per_second
    for cut, pieces in predict_windows(model, cuts, task):
        x = torch.cat(pieces).float().cpu().numpy()
        n = int(round(cut.duration * LABEL_RATE))
        idx = np.minimum((np.arange(n) * fps / LABEL_RATE).astype(int), len(x) - 1)
        logits.append(x[idx])
        refs.append(metrics.segments_to_frames([(s.start, s.end) for s in cut.supervisions], cut.duration)[:n])
    return np.concatenate(refs), np.concatenate(logits)


def evaluate_vad(model, cuts, task: str) -> dict:
    """Frame F1 at the head's decision threshold (speech where its logit > 0)."""
    refs, logits = vad_frames(model, cuts, task)
    return metrics.frame_f1(refs, logits > 0)


def vad_threshold(model, cuts, task: str) -> tuple[float, float]:
    """(logit threshold of best frame F1 on ``cuts``, that F1); ties go to the one nearest 0."""
    refs, logits = vad_frames(model, cuts, task)
    scored = [(metrics.frame_f1(refs, logits > t)["f1"], -abs(t), float(t)) for t in VAD_THRESHOLDS]
    f1, _, t = max(scored)
    return t, float(f1)
