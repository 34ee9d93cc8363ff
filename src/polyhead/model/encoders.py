"""Encoders: audio in, a stack of layers whose every output a head may read.

The interface is split in two so the multi-task model can share the first k layers and
copy the rest per task (branched encoder, paper 1 Table 3):

    embed(inputs, lengths) -> (x [B, T, D], lengths)   front end, before the first layer
    layers: nn.ModuleList of blocks, each  block(x, pad_mask) -> x   (pad_mask True = padding)

Each encoder owns its input features (``encoder.features``, a ``FeatureExtractor``).
``conformer`` / ``transformer`` read fbank and learn from scratch; ``wav2vec2`` is the
transformers model the papers fine-tune; ``whisper`` (whisper.py) is OpenAI's pretrained
encoder, the default.
"""

from __future__ import annotations

import abc
import contextlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio import SAMPLE_RATE
from ..features import N_MELS, FeatureExtractor, KaldiFbank, Waveform
from ..registry import Registry
from .blocks import ConformerBlock, TransformerBlock

ENCODERS = Registry("encoder")


class Encoder(nn.Module, abc.ABC):
    """Base class. ``features`` computes what the encoder eats from the samples."""

    features: FeatureExtractor
    dim: int
    layers: nn.ModuleList
    frames_per_second: float
    max_input_seconds: float | None = None  # longer inputs are processed in windows

    @property
    def input_kind(self) -> str:
        return self.features.name

    def resolved_options(self) -> dict:
        """EncoderConfig fields to store with a checkpoint so it rebuilds without the
        pretrained source (e.g. the full transformers config); empty when nothing to add."""
        return {}

    @abc.abstractmethod
    def embed(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Front end: inputs and their lengths -> first-layer input and frame lengths."""

    def run_layer(self, layer: nn.Module, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return layer(x, pad_mask)


class FinalNorm(nn.Module):
    """The last layer followed by the encoder's final layer norm, so every branch copy of
    the last layer ends with it and a head reading layer -1 sees the normalised output."""

    def __init__(self, layer: nn.Module, norm: nn.LayerNorm):
        super().__init__()
        self.layer, self.norm = layer, norm

    def forward(self, x, attention_mask):
        return self.norm(self.layer(x, attention_mask))


class ConvSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions: 100 fbank frames/s -> 25 encoder frames/s."""

    def __init__(self, n_mels: int, dim: int, channels: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU())
        self.proj = nn.Linear(channels * math.ceil(math.ceil(n_mels / 2) / 2), dim)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor):
        # Padding is zeroed before each convolution, as it would be for the utterance alone:
        # otherwise whatever follows an utterance in its batch leaks into its last frames.
        half = (lengths + 1) // 2
        x = self.conv[1](self.conv[0](_zero_after(feats.unsqueeze(1), lengths)))
        x = self.conv[3](self.conv[2](_zero_after(x, half)))  # [B, C, T/4, F/4]
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return x, (half + 1) // 2


