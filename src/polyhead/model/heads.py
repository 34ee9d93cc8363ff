"""Task heads. Each reads one encoder layer ``x [B, T, D]`` (optionally a slice of its
dimensions: the explicit split of paper 1) and owns its loss.

    ctc         characters or phonemes, greedy-decodable
    speaker     pooled embedding trained with AAM softmax; the embedding is the test output
    classifier  utterance label (language, intent, gender)
    frame       per-frame binary label (voice activity)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ctc import greedy_path
from ..registry import Registry
from .ecapa import EcapaTdnn

HEADS = Registry("head")
AAM_SCALE = 30.0
AAM_MARGIN_RAD = 0.2
POOLINGS = ("mean", "stats", "first", "ctc_blank", "ctc_nonblank", "ecapa")


@dataclass
class HeadInput:
    x: torch.Tensor  # [B, T, D]
    lengths: torch.Tensor  # [B]
    cls: torch.Tensor | None = None  # [B, D], the CLS position of the same layer
    blank: torch.Tensor | None = None  # [B, T] bool, CTC argmax == blank (no gradient)
    frames_per_second: float = 25.0


def pad_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """True where a frame is padding."""
    return torch.arange(t, device=lengths.device)[None, :] >= lengths[:, None]


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.to(x.dtype)[..., None]
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.scale * g, None


class Head(nn.Module):
    """Common front of every head: optional dimension slice and gradient reversal, then norm."""

    needs_cls = False
    needs_blank = False
    has_ctc = False  # gives CTC "logits" over the text vocabulary (index 0 = blank)
    reads_encoder_source = False  # built from the encoder's pretrained checkpoint too
    blank = False  # its classes are a CTC blank (index 0) and then the label vocabulary
    fixed_classes: int | None = None  # a size that does not come from a vocabulary

    @classmethod
    def classes(cls, vocab_size: int) -> int:
        """Size of its output over a label vocabulary of ``vocab_size`` entries."""
        return cls.fixed_classes if cls.fixed_classes is not None else vocab_size + int(cls.blank)

    def __init__(self, in_dim: int, dims: tuple[int, int] | None = None, grad_reverse: float = 0.0):
        super().__init__()
        self.dims = tuple(dims) if dims else None
        self.grad_reverse = grad_reverse
        self.width = (self.dims[1] - self.dims[0]) if self.dims else in_dim
        self.norm = nn.LayerNorm(self.width)

    def save_assets(self, folder) -> None:
        """Files besides the weights that a checkpoint needs to rebuild it (a tokenizer)."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims:
            x = x[..., self.dims[0]:self.dims[1]]
        if self.grad_reverse:
            x = _Reverse.apply(x, self.grad_reverse)
        return self.norm(x)


@HEADS.register("ctc")
class CTCHead(Head):
    """Linear projection to tokens; index 0 is the CTC blank."""

    has_ctc = True
    blank = True

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.1, **common):
        super().__init__(in_dim, **common)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(self.width, num_classes)

    def forward(self, inp: HeadInput) -> dict:
        logits = self.proj(self.dropout(self.prepare(inp.x)))
        return {"logits": logits, "lengths": inp.lengths}

    def loss(self, out: dict, target) -> torch.Tensor:
        ids, id_lengths = target.ids, target.lengths
        logp = out["logits"].float().log_softmax(-1).transpose(0, 1)
        # zero_infinity: an utterance too fast for the frame rate must not poison the batch
        return F.ctc_loss(logp, ids, out["lengths"], id_lengths, blank=0, zero_infinity=True)

    def transcribe(self, out: dict, vocab: list[str], **_options) -> list[str]:
        return ["".join(vocab[i - 1] for i in seq) for seq in self.greedy(out)]

    @staticmethod
    def greedy(out: dict) -> list[list[int]]:
        best = out["logits"].argmax(-1)
        return [[tok for _, tok in greedy_path(row[:n])] for row, n in zip(best.tolist(), out["lengths"].tolist())]


def aam_loss(num_classes: int, emb_dim: int, margin: float = AAM_MARGIN_RAD, scale: float = AAM_SCALE):
    from pytorch_metric_learning.losses import ArcFaceLoss

    # pytorch-metric-learning takes the margin in degrees
    return ArcFaceLoss(num_classes=num_classes, embedding_size=emb_dim,
                       margin=math.degrees(margin), scale=scale)


