"""The training loop: joint or disjoint steps, loss weighting, gradient aggregation.

Joint step (paper 2): one batch that carries every label, one forward pass, every head.
Disjoint step (papers 1 and 2): one batch per task, one forward pass each; the gradients of
the shared parameters are combined. Either way the per-task objectives come from the loss
weighting strategy, and, when an aggregator other than ``sum`` is chosen, each task's
gradient on the shared parameters is kept apart and combined by it (PCGrad, CAGrad, ...).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import DELETE, Config, ConfigError, parse_overrides, read_config_json, save_config, set_dotted
from ..data.batching import BatchStream, FeatureCache
from ..data.corpus import available_sets
from ..data.manifests import malformed_lines
from ..evaluation.evaluate import criterion
from ..model import MultiTaskModel
from ..model.adapters import LORA, is_adapter_parameter
from ..objectives import AGGREGATORS, WEIGHTINGS
from ..runs import BEST, CONFIG_FILE, LAST, WEIGHTS_FILE
from ..tasks import collator, task_kinds
from . import checkpoint as ckpt
from .cuts import build_vocab, training_cuts
from .distributed import Distributed
from .loader import cache_enabled, make_stream
from . import teachers  # noqa: F401 - registers the teacher strategies (speaker_teacher, vad_teacher)
from .retention import build as build_retention
from .schedule import tri_stage

log = logging.getLogger(__name__)
MAX_ROLLBACKS = 3
ROLLBACK_LR_FACTOR = 0.5
# The schedule is fitted to train.time_budget_s after the first steps, then again every
# BUDGET_REFIT_EVERY steps until the decay starts: the first epoch also decodes audio (slower),
# and tasks that join later (tasks.X.start_step) make later steps dearer than the first ones.
BUDGET_FIRST_PROBE = 20
BUDGET_REFIT_EVERY = 100
EVAL_TIME_SHARE = 0.08  # share of a time budget reserved for dev evaluations
DEV_LIMIT = 200  # dev utterances decoded per evaluation: enough to rank checkpoints, cheap
# Overrides that may come with --resume: they steer how long and how often, not what is
# trained, so the checkpoint's model, data and optimiser state still fit the config.
RESUME_SAFE = ("train.steps", "train.eval_every", "train.log_every", "train.time_budget_s",
               "train.early_stop_patience", "train.max_bad_steps",
               "train.loader_workers", "train.prefetch_factor",  # where batches are made, not what
               # more micro-batches keep the batch of a run resumed on fewer ranks; compiled
               # layers compute what the eager ones do
               "train.accumulate", "train.compile")


class TrainingDiverged(RuntimeError):
    pass


def param_groups(model, lr: float, scales: dict[str, float]) -> list[dict]:
    """One optimiser group per learning rate: ``scales`` maps parameter-name prefixes
    (``encoder``, ``heads.asr.decoder``) to multiples of ``lr``, the longest prefix winning,
    so pretrained parts can move slower than heads that start from scratch. A branched
    encoder's task copies (``branches.<task>...``) are encoder layers too: they also answer
    to ``encoder.branches.<task>...`` and so to ``encoder``."""
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_adapter_parameter(name):  # new parameters, like a head's: their own scale (key "lora")
            groups.setdefault(scales.get(LORA, 1.0), []).append(p)
            continue
        names = (name, f"encoder.{name}") if name.startswith("branches.") else (name,)
        match = max((k for k in scales for n in names if n == k or n.startswith(k + ".")), key=len, default=None)
        groups.setdefault(scales[match] if match else 1.0, []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in sorted(groups.items(), reverse=True)]


def compile_layers(model: MultiTaskModel, device: torch.device) -> bool:
    """``train.compile``: every encoder layer (trunk and branch copies) compiled in place
    (``nn.Module.compile``: parameter names, hence checkpoints, stay as they are) with
    dynamic shapes, as every batch has its own length. A tiny function is compiled first:
    where torch.compile cannot run (no C++ compiler for inductor on CPU, no triton on a
    GPU, a Python version dynamo does not support) training goes on uncompiled, with a
    warning, instead of failing inside the first step."""
    try:
        probe = torch.compile(lambda x: torch.nn.functional.silu(x) * 2.0, dynamic=True)
        probe(torch.ones(4, device=device))
    except Exception as e:  # noqa: BLE001 - whatever the backend raises, the answer is "not here"
        reason = (str(e).strip().splitlines() or [""])[0]
        log.warning("train.compile: torch.compile does not work here (%s: %s); the encoder layers run "
                    "uncompiled", type(e).__name__, reason)
        return False
    for layers in [model.encoder.layers, *model.branches.values()]:
        for layer in layers:
            layer.compile(dynamic=True)
    return True


def resume_config(saved: Config, overrides: Sequence[str]) -> Config:
    """A resumed run's saved config with the ``overrides`` given with --resume applied, each
    logged; a key outside RESUME_SAFE raises ConfigError (a ValueError) naming it."""
    tree = saved.model_dump(mode="json")
    for key, value in parse_overrides(list(overrides)):
        if key not in RESUME_SAFE:
            raise ConfigError(
                f"override {key!r} cannot change when a run resumes: the checkpoint's model, data and "
                f"optimiser state were made without it. With --resume only {', '.join(RESUME_SAFE)} "
                f"can change; start a new run folder to change {key}")
        section, name = key.split(".")
        log.warning("resuming: %s %r -> %r", key, tree[section].get(name),
                    "(default)" if value is DELETE else value)
        set_dotted(tree, key, value)
    return Config.model_validate(tree)


class Trainer:
    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False,
                 progress: bool = True, on_error: str = "skip", resume_overrides: Sequence[str] = ()):
        """``resume_overrides``: the dotted overrides given with ``resume``, applied onto the
        run's saved config (``config`` carries them already when there is nothing to resume)."""
        self.run_dir = Path(run_dir)
        self.dist = Distributed()
        self.device = self.dist.device()
        self.progress = progress and self.dist.is_main
        if resume:
            if self.dist.is_main:  # leftovers of a write a crash cut short; the other ranks wait
                ckpt.recover(self.run_dir)
            self.dist.barrier()
        resume_from = ckpt.find_resumable(self.run_dir) if resume else None
        if resume and resume_from is None:
            log.warning("%s: nothing to resume, starting fresh", self.run_dir)
        if resume_from is not None:
            config = resume_config(read_config_json(resume_from / CONFIG_FILE), resume_overrides)
        elif not config.vocab:
            config = config.model_copy(update={"vocab": build_vocab(config)})
        self.config, tc = config, config.train
        self.tasks = list(config.tasks)
        torch.manual_seed(tc.seed)
        self.model = MultiTaskModel(config).to(self.device)
        self.config = config = self.model.config  # with what the encoder resolved
        self.kinds = {k.name: k for k in task_kinds(config)}
        self.dist.broadcast_parameters(self.model)
        if tc.compile:
            compile_layers(self.model, self.device)
        self.weighting = WEIGHTINGS.build(tc.weighting.name, self.tasks, **tc.weighting.options).to(self.device)
        self.aggregator = AGGREGATORS.build(tc.aggregator.name, **tc.aggregator.options)
        self.optimizer = torch.optim.Adam(
            param_groups(self.model, tc.lr, tc.lr_scales) + [{"params": list(self.weighting.parameters())}],
            lr=tc.lr, weight_decay=tc.weight_decay)
        self.lr_scale = 1.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.cache = FeatureCache(self.model.encoder.features, enabled=cache_enabled(config, self.model.encoder.features))
        self.streams = self._streams(on_error)
        # forgetting control (retention.py). What a strategy freezes here gets no gradient, so
        # the optimiser built above never moves it.
        self.retention = build_retention(config)
        for strategy in self.retention:
            strategy.setup(self)
        self._retention_terms: dict[str, float] = {}
        self.step, self.best, self.bad_steps, self.skipped_steps, self.rollbacks = 0, math.inf, 0, 0, 0
        self.evals_since_best, self.history = 0, []
        self._budget_mark, self._configured_steps, self._eval_seconds = None, None, 0.0
        # Training seconds of earlier runs of this one (resumed), and when fit() started: the
        # time budget counts all of them.
        self._seconds_before, self._start = 0.0, None
        self.seconds_seen = {t: 0.0 for t in self.tasks}
        self.best_step = None  # the step whose model best/ holds
        if resume_from is not None:
            self._restore(resume_from)
            self.best_step = ckpt.read_state(resume_from).get("best_step")
            if self.dist.is_main:  # a crash between the last/ and best/ writes
                ckpt.repair_best(self.run_dir, resume_from, self.model)
        self.writer = None
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / CONFIG_FILE)

    # --- set-up ------------------------------------------------------------------------------

    def _lr_lambda(self, step: int) -> float:
        tc = self.config.train
        return self.lr_scale * tri_stage(step, tc.steps, tc.schedule, tc.final_lr_scale)

    def _streams(self, on_error: str) -> dict[str, BatchStream]:
        tc = self.config.train
        mk = lambda cuts, kinds, crop, max_dur, seed: make_stream(  # noqa: E731
            tc, cuts, collator(kinds, self.cache, crop=crop, spec_augment=tc.spec_augment,
                               speed_perturb=tc.speed_perturb),
            max_dur, seed, crop=crop, rank=self.dist.rank, world_size=self.dist.world_size)
        if tc.step == "joint":
            # One stream over utterances usable by every task (all labels present).
            per_task = {t: {c.id: c for c in training_cuts(self.config, t, on_error)} for t in self.tasks}
            common = set.intersection(*(set(ids) for ids in per_task.values()))
            if not common:
                raise ValueError("joint step: no training utterance carries the labels of every task")
            from lhotse import CutSet

            first = per_task[self.tasks[0]]
            cuts = CutSet.from_cuts(first[i] for i in sorted(common))
            return {"joint": mk(cuts, [self.kinds[t] for t in self.tasks], None, tc.max_duration, tc.seed)}
        return {t: mk(training_cuts(self.config, t, on_error), [self.kinds[t]], task.crop,
                      task.max_duration or tc.max_duration, tc.seed + i)
                for i, (t, task) in enumerate(self.config.tasks.items())}

    # --- one step ----------------------------------------------------------------------------

    def _autocast(self):
        p = self.config.train.precision
        if p == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def active_tasks(self, step: int) -> list[str]:
        tasks = self.config.tasks
        return [t for t in self.tasks if tasks[t].start_step <= step
                and (self.config.train.step == "joint" or (step - tasks[t].start_step) % tasks[t].every == 0)]

    def compute_losses(self, step: int, micro: int = 0) -> tuple[dict[str, torch.Tensor], float]:
        """The losses of micro-batch ``micro`` of ``step``: one forward for the joint batch or
        one per active task. Only the forward runs under autocast; the losses are computed in
        fp32 from its outputs (AAM softmax's cosine logits in bf16 would be coarser than its
        margin)."""
        tc = self.config.train
        active = self.active_tasks(step)
        freeze = step < tc.heads_only_steps
        # the batches' crop and augmentation draws are keyed by micro-step, so the micro-batches
        # of one step draw apart; with accumulate=1 the key is the step, as it always was
        key = step * tc.accumulate + micro
        losses, seconds = {}, 0.0
        self._padding = []
        if tc.step == "joint":
            b = self.streams["joint"].next(key).to(self.device)
            self._padding.append(b.padding_fraction)
            with self._autocast():
                out = self.model(b.inputs, b.lengths, active, freeze_encoder=freeze)
            for t in active:
                losses[t] = self._with_retention(t, out, b, self._loss(t, out, b))
                self.seconds_seen[t] += b.seconds
            seconds = b.seconds
        else:
            for t in active:
                b = self.streams[t].next(key).to(self.device)
                self._padding.append(b.padding_fraction)
                with self._autocast():
                    out = self.model(b.inputs, b.lengths, [t], freeze_encoder=freeze)
                losses[t] = self._with_retention(t, out, b, self._loss(t, out, b))
                self.seconds_seen[t] += b.seconds
                seconds += b.seconds
        return losses, seconds

    def _loss(self, task: str, out: dict, batch) -> torch.Tensor:
        kind = self.kinds[task]
        return kind.loss(self.model.heads[task], out[task], batch.targets[kind.target])

    def _with_retention(self, task: str, out: dict, batch, loss: torch.Tensor) -> torch.Tensor:
        """The task's loss plus the terms its forgetting-control strategies add (logged apart)."""
        for strategy in self.retention:
            for name, term in strategy.extra_loss(self, task, out, batch).items():
                loss = loss + term
                self._retention_terms[f"retention/{name}"] = float(term.detach())
        return loss

    def train_step(self) -> dict:
        """One optimiser step over ``train.accumulate`` micro-batches per task.

        Each micro-batch's objectives weigh 1/accumulate, as each rank's batch weighs
        1/world_size, so the update is that of one batch made of the micro-batches (exactly,
        for losses that average over utterances, when the micro-batches hold equally many).
        The gradients an aggregator combines, and those the ranks average (once per step),
        are the ones summed over every micro-batch.
        """
        tc = self.config.train
        step = self.step
        torch.manual_seed(tc.seed * 1_000_003 + step)  # dropout: reproducible across resumes
        self.model.train()
        freeze = step < tc.heads_only_steps
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # every micro-batch of a step has the same active tasks, hence the same path
        surgery = tc.aggregator.name != "sum" and len(self.active_tasks(step)) >= 2 and not freeze
        shared = self.model.shared_parameters() if surgery else []
        per_task: dict[str, list] = {}
        totals: dict[str, torch.Tensor] = {}
        seconds, padding = 0.0, []
        for micro in range(tc.accumulate):
            losses, micro_seconds = self.compute_losses(step, micro)
            seconds += micro_seconds
            padding += self._padding
            # GradNorm moves its weights once per optimiser step, from the first micro-batch
            last_shared = None if freeze or micro else self.model.last_shared_parameters()
            objectives = {t: o / tc.accumulate for t, o in self.weighting(losses, step, last_shared).items()}
            if surgery:
                self._task_gradients(objectives, shared, per_task)
            else:
                sum(objectives.values()).backward()
            for t, v in losses.items():
                totals[t] = totals[t] + v.detach() if t in totals else v.detach()
        losses = {t: v / tc.accumulate for t, v in totals.items()}
        task_weights = None
        if surgery:
            task_weights = self._aggregate(per_task, shared, params)
        else:
            self.dist.average_grads(params)
        finite = all(torch.isfinite(v).all() for v in losses.values())
        norm = torch.nn.utils.clip_grad_norm_(params, tc.clip_norm) if tc.clip_norm else torch.tensor(0.0)
        # One rank's NaN must skip the step everywhere, or the ranks' weights part ways.
        finite = self.dist.all_true(finite and bool(torch.isfinite(norm)))
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.bad_steps += 1
            log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", step, self.bad_steps)
        self.dist.sync_buffers(self.model)
        self.scheduler.step()
        self.step += 1
        rec = {"step": step, "seconds": seconds, "grad_norm": float(norm),
               "lr": self.optimizer.param_groups[0]["lr"], "skipped": not finite,
               "padding": float(np.mean(padding)) if padding else 0.0,
               **{f"loss/{t}": float(v) for t, v in losses.items()},
               **{f"weight/{t}": w for t, w in self.weighting.weights().items()},
               **self._retention_terms}
        self._retention_terms = {}
        if task_weights is not None:
            rec.update({f"agg/{t}": float(w) for t, w in zip(per_task, task_weights)})
        if self.bad_steps >= tc.max_bad_steps:
            self._rollback()
            rec["rolled_back_to"] = self.step
        return rec

    @staticmethod
    def _task_gradients(objectives: dict[str, torch.Tensor], shared: list, per_task: dict[str, list]) -> None:
        """Each task's gradient on the shared parameters, added into ``per_task[task]`` (the
        sum over the step's micro-batches).

        Each task's backward leaves its gradient in .grad; we take that tensor over (no copy)
        and clear .grad before the next task, so memory holds one gradient per task, never a
        flattened [tasks x parameters] matrix on top. Task-specific parameters (heads,
        branches) accumulate normally: only their own task reaches them.
        """
        names = list(objectives)
        for i, t in enumerate(names):
            objectives[t].backward(retain_graph=i < len(names) - 1)
            grads = [p.grad for p in shared]
            for p in shared:
                p.grad = None
            if t not in per_task:
                per_task[t] = grads
            else:
                per_task[t] = [a if g is None else g if a is None else a.add_(g)
                               for a, g in zip(per_task[t], grads)]

    def _aggregate(self, per_task: dict[str, list], shared: list, params: list) -> torch.Tensor:
        """The per-task gradients on the shared parameters, averaged over the ranks, combined
        by the aggregator into the shared parameters' .grad; the other parameters' gradients
        are averaged as they are. Returns the task weights."""
        shared_ids = {id(p) for p in shared}
        grads = list(per_task.values())
        if self.dist.enabled:
            grads = [self.dist.average(g) for g in grads]
            self.dist.average_grads([p for p in params if id(p) not in shared_ids])
        combined, weights = self.aggregator(grads)
        for p, g in zip(shared, combined):
            p.grad = g
        return weights

    def _rollback(self) -> None:
        """Repeated divergence: back to the last good checkpoint with a lower learning rate;
        after MAX_ROLLBACKS of them (or with no checkpoint yet) training stops."""
        folder = ckpt.find_resumable(self.run_dir)
        lr_now = self.config.train.lr * self.lr_scale
        # Rank 0 writes the checkpoints: whether there is one to roll back to is its call.
        (have,) = self.dist.from_main([folder is not None])
        if have and folder is None:
            raise ckpt.CheckpointError(f"rank {self.dist.rank} cannot see the checkpoint rank 0 wrote in "
                                       f"{self.run_dir}: the run folder must be shared by every rank")
        if not have:
            raise TrainingDiverged(
                f"training diverged at step {self.step}: {self.bad_steps} non-finite steps in a row "
                f"and no checkpoint to roll back to yet; lower train.lr (now {lr_now:g})")
        if self.rollbacks >= MAX_ROLLBACKS:
            raise TrainingDiverged(
                f"training diverged at step {self.step}: {self.skipped_steps} non-finite steps, still "
                f"diverging after {MAX_ROLLBACKS} rollbacks; lower train.lr (now {lr_now:g})")
        # The checkpoint's counters predate this divergence: keep ours, or the rollback limit
        # would reset with every restore and a run that always diverges would never stop
        # (and the clock would go back).
        rollbacks, skipped, scale = self.rollbacks + 1, self.skipped_steps, self.lr_scale * ROLLBACK_LR_FACTOR
        clock = self._seconds_before, self._eval_seconds
        self._restore(folder)
        self.rollbacks, self.skipped_steps, self.lr_scale, self.bad_steps = rollbacks, skipped, scale, 0
        self._seconds_before, self._eval_seconds = clock
        # LambdaLR computes learning rates only when stepped: step it onto the same position
        # again so the lower scale applies from the next step on.
        self.scheduler.last_epoch -= 1
        self.scheduler.step()
        log.warning("rolled back to step %d (rollback %d of %d), learning rate now %.3g",
                    self.step, self.rollbacks, MAX_ROLLBACKS, self.optimizer.param_groups[0]["lr"])

    # --- checkpoints -------------------------------------------------------------------------

    def state(self) -> dict:
        this_run = time.time() - self._start if self._start is not None else 0.0  # before fit(): none
        return {"step": self.step, "best": self.best, "skipped_steps": self.skipped_steps,
                "rollbacks": self.rollbacks, "lr_scale": self.lr_scale,
                "evals_since_best": self.evals_since_best,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "weighting": self.weighting.state_dict(), "aggregator": self.aggregator.state_dict(),
                "streams": {k: s.state() for k, s in self.streams.items()},
                "seconds_seen": self.seconds_seen,
                "train_seconds": self._seconds_before + this_run,
                "eval_seconds": self._eval_seconds,
                "world_size": self.dist.world_size,
                "history": json.dumps(self.history)}

    def _restore(self, folder: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=str(self.device)))
        st = ckpt.read_state(folder)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.weighting.load_state_dict(st["weighting"])
        self.aggregator.load_state_dict(st.get("aggregator", {}))  # absent in older checkpoints
        # A stream's position counts its rank's batches, each of which took world_size batches
        # of the sampler's sequence (lhotse hands rank r every world_size-th one). On another
        # number of ranks the same share of the epoch counts as trained on (lhotse's bucketed
        # order depends on the number of ranks, so which utterances come next may differ).
        saved_world = st.get("world_size", self.dist.world_size)  # absent in older checkpoints
        for k, s in self.streams.items():
            position = dict(st["streams"][k])
            if saved_world != self.dist.world_size:
                position["position"] = position["position"] * saved_world // self.dist.world_size
            s.restore(position)
        self.step, self.best, self.skipped_steps = st["step"], st["best"], st["skipped_steps"]
        self.rollbacks, self.lr_scale = st["rollbacks"], st["lr_scale"]
        self.evals_since_best, self.seconds_seen = st["evals_since_best"], st["seconds_seen"]
        self.history = json.loads(st["history"])
        # absent in older checkpoints: their budget restarts, as it used to
        self._seconds_before, self._eval_seconds = st.get("train_seconds", 0.0), st.get("eval_seconds", 0.0)

    def save(self, best: bool = False) -> None:
        """``last`` then, when it improved, ``best``. ``last`` names the step its best was
        chosen at, ``best`` says its own: a crash between the writes is repaired on resume
        (``checkpoint.repair_best``), so best/ always holds the model that scored ``self.best``."""
        if not self.dist.is_main:
            return
        if best:
            self.best_step = self.step
        state = self.state()
        state["best_step"] = self.best_step
        ckpt.write_checkpoint(self.run_dir / LAST, self.model, state)
        if best:
            ckpt.write_checkpoint(self.run_dir / BEST, self.model, meta={"step": self.step, "criterion": self.best})

    # --- evaluation --------------------------------------------------------------------------

    def evaluate_dev(self) -> dict:
        results: dict[str, dict] = {}
        have = set(available_sets(self.config.corpus))
        for kind in self.kinds.values():
            dev = kind.task.dev_set
            if dev in have and (r := kind.dev_metrics(self.model, self.config.corpus, dev, DEV_LIMIT)):
                results.setdefault(dev, {})[kind.name] = r
        return results

    # --- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict:
        tc = self.config.train
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        start = self._start = time.time()
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", disable=not self.progress, unit="step")
        log_path = self.run_dir / "train_log.jsonl"
        stopped, error = "steps", None
        first_step = self.step
        self._budget_mark = (self.step, self._seconds_before - self._eval_seconds)
        out_of_time = self._budget_spent()  # a resumed run may have spent it before the crash
        if out_of_time:
            stopped = "time budget"
        while self.step < self.config.train.steps and not out_of_time:
            try:
                rec = self.train_step()
            except TrainingDiverged as e:
                stopped, error = "diverged", str(e)
                log.error("%s", e)
                break
            since = self.step - first_step
            if tc.time_budget_s and (since == BUDGET_FIRST_PROBE
                                     or (since > BUDGET_FIRST_PROBE and since % BUDGET_REFIT_EVERY == 0)):
                self._fit_schedule_to_budget(self._elapsed())
                bar.total = self.config.train.steps
            # skipped steps and rollbacks are always logged: they are what a post-mortem needs
            if self.dist.is_main and (rec["step"] % tc.log_every == 0 or rec["skipped"]):
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                for k, v in rec.items():
                    if isinstance(v, float):
                        self.writer.add_scalar(k, v, rec["step"])
            bar.update(1)
            if "rolled_back_to" in rec:  # back at a checkpoint step: no second evaluation of it
                bar.n = self.step
                continue
            bar.set_postfix({k.split("/")[-1] + ("" if k.startswith("loss") else "_w"): f"{v:.3g}"
                             for k, v in rec.items() if k.startswith(("loss/", "weight/"))})
            at_eval = self.step % tc.eval_every == 0 or self.step == self.config.train.steps
            out_of_time = self._budget_spent()
            if at_eval or out_of_time:
                eval_start = time.time()
                stop_early = self._evaluate_and_checkpoint()
                self._eval_seconds += self.dist.from_main([time.time() - eval_start])[0]
                if stop_early:
                    stopped = "early stop"
                    break
            if out_of_time:
                stopped = "time budget"
                break
        bar.close()
        peak = self.dist.gather(peak_rss_mb())
        summary = {"steps": self.step, "stopped": stopped, **({"error": error} if error else {}),
                   "best_criterion": self.best,
                   "skipped_steps": self.skipped_steps, "rollbacks": self.rollbacks,
                   # batches whose audio was all unusable, and manifest lines that were not a cut
                   # (train.lazy_manifests): skipped, counted here, named in the log
                   "skipped_batches": sum(s.skipped_batches for s in self.streams.values()),
                   # distinct utterances whose audio could not be used, seen by this process
                   # (loader workers report theirs to it); a resumed run counts from its restart
                   "unreadable_files": len({cut for s in self.streams.values()
                                            for cut in getattr(s.collator, "bad_audio", {})}),
                   "malformed_manifest_lines": malformed_lines(self.config),
                   "train_seconds": round(time.time() - start, 1), "audio_seconds_seen": self.seconds_seen,
                   "parameters": self.model.parameter_counts(),
                   # per rank: the training process, and its largest loader worker that has ended
                   "peak_rss_mb": [{"process": round(a), "loader_workers": round(b)} for a, b in peak],
                   "history": self.history}
        if self.dist.is_main and not error:
            for entry, strategy in zip(tc.retention, self.retention):
                record = strategy.finish(self)
                if record is not None:
                    summary.setdefault("retention", {})[entry.name] = record
        if self.dist.is_main:
            ckpt.write_text_atomic(self.run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
            self.writer.close()
        self.dist.barrier()
        if error:  # the summary above is the report; the caller still learns it failed
            raise TrainingDiverged(error)
        return summary

    def _elapsed(self) -> float:
        """Training seconds so far, earlier runs included, by rank 0's clock: the decisions
        they feed (stop, refit the schedule) must be the same on every rank."""
        return self.dist.from_main([self._seconds_before + time.time() - self._start])[0]

    def _budget_spent(self) -> bool:
        budget = self.config.train.time_budget_s
        return budget is not None and self._elapsed() > budget

    def _fit_schedule_to_budget(self, elapsed: float) -> None:
        """With a wall-time budget, set train.steps to what the budget allows (never more than
        configured), so the learning-rate decay happens instead of being cut off. Only
        before the decay stage starts: the schedule must not jump once it is decaying."""
        tc = self.config.train
        if self.step >= (tc.schedule[0] + tc.schedule[1]) * tc.steps:
            return
        training = elapsed - self._eval_seconds  # evaluations have their own share below
        mark_step, mark_seconds = self._budget_mark
        if self.step <= mark_step:  # a rollback moved the step back: measure afresh from here
            self._budget_mark = (self.step, training)
            return
        per_step = (training - mark_seconds) / (self.step - mark_step)
        self._budget_mark = (self.step, training)
        if self._configured_steps is None:
            self._configured_steps, self._n_evals = tc.steps, max(1, tc.steps // tc.eval_every)
        affordable = self.step + int((tc.time_budget_s - elapsed) / per_step * (1 - EVAL_TIME_SHARE))
        affordable = min(affordable, self._configured_steps)
        if affordable != tc.steps:
            log.info("time budget %.0f s allows about %d steps (%.2f s/step): train.steps %d -> %d",
                        tc.time_budget_s, affordable, per_step, tc.steps, affordable)
            tc.steps = affordable
            tc.eval_every = max(1, affordable // self._n_evals)

    def _evaluate_and_checkpoint(self) -> bool:
        """Dev metrics, best/last checkpoints; True when early stopping says stop."""
        tc = self.config.train
        dev = self.evaluate_dev() if self.dist.is_main else {}
        # Rank 0 alone evaluates; its score is every rank's, so best and early stopping agree.
        (score,) = self.dist.from_main([criterion(dev, tc.criterion) if dev else -self.step])
        improved = score < self.best
        if improved:
            self.best, self.evals_since_best = score, 0
        else:
            self.evals_since_best += 1
        self.history.append({"step": self.step, "criterion": score, "dev": dev})
        if self.writer is not None:
            for s, r in dev.items():
                for t, m in r.items():
                    for k, v in m.items():
                        self.writer.add_scalar(f"dev/{s}/{t}/{k}", v, self.step)
        self.save(best=improved)
        self.dist.barrier()
        return bool(tc.early_stop_patience and self.evals_since_best >= tc.early_stop_patience)


def peak_rss_mb() -> list[float]:
    """Peak resident memory of this process and of its largest child (loader workers, alive:
    their VmHWM from /proc; or ended), in MB."""
    import resource

    kib = 1024.0  # ru_maxrss and VmHWM are in KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib
    for task in Path("/proc/self/task").glob("*"):
        try:
            pids = (task / "children").read_text().split()
        except OSError:  # not Linux, or the thread ended
            continue
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    children = max(children, int(line.split()[1]) / kib)
    return [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, children]


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
          resume_overrides: Sequence[str] = ()) -> dict:
    trainer = Trainer(config, run_dir, resume=resume, progress=progress, resume_overrides=resume_overrides)
    try:
        return trainer.fit()
    finally:
        for stream in trainer.streams.values():  # loader workers stop with the run
            stream.close()
        trainer.dist.close()
