"""Encoder blocks written here because no installed library offers them without torchaudio.

Both take ``(x [B, T, D], pad_mask [B, T] True=padding)`` and return ``x``.
"""

from __future__ import annotations

import torch
from torch import nn


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float):
        # One dropout on the output only: on CPU each dropout call costs as much as a matmul.
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(),
                         nn.Linear(hidden, dim), nn.Dropout(dropout))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        h = self.norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        return self.dropout(h)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm with one group whose statistics cover the real frames only: plain GroupNorm
    would average the padding in, so an utterance's output would depend on its batch."""

    def __init__(self, channels: int):
        super().__init__(1, channels)

    def forward(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """h [B, C, T], keep [B, 1, T] (1.0 = real frame)."""
        n = (keep.sum(dim=(1, 2), keepdim=True) * h.shape[1]).clamp(min=1.0)
        mean = (h * keep).sum(dim=(1, 2), keepdim=True) / n
        var = (((h - mean) * keep) ** 2).sum(dim=(1, 2), keepdim=True) / n
        h = (h - mean) * torch.rsqrt(var + self.eps)
        return h * self.weight[None, :, None] + self.bias[None, :, None]


class ConvModule(nn.Module):
    """Pointwise-GLU, depthwise conv, norm, SiLU, pointwise (Gulati et al., 2020).

    GroupNorm over channels instead of BatchNorm: batch statistics would mix padding in.
    Padding is zeroed right before the depthwise convolution (the pointwise one's bias would
    otherwise leak into the last real frames) and left out of the norm's statistics.
    """

    def __init__(self, dim: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Conv1d(dim, 2 * dim, 1)
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.gn = MaskedGroupNorm(dim)
        self.pw2 = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        keep = (~pad_mask)[:, None, :].to(x.dtype)
        h = self.norm(x).transpose(1, 2)
        h = nn.functional.glu(self.pw1(h), dim=1) * keep
        h = self.pw2(nn.functional.silu(self.gn(self.dw(h), keep)))
        return self.dropout(h.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, conv_kernel: int = 15):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_dim, dropout)
        self.attn = SelfAttention(dim, heads, dropout)
        self.conv = ConvModule(dim, conv_kernel, dropout)
        self.ff2 = FeedForward(dim, ff_dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, pad_mask)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.attn = SelfAttention(dim, heads, dropout)
        self.ff = FeedForward(dim, ff_dim, dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, pad_mask)
        return x + self.ff(x)
