"""Typed configuration: YAML files plus dotted command-line overrides.

    polyhead train --config demo train.lr=3e-4 tasks.speaker.crop=3.0

A config names a corpus, an encoder, the tasks (each: a head, the label it learns, the
sets it trains on) and the training recipe. Unknown keys are errors, not silently ignored
(an encoder's options: when the model is built, by that encoder's options model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names which and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderConfig(BaseModel):
    """The encoder's name and its options, flat as in ``encoder: {name: whisper, pretrained:
    whisper-base}``. Each encoder checks its own options with its options model (model/encoders/)
    when it is built: this base floor cannot import the model floor above it."""

    model_config = ConfigDict(extra="allow")

    name: str = "conformer"  # a registered encoder: conformer | transformer | wav2vec2 | whisper | ...
    # A polyhead run or checkpoint folder whose encoder weights start this model (the fbank
    # encoders' stand-in for a pretrained wav2vec2; heads still start from scratch).
    init_from: str | None = None


class HeadConfig(Strict):
    type: str  # the task kind (tasks/): ctc | whisper_decoder | speaker | classifier | frame
    layer: int = -1  # encoder layer the head reads: 0 = front end output, -1 = last
    dims: tuple[int, int] | None = None  # explicit split: the slice of the width this head sees
    grad_reverse: float = 0.0  # > 0: adversarial head (gradient reversal with this scale)
    options: dict[str, Any] = Field(default_factory=dict)  # head-specific (pooling, emb_dim, ...)


class TaskConfig(Strict):
    head: HeadConfig
    # the label it learns: text | phonemes | speaker | language | intent | gender | vad; the
    # task kind says which it takes (a new kind may bring its own)
    target: str
    train_sets: list[str]  # corpus sets this task's batches come from (disjoint step)
    # a Whisper decoder's decoder_tasks (head option) that draw from other sets than
    # train_sets, e.g. {speakers: [conversations_dev], language: [speaker_train]}
    decoder_task_sets: dict[str, list[str]] = Field(default_factory=dict)
    dev_set: str | None = None
    crop: float | None = None  # random crop in seconds (speaker batches: 2, 3, 9, 10 in the papers)
    start_step: int = 0  # curriculum: the task joins at this step
    every: int = 1  # disjoint step: this task's batch comes every N steps (cheap auxiliary tasks)
    max_duration: float | None = None  # seconds of audio per batch; default train.max_duration
    # a voice-activity task only: this share of its training cuts are clips of non-speech made
    # when training starts (digital zeros, quiet noise, tones, chords; data/synth/nonspeech.py),
    # each twice the crop long, labelled not-speech throughout
    nonspeech: float = Field(default=0.0, ge=0.0, lt=1.0)


class WeightingConfig(Strict):
    name: str = "static"
    options: dict[str, Any] = Field(default_factory=dict)


class AggregatorConfig(Strict):
    name: str = "sum"
    options: dict[str, Any] = Field(default_factory=dict)


class RetentionConfig(Strict):
    """One forgetting-control strategy (training/retention.py): what keeps a fine-tuned model
    at least as good as its pretrained weights on what it never trained on."""

    name: str  # none | frozen | lora | distill | replay | interpolate
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Strict):
    step: Literal["joint", "disjoint"] = "disjoint"
    weighting: WeightingConfig = Field(default_factory=WeightingConfig)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    steps: int = 3000
    lr: float = 1e-3
    # multiples of lr by parameter-name prefix, e.g. {encoder: 0.05}: a pretrained encoder
    # fine-tunes slower than the heads that start from scratch
    lr_scales: dict[str, float] = Field(default_factory=dict)
    weight_decay: float = 0.0
    schedule: tuple[float, float, float] = (0.1, 0.4, 0.5)  # tri-stage: warm-up, constant, decay
    final_lr_scale: float = 0.05  # decay stage ends at lr * this (exponential)
    heads_only_steps: int = 0
    max_duration: float = 60.0  # seconds of audio per batch
    max_utterance: float = 20.0  # longer training utterances are skipped (with a count)
    clip_norm: float = 5.0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast needs no loss scaling
    # micro-batches per task per optimiser step: a batch larger than memory, or the global
    # batch of more ranks than are at hand (8 GPUs' on 4: accumulate 2)
    accumulate: int = Field(1, ge=1)
    compile: bool = False  # torch.compile the encoder layers (dynamic shapes)
    spec_augment: bool = True
    seed: int = 0
    eval_every: int = 500
    log_every: int = 25
    early_stop_patience: int = 0  # evaluations without improvement; 0 = off
    criterion: dict[str, float] = Field(default_factory=lambda: {"wer": 0.25, "eer": 0.75})
    max_bad_steps: int = 20  # non-finite steps in a row before rolling back
    temperature: float = 1.0  # sampling over a task's several train sets: p_i ~ D_i^(1/T)
    # sampling over a decoder head's decoder_tasks (their pools' seconds D_i), the same way
    task_temperature: float = 1.0
    # keep decoded features in memory (small corpora, CPU); auto (the default): only when the
    # train sets' features fit cache_budget_gb (training/loader.py); true caches whatever the size
    cache_features: bool | Literal["auto"] = "auto"
    cache_budget_gb: float = Field(2.0, ge=0)
    # DataLoader worker processes per task that decode, compute features and augment off the
    # training thread, each prefetch_factor batches ahead; 0: all on the training thread
    loader_workers: int = Field(0, ge=0)
    prefetch_factor: int = Field(2, ge=1)
    lazy_manifests: bool = False  # stream manifests from disk (corpora too large to hold as cuts)
    speed_perturb: list[float] = Field(default_factory=list)  # e.g. [0.9, 1.0, 1.1], one drawn per utterance
    time_budget_s: float | None = None  # stop after this wall time (demo budgets)
    # forgetting control, applied in order (e.g. distill during training, then interpolate)
    retention: list[RetentionConfig] = Field(default_factory=list)


class Config(Strict):
    corpus: str = "corpora/demo"
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    shared_layers: int | None = None  # None = all layers shared; k < layers = branched encoder
    tasks: dict[str, TaskConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)
    # Filled in from the training data when training starts; stored with the checkpoint so
    # a model loads without its corpus.
    vocab: dict[str, list[str]] = Field(default_factory=dict)


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    if value is DELETE:
        if keys[-1] not in node:
            raise ConfigError(f"override ~{dotted}: no such key")
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


DELETE = object()  # "~key.sub" removes a key, e.g. a task: ~tasks.speaker


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    parsed = []
    for item in overrides:
        if item.startswith("~"):
            parsed.append((item[1:].strip(), DELETE))
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({_first_line(e)})") from None
        parsed.append((key.strip(), value))
    return parsed


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def resolve_config_path(name_or_path: str, near: Path | None = None) -> Path:
    """A file path (first beside ``near``, the folder of the config naming it as its base),
    or the name of a bundled config (``demo``, ``paper/...``)."""
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    candidates = ([near / name_or_path] if near else []) + [Path(name_or_path), bundled]
    try:
        found = next((c for c in candidates if c.is_file()), None)
    except (OSError, ValueError) as e:  # a NUL byte, a name too long for the file system
        raise ConfigError(f"config {name_or_path!r}: not a usable path ({e})") from None
    if found is None:
        raise FileNotFoundError(f"config {name_or_path!r}: no such file, and no bundled config of that name "
                                f"in {CONFIG_DIR}")
    return found


def load_yaml_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """YAML with an optional ``base: other-config`` key that it overrides, key by key."""
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(tree).__name__}")
    base = tree.pop("base", None)
    if base in (None, ""):
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must name a config file or bundled config, got {base!r}")
    parent = load_yaml_tree(resolve_config_path(base, near=path.parent), (*_seen, path.resolve()))
    if names_another_encoder(parent, tree):
        parent.pop("encoder", None)  # its options belong to the base's encoder
    return merge(parent, tree)


def names_another_encoder(base: dict, over: dict) -> bool:
    """``over``'s encoder section names another encoder than ``base``'s."""
    named = encoder_section(over).get("name")
    return named is not None and named != encoder_section(base).get("name", EncoderConfig.model_fields["name"].default)


def encoder_section(tree: dict) -> dict:
    section = tree.get("encoder")
    return section if isinstance(section, dict) else {}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(name_or_path: str, overrides: list[str] = ()) -> Config:
    tree = load_yaml_tree(resolve_config_path(name_or_path))
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    return Config.model_validate(tree)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(config.model_dump_json(indent=2) + "\n")


def read_config_json(path: str | Path) -> Config:
    """A saved (resolved) config."""
    return Config.model_validate_json(Path(path).read_text())
