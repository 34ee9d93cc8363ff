"""The multi-task model: one encoder (optionally branched after k layers) and task heads.

One forward pass computes only what the requested tasks need: the trunk up to the deepest
layer any of them reads, the branches they own, and their heads. A checkpoint is a folder
with ``config.json`` (the full Config, label vocabularies included) and
``model.safetensors``; ``MultiTaskModel.load(folder)`` rebuilds it in one call.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Config, read_config_json, save_config
from ..runs import BEST, CONFIG_FILE, TOKENIZER_DIR, WEIGHTS_FILE, checkpoint_folder
from .adapters import add_lora, lora_options
from .encoders import build_encoder, without_weight_sources
from .heads import HEADS, HeadInput, pad_mask

BRANCHES = "branches"  # the per-task layer copies: attribute and weight-name prefix
SHARED = "shared"


def num_classes(config: Config, task: str) -> int:
    """Size of a task's head output, given the label vocabularies stored in the config."""
    cfg = config.tasks[task]
    return HEADS.get(cfg.head.type).classes(len(config.vocab.get(cfg.target, [])))


class MultiTaskModel(nn.Module):
    def __init__(self, config: Config, assets: str | Path | None = None):
        """``assets``: a checkpoint folder whose head files (a tokenizer) replace the
        pretrained source's."""
        super().__init__()
        self.encoder, resolved = build_encoder(config.encoder)
        # the saved config holds what the encoder resolved (a pretrained model's full config)
        self.config = config = config.model_copy(update={"encoder": resolved})
        if config.encoder.init_from:
            # before the split below, so every branch copy starts from the pretrained layers too
            load_encoder_weights(self.encoder, config.encoder.init_from)
        layers = list(self.encoder.layers)
        self.num_layers = len(layers)
        k = self.num_layers if config.shared_layers is None else config.shared_layers
        if not 0 <= k <= self.num_layers:
            raise ValueError(f"shared_layers={k} must be between 0 and {self.num_layers}")
        self.shared_layers = k
        self.encoder.layers = nn.ModuleList(layers[:k])
        branched = k < self.num_layers
        # Each task owns a copy of the layers after the shared trunk (paper 1, Table 3).
        self.branches = nn.ModuleDict(
            {t: copy.deepcopy(nn.ModuleList(layers[k:])) for t in config.tasks} if branched else {})
        self.heads = nn.ModuleDict()
        for name, task in config.tasks.items():
            h = task.head
            self.heads[name] = HEADS.build(h.type, in_dim=self.encoder.dim,
                                           num_classes=num_classes(config, name),
                                           dims=h.dims, grad_reverse=h.grad_reverse,
                                           **self._head_options(h, assets))
        needs_cls = any(getattr(h, "needs_cls", False) for h in self.heads.values())
        self.cls = nn.Parameter(torch.randn(self.encoder.dim) * 0.02) if needs_cls else None
        # CTC-pooled speaker heads select frames by the argmax of this task's CTC head.
        self.blank_source = next((n for n in config.tasks if self.heads[n].has_ctc), None)
        lora = lora_options(config)
        if lora is not None:  # part of the structure: a checkpoint holds the adapters apart
            add_lora(self, **lora)

    def _head_options(self, head, assets) -> dict:
        options = dict(head.options)
        if HEADS.get(head.type).reads_encoder_source:
            for key, value in self.encoder.source_options().items():
                options.setdefault(key, value)
            if assets is not None and (Path(assets) / TOKENIZER_DIR).is_dir():
                options["tokenizer"] = str(Path(assets) / TOKENIZER_DIR)
        return options

    # --- structure ---------------------------------------------------------------------------

    def tasks_with(self, target: str | None = None, head_type: str | None = None) -> list[str]:
        """Names of the tasks with this target label and/or head type, in config order."""
        return [n for n, t in self.config.tasks.items()
                if (target is None or t.target == target) and (head_type is None or t.head.type == head_type)]

    def branch_of(self, task: str) -> str:
        return task if task in self.branches else SHARED

    def layer_index(self, task: str) -> int:
        i = self.config.tasks[task].head.layer
        i = self.num_layers + 1 + i if i < 0 else i
        if not 0 <= i <= self.num_layers:
            raise ValueError(f"task {task}: layer {self.config.tasks[task].head.layer} out of range 0..{self.num_layers}")
        return i

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's gradient flows into: front end, shared layers, CLS."""
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        return params + ([self.cls] if self.cls is not None else [])

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """GradNorm measures gradient norms here: the last layer all tasks go through."""
        block = self.encoder.layers[-1] if len(self.encoder.layers) else self.encoder
        return [p for p in block.parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
        return {"shared": count(self.encoder) + (self.cls.numel() if self.cls is not None else 0),
                "branches": count(self.branches), "heads": count(self.heads),
                "total": sum(p.numel() for p in self.parameters())}

    # --- forward -----------------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, tasks=None,
                freeze_encoder: bool = False, return_states: bool = False):
        """Run the encoder once and the heads of ``tasks`` (default: all).

        With ``return_states`` also returns the layer states the heads read, keyed by
        (branch, layer), so a caller can pool a head over parts of the same pass."""
        tasks = list(tasks or self.config.tasks)
        need_blank = any(self.heads[t].needs_blank for t in tasks) and self.blank_source
        if need_blank and self.blank_source not in tasks:
            tasks = tasks + [self.blank_source]
            extra = {self.blank_source}
        else:
            extra = set()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze_encoder):
            states, lens = self._encode(inputs, lengths, self._depths(tasks))
        outputs, blank = {}, None
        # CTC heads first, so CTC-pooled speaker heads can use their frame decisions.
        for task in sorted(tasks, key=lambda t: not self.heads[t].has_ctc):
            x = states[(self.branch_of(task), self.layer_index(task))]
            cls, x_heads = (x[:, 0], x[:, 1:]) if self.cls is not None else (None, x)
            inp = HeadInput(x_heads, lens, cls=cls, blank=blank,
                            frames_per_second=self.encoder.frames_per_second)
            if task in extra:
                with torch.no_grad():
                    outputs[task] = self.heads[task](inp)
            else:
                outputs[task] = self.heads[task](inp)
            if task == self.blank_source:
                blank = outputs[task]["logits"].detach().argmax(-1) == 0
        for t in extra:
            outputs.pop(t)
        return (outputs, states) if return_states else outputs

    def _depths(self, tasks) -> dict[str, int]:
        """Deepest layer each branch must compute for these tasks."""
        need: dict[str, int] = {}
        for t in tasks:
            need[self.branch_of(t)] = max(need.get(self.branch_of(t), 0), self.layer_index(t))
        return need

    def _encode(self, inputs, lengths, need: dict[str, int]):
        """Front end, trunk and branches up to the depths in ``need``; states keyed by
        (branch, layer), with layers up to the trunk shared by every branch."""
        x, lens = self.encoder.embed(inputs, lengths)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)
            lens_all = lens + 1
        else:
            lens_all = lens
        mask = pad_mask(lens_all, x.shape[1])
        k = self.shared_layers
        trunk_depth = min(k, max(need.values()))
        if any(b != SHARED and d > k for b, d in need.items()):
            trunk_depth = k
        states = {(SHARED, 0): x}
        for i in range(trunk_depth):
            x = self.encoder.run_layer(self.encoder.layers[i], x, mask)
            states[(SHARED, i + 1)] = x
        for branch, depth in need.items():
            for i in range(min(depth, k) + 1):
                states[(branch, i)] = states[(SHARED, i)]
            h = states[(SHARED, trunk_depth)]
            for i in range(k, depth):
                h = self.encoder.run_layer(self.branches[branch][i - k], h, mask)
                states[(branch, i + 1)] = h
        return states, lens

    def hidden_states(self, inputs, lengths, branch: str = SHARED) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's output along one branch (the layer-wise speaker probe uses this);
        for a branched model "shared" means the first task's branch."""
        if self.branches and branch not in self.branches:
            branch = next(iter(self.branches))
        states, lens = self._encode(inputs, lengths, {branch: self.num_layers})
        out = [states[(branch, i)] for i in range(self.num_layers + 1)]
        if self.cls is not None:
            out = [h[:, 1:] for h in out]
        return out, lens


    # --- checkpoints -------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write config.json + model.safetensors (atomically: temporary names, then rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp_cfg, tmp_w = folder / (CONFIG_FILE + ".tmp"), folder / (WEIGHTS_FILE + ".tmp")
        save_config(self.config, tmp_cfg)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(tmp_w), metadata={"format": "pt", "library": "polyhead"})
        for head in self.heads.values():
            head.save_assets(folder)
        tmp_w.replace(folder / WEIGHTS_FILE)
        tmp_cfg.replace(folder / CONFIG_FILE)

    @classmethod
    def load(cls, folder: str | Path, map_location: str = "cpu") -> "MultiTaskModel":
        folder = Path(folder)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: no {name}; not a polyhead checkpoint")
        config = read_config_json(folder / CONFIG_FILE)
        config = config.model_copy(update={"encoder": without_weight_sources(config.encoder)})
        model = cls(config, assets=folder)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=map_location))
        return model.eval()


def load_encoder_weights(encoder: nn.Module, source: str | Path) -> None:
    """Copy the encoder of a saved polyhead model (a checkpoint folder, or a run folder whose
    ``best/`` is used) into ``encoder``; the architectures must match exactly."""
    try:
        folder = checkpoint_folder(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"encoder.init_from={source}: no {WEIGHTS_FILE} there (nor in {BEST}/)") from None
    src = read_config_json(folder / CONFIG_FILE)
    weights = load_file(str(folder / WEIGHTS_FILE))
    if any(k.startswith(BRANCHES + ".") for k in weights):
        raise ValueError(f"encoder.init_from={source}: a branched model; start from an unbranched one")
    state = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"encoder.init_from={source}: its encoder ({src.encoder.name}) does not fit this one: "
                         f"{e}") from None
