"""The encoder interface, its registry, and how a config's encoder options become an encoder.

The interface is split in two so the multi-task model can share the first k layers and
copy the rest per task (branched encoder, paper 1 Table 3):

    embed(inputs, lengths) -> (x [B, T, D], lengths)   front end, before the first layer
    layers: nn.ModuleList of blocks, each  block(x, pad_mask) -> x   (pad_mask True = padding)

Each encoder is one module that declares its ``Options`` (a pydantic model: the fields the
config's ``encoder:`` section may set, their defaults and checks), owns its input features
(``encoder.features``, a ``FeatureExtractor`` chosen from its options) and registers itself:

    @ENCODERS.register("name")
    class MyEncoder(Encoder):
        Options = MyOptions
        def __init__(self, **options): ...   # keyword arguments named as the option fields
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from ...config import ConfigError, EncoderConfig
from ...features import FeatureExtractor
from ...registry import Registry

ENCODERS = Registry("encoder")
# The option by which an encoder names pretrained weights it starts from (wav2vec2, whisper).
PRETRAINED = "pretrained"
# Every encoder's fields in the single EncoderConfig that checkpoints saved before options
# were per encoder (config.json) hold; these were in it from the first version on.
FLAT_LAYOUT_FIELDS = frozenset({"dim", "layers", "heads", "ff_mult", "conv_kernel", "dropout", "pretrained",
                                "w2v_config", "freeze_feature_extractor"})


class EncoderOptions(BaseModel):
    """Base of an encoder's options model. Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_flat_layout(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Options read from a checkpoint in the flat layout (FLAT_LAYOUT_FIELDS), already
        reduced to this model's fields: an encoder whose meaning of a missing field has
        changed since says here what those checkpoints meant."""
        return options


class Encoder(nn.Module, abc.ABC):
    """Base class. ``features`` computes what the encoder eats from the samples."""

    Options: ClassVar[type[EncoderOptions]] = EncoderOptions
    features: FeatureExtractor
    dim: int
    layers: nn.ModuleList
    frames_per_second: float
    max_input_seconds: float | None = None  # longer inputs are processed in windows

    @property
    def input_kind(self) -> str:
        return self.features.name

    def resolved_options(self) -> dict:
        """Options to store with a checkpoint so it rebuilds without the pretrained source
        (e.g. the full transformers config); empty when nothing to add."""
        return {}

    def source_options(self) -> dict:
        """Options for a head built from the same pretrained model (the Whisper decoder);
        empty for an encoder without one."""
        return {}

    @abc.abstractmethod
    def embed(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Front end: inputs and their lengths -> first-layer input and frame lengths."""

    def run_layer(self, layer: nn.Module, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return layer(x, pad_mask)


def encoder_options(config: EncoderConfig) -> EncoderOptions:
    """The options of ``config``'s encoder, checked by its options model; a ConfigError names
    the encoder and the option that does not fit."""
    options_model = ENCODERS.get(config.name).Options
    given = dict(config.model_extra or {})
    if FLAT_LAYOUT_FIELDS <= given.keys():
        # an old checkpoint's config: the other encoders' fields it holds never applied here
        given = options_model.from_flat_layout({k: v for k, v in given.items() if k in options_model.model_fields})
    try:
        return options_model.model_validate(given)
    except ValidationError as e:
        raise ConfigError(describe_errors(config.name, options_model, e)) from None


def describe_errors(name: str, options_model: type[EncoderOptions], error: ValidationError) -> str:
    problems = []
    for err in error.errors():
        option = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown option {option!r}")
        elif option:
            problems.append(f"option {option!r}: {err['msg']}")
        else:  # a check across options
            problems.append(str(err.get("ctx", {}).get("error", err["msg"])))
    accepted = ", ".join(sorted(options_model.model_fields)) or "none"
    return f"encoder {name}: {'; '.join(problems)} ({name} takes: {accepted}; any encoder: init_from)"


def build_encoder(config: EncoderConfig) -> tuple[Encoder, EncoderConfig]:
    """The encoder ``config`` names, and the config to save with it: every option of this
    encoder, with what it resolved (a pretrained model's full config), so that a checkpoint
    rebuilds anywhere without the pretrained source."""
    options = encoder_options(config)
    encoder = ENCODERS.get(config.name)(**dict(options))
    resolved = type(options).model_validate({**options.model_dump(), **encoder.resolved_options()})
    return encoder, EncoderConfig(name=config.name, init_from=config.init_from, **resolved.model_dump())


def without_weight_sources(config: EncoderConfig) -> EncoderConfig:
    """``config`` without a pretrained source or init_from: a checkpoint's own weights replace
    them (and they need not exist where it loads)."""
    return config.model_copy(update={k: None for k in (PRETRAINED, "init_from") if getattr(config, k, None)})


class FinalNorm(nn.Module):
    """The last layer followed by the encoder's final layer norm, so every branch copy of
    the last layer ends with it and a head reading layer -1 sees the normalised output."""

    def __init__(self, layer: nn.Module, norm: nn.LayerNorm):
        super().__init__()
        self.layer, self.norm = layer, norm

    def forward(self, x, attention_mask):
        return self.norm(self.layer(x, attention_mask))


def zero_after(x: torch.Tensor, lengths: torch.Tensor, time_dim: int = 1) -> torch.Tensor:
    """x [B, ...] with the frames from lengths[b] on (along ``time_dim``) set to 0: padding
    zeroed before a convolution, as it would be for the utterance alone."""
    keep = torch.arange(x.shape[time_dim], device=x.device)[None, :] < lengths[:, None]
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = x.shape[0], x.shape[time_dim]
    return x * keep.view(shape).to(x.dtype)


def additive_mask(pad_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, T] float mask, the dtype's minimum at padding: what every attention
    implementation of transformers takes."""
    mask = torch.zeros(pad_mask.shape, dtype=dtype, device=pad_mask.device)
    return mask.masked_fill(pad_mask, torch.finfo(dtype).min)[:, None, None, :]