def _zero_after(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, C, T, F] with the frames from lengths[b] on set to 0."""
    keep = torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]
    return x * keep[:, None, :, None].to(x.dtype)


def sinusoidal_positions(length: int, dim: int, device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class FbankEncoder(Encoder):
    frames_per_second = 25.0

    def __init__(self, block: type[nn.Module], dim: int = 192, layers: int = 6, heads: int = 4,
                 ff_mult: int = 4, dropout: float = 0.1, n_mels: int = N_MELS, **block_options):
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
def conformer(**options) -> FbankEncoder:
    return FbankEncoder(ConformerBlock, **options)


@ENCODERS.register("transformer")
def transformer(**options) -> FbankEncoder:
    options.pop("conv_kernel", None)
    return FbankEncoder(TransformerBlock, **options)


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(Encoder):
    """transformers' Wav2Vec2Model, run layer by layer.

    ``pretrained``: a local folder written by ``save_pretrained`` (no hub access here);
    otherwise random init from ``config`` overrides of Wav2Vec2Config (base by default).
    """

    def __init__(self, pretrained: str | None = None, config: dict | None = None,
                 freeze_feature_extractor: bool = True, normalize: bool | None = None, **_unused):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        if pretrained:
            # safetensors only: a pytorch_model.bin would be unpickled
            self.w2v = Wav2Vec2Model.from_pretrained(pretrained, use_safetensors=True, local_files_only=True,
                                                     **(config or {}))
        else:
            self.w2v = Wav2Vec2Model(Wav2Vec2Config(**(config or {})))
        if normalize is None:
            normalize = pretrained_normalizes(pretrained)
        self.features = Waveform(normalize)
        self.w2v.config.layerdrop = 0.0  # layers are run one by one; layerdrop is not applied
        if freeze_feature_extractor:
            self.w2v.freeze_feature_encoder()
        self.dim = self.w2v.config.hidden_size
        # The layers move out of the transformers module so the multi-task model can share
        # or branch them; w2v keeps the front end and positional convolution only.
        layers = list(self.w2v.encoder.layers)
        self.w2v.encoder.layers = nn.ModuleList()
        if self.w2v.config.do_stable_layer_norm:
            # pre-norm layers (large-lv60, XLS-R): the encoder norm follows the last layer
            layers[-1] = FinalNorm(layers[-1], self.w2v.encoder.layer_norm)
            del self.w2v.encoder.layer_norm
            self._register_load_state_dict_pre_hook(_refuse_norm_before_layers)
        self.layers = nn.ModuleList(layers)
        stride = math.prod(self.w2v.config.conv_stride)
        self.frames_per_second = SAMPLE_RATE / stride

    def resolved_options(self):
        # a large or stable-layer-norm model must not come back as base-sized
        return {"w2v_config": self.w2v.config.to_diff_dict(), "normalize_waveform": self.features.normalize}

    def embed(self, wave, lengths):
        enc = self.w2v.encoder
        feats = self.w2v.feature_extractor(wave).transpose(1, 2)
        x, _ = self.w2v.feature_projection(feats)
        out_lengths = self.w2v._get_feat_extract_output_lengths(lengths).long()
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= out_lengths[:, None]
        if self.training:
            x = self._mask_time(x, ~pad)
        x = x.masked_fill(pad[..., None], 0.0)
        x = x + enc.pos_conv_embed(x)
        if not self.w2v.config.do_stable_layer_norm:
            x = enc.layer_norm(x)
        return enc.dropout(x), out_lengths

    def _mask_time(self, x, valid):
        """wav2vec2's fine-tuning masks (config mask_time_prob / mask_time_length): spans of
        frames, within each utterance's length, replaced by the learned masked_spec_embed."""
        if x.shape[1] < self.w2v.config.mask_time_length:
            return x  # transformers refuses spans longer than the batch
        # transformers draws the spans from numpy's global generator; seeding it from torch's,
        # which the trainer seeds per step, keeps a resumed run's masks the same.
        with _numpy_seeded(int(torch.randint(2 ** 31 - 1, ()))):
            return self.w2v._mask_hidden_states(x, attention_mask=valid)

    def run_layer(self, layer, x, pad_mask):
        # An additive float mask works for every attention implementation transformers has.
        mask = torch.zeros(pad_mask.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(pad_mask, torch.finfo(x.dtype).min)[:, None, None, :]
        out = layer(x, attention_mask=mask)
        return out[0] if isinstance(out, tuple) else out


def pretrained_normalizes(pretrained: str | None) -> bool:
    """Whether the model expects zero-mean unit-variance waveforms, as its feature-extractor
    config says (do_normalize); True, transformers' default for wav2vec2, when there is none."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.utils import FEATURE_EXTRACTOR_NAME

    if pretrained and (Path(pretrained) / FEATURE_EXTRACTOR_NAME).is_file():
        return Wav2Vec2FeatureExtractor.from_pretrained(pretrained, local_files_only=True).do_normalize
    return True


def _refuse_norm_before_layers(state_dict, prefix, *_):
    if prefix + "w2v.encoder.layer_norm.weight" in state_dict:
        # saved before the norm followed the last layer: its weights learnt another model
        raise ValueError("this stable-layer-norm wav2vec2 checkpoint was trained with the encoder layer "
                         "norm before the layers, not after the last one as transformers places it; "
                         "train it again")


@contextlib.contextmanager
def _numpy_seeded(seed: int):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
