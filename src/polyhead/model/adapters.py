"""Low-rank adapters (LoRA, through ``peft``) on the pretrained encoder and decoder.

The adapters are part of the model's structure: a config whose ``train.retention`` holds a
``lora`` entry builds them, so a checkpoint (adapters kept apart from the frozen weights) reloads
and resumes as it was saved. ``merge_lora`` folds them into the weights they adapt, for export
and for serving at the original speed.
"""

from __future__ import annotations

import re

from torch import nn

LORA = "lora"
DEFAULT_RANK = 8
DEFAULT_ALPHA = 16
# Whisper's attention and feed-forward projections, in the encoder and in the decoder head
ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
FEED_FORWARD = ("fc1", "fc2")
PARTS = {"encoder": r"(encoder|branches\.\w+)\.layers\.\d+(\.layer)?",
         "decoder": r"heads\.\w+\.decoder\.layers\.\d+"}


def lora_options(config) -> dict | None:
    """The ``lora`` entry's options in ``config.train.retention``, or None."""
    for entry in config.train.retention:
        if entry.name == LORA:
            return dict(entry.options)
    return None


def target_pattern(parts=("encoder", "decoder"), modules=ATTENTION + FEED_FORWARD) -> str:
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"lora: unknown parts {sorted(unknown)}; choose from {sorted(PARTS)}")
    where = "|".join(PARTS[p] for p in parts)
    return rf"^({where})\.(self_attn|encoder_attn)?\.?({'|'.join(modules)})$"


def add_lora(model: nn.Module, rank: int = DEFAULT_RANK, alpha: int = DEFAULT_ALPHA, dropout: float = 0.0,
             parts=("encoder", "decoder"), modules=ATTENTION + FEED_FORWARD, **_strategy_options) -> int:
    """Wrap every matching linear layer of ``model`` with a LoRA adapter (in place); returns
    how many layers were wrapped. The adapters start at zero: the model is unchanged."""
    from peft import LoraConfig, inject_adapter_in_model

    pattern = target_pattern(tuple(parts), tuple(modules))
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.match(pattern, n)]
    if not names:
        raise ValueError(f"lora: no linear layer matches {pattern!r}")
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names), model)
    return len(names)


def is_adapter_parameter(name: str) -> bool:
    return ".lora_" in name


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base layer and put the plain layer back; returns how many.
    The merged model's state dict has the names of a model without adapters."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged


def without_lora(config):
    """The config of the merged model: no lora entry, so it builds without adapters."""
    kept = [r for r in config.train.retention if r.name != LORA]
    return config.model_copy(update={"train": config.train.model_copy(update={"retention": kept})})
