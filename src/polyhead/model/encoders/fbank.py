"""Encoders learnt from scratch on Kaldi fbank: a conv front end (4x subsampling, 25 frames/s),
sinusoidal positions, then conformer or transformer blocks."""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import nn

from ...features import N_MELS, KaldiFbank
from ..blocks import ConformerBlock, TransformerBlock
from .base import ENCODERS, Encoder, EncoderOptions, zero_after

FRAMES_PER_SECOND = 25.0  # 100 fbank frames/s after two stride-2 convolutions
SUBSAMPLING_CHANNELS = 64
POSITION_BASE = 10000.0  # of the sinusoidal position table, as in "Attention is all you need"


class FbankOptions(EncoderOptions):
    dim: int = Field(192, gt=0)
    layers: int = Field(6, ge=0)
    heads: int = Field(4, gt=0)
    ff_mult: int = Field(4, gt=0)  # feed-forward width = ff_mult * dim
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def heads_split_the_width(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")
        return self


class ConformerOptions(FbankOptions):
    conv_kernel: int = Field(15, gt=0)


class ConvSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions: 100 fbank frames/s -> 25 encoder frames/s."""

    def __init__(self, n_mels: int, dim: int, channels: int = SUBSAMPLING_CHANNELS):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU())
        self.proj = nn.Linear(channels * math.ceil(math.ceil(n_mels / 2) / 2), dim)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        # Padding is zeroed before each convolution, as it would be for the utterance alone:
        # otherwise whatever follows an utterance in its batch leaks into its last frames.
        half = (lengths + 1) // 2
        x = self.conv[1](self.conv[0](zero_after(feats.unsqueeze(1), lengths, time_dim=2)))
        x = self.conv[3](self.conv[2](zero_after(x, half, time_dim=2)))  # [B, C, T/4, F/4]
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return x, (half + 1) // 2


def sinusoidal_positions(length: int, dim: int, device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(POSITION_BASE) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class FbankEncoder(Encoder):
    frames_per_second = FRAMES_PER_SECOND

    # the defaults are the options model's
    def __init__(self, block: type[nn.Module], *, dim: int, layers: int, heads: int, ff_mult: int,
                 dropout: float, n_mels: int = N_MELS, **block_options):
        super().__init__()
        self.features = KaldiFbank(n_mels)
        self.dim = dim
        self.subsample = ConvSubsampling(n_mels, dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            [block(dim, heads, ff_mult * dim, dropout, **block_options) for _ in range(layers)])

    def embed(self, feats, lengths):
        x, lengths = self.subsample(feats, lengths)
        x = x + sinusoidal_positions(x.shape[1], self.dim, x.device)
        return self.dropout(x), lengths


@ENCODERS.register("conformer")
class ConformerEncoder(FbankEncoder):
    Options = ConformerOptions

    def __init__(self, **options):
        super().__init__(ConformerBlock, **options)


@ENCODERS.register("transformer")
class TransformerEncoder(FbankEncoder):
    Options = FbankOptions

    def __init__(self, **options):
        super().__init__(TransformerBlock, **options)
