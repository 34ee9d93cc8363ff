"""A transformers Whisper folder into polyhead modules: the encoder and the decoder head both
start from the same folder, found by path or by catalogue name."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from .catalogue import WEIGHTS_FILE, resolve


def whisper_folder(pretrained: str) -> Path:
    """A local transformers Whisper folder, or a catalogue name installed by
    ``polyhead models install`` (installed on first use)."""
    path = Path(pretrained)
    if (path / WEIGHTS_FILE).is_file() and (path / "config.json").is_file():
        return path
    return resolve(pretrained)


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
    weights = load_file(str(whisper_folder(pretrained) / WEIGHTS_FILE))
    state = {}
    for name, value in weights.items():
        name = name[len("model."):] if name.startswith("model.") else name
        if name.startswith(part + "."):
            state[name[len(part) + 1:]] = value
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{pretrained}: the Whisper {part} weights do not fit "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
