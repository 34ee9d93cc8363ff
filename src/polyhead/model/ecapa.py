"""A compact ECAPA-TDNN (Desplanques et al., 2020) to put on any encoder layer.

Written here because SpeechBrain's does not import without torchaudio. Channel widths are a
parameter: 512-1024 in the paper, 256 keeps it cheap on top of a pretrained encoder.
"""

from __future__ import annotations

import torch
from torch import nn


class SEBlock(nn.Module):
    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, bottleneck), nn.ReLU(), nn.Linear(bottleneck, channels), nn.Sigmoid())

    def forward(self, x, keep):
        s = (x * keep).sum(-1) / keep.sum(-1).clamp(min=1.0)
        return x * self.fc(s)[..., None]


class Res2Block(nn.Module):
    """1x1 conv, Res2Net dilated convs over channel groups, 1x1 conv, squeeze-excitation."""

    def __init__(self, channels: int, dilation: int, scale: int = 8, kernel: int = 3):
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.inp = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.BatchNorm1d(channels))
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, width, kernel, dilation=dilation, padding=dilation * (kernel // 2)),
                          nn.ReLU(), nn.BatchNorm1d(width)) for _ in range(scale - 1))
        self.out = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.BatchNorm1d(channels))
        self.se = SEBlock(channels)

    def forward(self, x, keep):
        # padding zeroed before every dilated convolution, so it never reaches real frames
        h = self.inp(x) * keep
        parts = list(h.chunk(self.scale, dim=1))
        y, prev = [parts[0]], None
        for conv, part in zip(self.convs, parts[1:]):
            prev = conv(part if prev is None else part + prev) * keep
            y.append(prev)
        return x + self.se(self.out(torch.cat(y, dim=1)), keep)


class AttentiveStatsPool(nn.Module):
    def __init__(self, channels: int, attention: int = 128):
        super().__init__()
        self.att = nn.Sequential(nn.Conv1d(channels, attention, 1), nn.Tanh(), nn.Conv1d(attention, channels, 1))

    def forward(self, x, keep):
        w = self.att(x).masked_fill(~keep.bool(), float("-inf")).softmax(-1)
        mean = (w * x).sum(-1)
        std = ((w * x * x).sum(-1) - mean ** 2).clamp(min=1e-6).sqrt()
        return torch.cat([mean, std], dim=1)


class EcapaTdnn(nn.Module):
    def __init__(self, in_dim: int, channels: int = 256, emb_dim: int = 192):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_dim, channels, 5, padding=2), nn.ReLU(), nn.BatchNorm1d(channels))
        self.blocks = nn.ModuleList(Res2Block(channels, d) for d in (2, 3, 4))
        self.mfa = nn.Sequential(nn.Conv1d(3 * channels, 3 * channels, 1), nn.ReLU())
        self.pool = AttentiveStatsPool(3 * channels)
        self.out = nn.Sequential(nn.BatchNorm1d(6 * channels), nn.Linear(6 * channels, emb_dim))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], keep [B, T] (True = real frame) -> [B, emb_dim]."""
        keep = keep[:, None, :].to(x.dtype)
        h = self.stem(x.transpose(1, 2) * keep) * keep
        outs = []
        for block in self.blocks:
            h = block(h, keep) * keep
            outs.append(h)
        h = self.mfa(torch.cat(outs, dim=1))
        return self.out(self.pool(h, keep))