@HEADS.register("speaker")
class SpeakerHead(Head):
    """Pooling -> embedding; AAM softmax over training speakers.

    pooling: mean | stats (mean+std) | first (a CLS vector prepended to the encoder input) |
    ctc_blank / ctc_nonblank (mean over frames whose CTC argmax is / is not blank) |
    ecapa (ECAPA-TDNN on the chosen layer).
    """

    def __init__(self, in_dim: int, num_classes: int, pooling: str = "mean", emb_dim: int = 192,
                 margin: float = AAM_MARGIN_RAD, scale: float = AAM_SCALE, ecapa_channels: int = 256,
                 **common):
        super().__init__(in_dim, **common)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.needs_cls = pooling == "first"
        self.needs_blank = pooling.startswith("ctc_")
        if pooling == "ecapa":
            self.ecapa = EcapaTdnn(self.width, channels=ecapa_channels, emb_dim=emb_dim)
            self.proj = nn.Identity()
        else:
            pooled = 2 * self.width if pooling == "stats" else self.width
            # Batch norm before and after the projection (as x-vector/ECAPA heads do): pooled
            # encoder states share a large common component, and without removing it every
            # embedding starts nearly parallel (cosine ~0.99) and AAM training collapses.
            self.proj = nn.Sequential(nn.BatchNorm1d(pooled), nn.Linear(pooled, emb_dim), nn.BatchNorm1d(emb_dim))
        self.aam = aam_loss(num_classes, emb_dim, margin, scale) if num_classes > 0 else None

    def pool(self, inp: HeadInput) -> torch.Tensor:
        keep = ~pad_mask(inp.lengths, inp.x.shape[1])
        if self.pooling == "first":
            return self.prepare(inp.cls)
        x = self.prepare(inp.x)
        if self.pooling == "ecapa":
            return self.ecapa(x, keep)
        if self.needs_blank:
            sel = inp.blank if self.pooling == "ctc_blank" else ~inp.blank
            sel = sel & keep
            # an utterance with no selected frame falls back to all frames
            keep = torch.where(sel.any(1, keepdim=True), sel, keep)
        mean = masked_mean(x, keep)
        if self.pooling == "stats":
            var = masked_mean((x - mean[:, None]) ** 2, keep)
            return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)
        return mean

    def forward(self, inp: HeadInput) -> dict:
        return {"embedding": self.proj(self.pool(inp))}

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        return self.aam(out["embedding"].float(), target)

    def predict(self, out: dict) -> torch.Tensor:
        return self.aam.get_logits(out["embedding"].float()).argmax(-1)


@HEADS.register("classifier")
class ClassifierHead(Head):
    """Mean-pooled utterance classification (language, intent)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1, **common):
        super().__init__(in_dim, **common)
        self.mlp = nn.Sequential(nn.Linear(self.width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_classes))

    def forward(self, inp: HeadInput) -> dict:
        keep = ~pad_mask(inp.lengths, inp.x.shape[1])
        return {"logits": self.mlp(masked_mean(self.prepare(inp.x), keep))}

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        valid = target >= 0  # -1: this utterance has no such label
        if not valid.any():
            return out["logits"].sum() * 0.0
        return F.cross_entropy(out["logits"][valid].float(), target[valid])

    def predict(self, out: dict) -> torch.Tensor:
        return out["logits"].argmax(-1)


@HEADS.register("frame")
class FrameHead(Head):
    """Per-frame binary decision (voice activity); targets come at 100 frames/s."""

    TARGET_RATE = 100.0
    fixed_classes = 1

    def __init__(self, in_dim: int, num_classes: int = 1, **common):
        super().__init__(in_dim, **common)
        self.proj = nn.Linear(self.width, 1)
        # Logits come relative to the decision threshold (speech where > 0). It is 0 in
        # training; `polyhead evaluate` picks it on the dev set (calibration.json) and loading
        # a run for inference sets it: the head's raw logits are not calibrated.
        self.threshold = 0.0

    def forward(self, inp: HeadInput) -> dict:
        return {"logits": self.proj(self.prepare(inp.x)).squeeze(-1) - self.threshold, "lengths": inp.lengths,
                "frames_per_second": inp.frames_per_second}

    @classmethod
    def to_head_rate(cls, target: torch.Tensor, t: int, fps: float) -> torch.Tensor:
        """Pick the 100 Hz label at the centre of each encoder frame."""
        idx = ((torch.arange(t, device=target.device) + 0.5) * cls.TARGET_RATE / fps).long()
        return target[:, idx.clamp(max=target.shape[1] - 1)]

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        logits = out["logits"]
        labels = self.to_head_rate(target, logits.shape[1], out["frames_per_second"])
        keep = ~pad_mask(out["lengths"], logits.shape[1])
        return F.binary_cross_entropy_with_logits(logits[keep].float(), labels[keep].float())

    def predict(self, out: dict) -> torch.Tensor:
        return out["logits"] > 0
