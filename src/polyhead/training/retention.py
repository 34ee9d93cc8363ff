"""Forgetting control: fine-tuning that keeps what the pretrained weights knew.

A fine-tuned Whisper that learns the synthetic corpus forgets English it was never shown again
(catastrophic forgetting). Each strategy here is a small object registered by name and chosen
by ``train.retention`` (a list, applied in order, so ``distill`` during training can be followed
by ``interpolate`` after it):

    none         plain fine-tuning (the reference point)
    frozen       the pretrained encoder and decoder frozen; the other heads learn on top
    lora         low-rank adapters (peft) on the encoder and/or decoder, the rest frozen
    distill      KL to the frozen pretrained model's next-token distributions, on the
                 training audio (teacher optionally in Whisper's 30 s window)
    replay       the pretrained model's own transcripts of untranscribed natural speech
                 (``replay_train``) mixed into the speech steps
    interpolate  after training, weights moved back towards the pretrained ones,
                 theta = theta_0 + a * (theta_ft - theta_0), ``a`` chosen on the retention
                 dev split (WiSE-FT)

Hooks, called by the trainer: ``setup`` once the model exists (before the optimiser is
built, so what a strategy freezes is never optimised), ``extra_loss`` after each task's loss
on its batch, ``finish`` after the last checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import Config, EncoderConfig, TaskConfig
from ..data.corpus import available_sets, load_set
from ..model.adapters import is_adapter_parameter
from ..model.decoder import IGNORE
from ..model.encoders import PRETRAINED
from ..model.multitask import MultiTaskModel
from ..registry import Registry
from ..runs import BEST, INTERPOLATION_FILE, LAST, WEIGHTS_FILE
from ..tasks import task_kind, task_kinds

log = logging.getLogger(__name__)

RETENTION = Registry("retention strategy")
RETENTION_DEV = "retention_dev"
RETENTION_TEL_DEV = "retention_tel_dev"  # the same recordings through a telephone line
REPLAY_SET = "replay_train"
PSEUDO_LABELS = "pseudo_labels"  # run sub-folder: the pretrained model's transcripts


class Retention:
    """A forgetting-control strategy; the default hooks do nothing."""

    def setup(self, trainer) -> None:
        pass

    def extra_loss(self, trainer, task: str, out: dict, batch) -> dict[str, torch.Tensor]:
        """Named terms added to ``task``'s loss on ``batch`` (whose forward gave ``out``)."""
        return {}

    def finish(self, trainer) -> dict | None:
        """After training (main rank): may rewrite ``best/``; returns a record for the summary."""
        return None


def speech_task(model: MultiTaskModel) -> str | None:
    """The task whose head is a pretrained Whisper decoder: what the strategies protect."""
    return decoder_task(model.config)


def decoder_task(config: Config) -> str | None:
    """The first task whose kind decodes text with Whisper's decoder."""
    return next((k.name for k in task_kinds(config) if k.decodes), None)


def pretrained_parts(model: MultiTaskModel) -> list[str]:
    """Parameter-name prefixes of what came pretrained: the encoder (and its branches) and the
    Whisper decoder."""
    parts = ["encoder.", "branches."]
    task = speech_task(model)
    if task:
        parts.append(f"heads.{task}.decoder.")
    return parts


def _is_pretrained(name: str, parts: list[str]) -> bool:
    return name.startswith(tuple(parts)) and not is_adapter_parameter(name)


def pretrained_model(config: Config, window: bool = False) -> MultiTaskModel:
    """The untouched pretrained Whisper (encoder + decoder, no other head), frozen: the teacher
    and the reference of the strategies. ``window``: inputs in Whisper's 30 s window."""
    if config.encoder.name != "whisper" or not getattr(config.encoder, PRETRAINED, None):
        raise ValueError("retention: the strategies protect a pretrained Whisper (encoder.pretrained)")
    model = MultiTaskModel(plain_whisper_config(config, window))
    return model.eval().requires_grad_(False)


def plain_whisper_config(config: Config, window: bool = True) -> Config:
    """The config of the pretrained Whisper alone: its decoder as the one task, no adapters."""
    task = decoder_task(config)
    head = config.tasks[task].head
    options = {k: v for k, v in head.options.items() if k in ("language",)}
    return Config(
        corpus=config.corpus,
        encoder=EncoderConfig(name="whisper", pretrained=config.encoder.pretrained, pad_to_window=window),
        tasks={task: TaskConfig(head=head.model_copy(update={"layer": -1, "options": {**options, "ctc_weight": 0.0}}),
                                target="text", train_sets=[])},
        vocab={})


# --- the strategies -------------------------------------------------------------------------

@RETENTION.register("none")
class Plain(Retention):
    """Plain fine-tuning: the point every other strategy is measured against."""


@RETENTION.register("frozen")
class Frozen(Retention):
    """The pretrained encoder and decoder stay as they are: zero forgetting by construction;
    the question is what the other heads (and CTC) reach on frozen layers."""

    def setup(self, trainer) -> None:
        parts = pretrained_parts(trainer.model)
        for name, p in trainer.model.named_parameters():
            if _is_pretrained(name, parts):
                p.requires_grad_(False)


@RETENTION.register("lora")
class LoRA(Retention):
    """Low-rank adapters (model/adapters.py builds them from this entry's options: rank,
    alpha, parts, modules); the pretrained weights they adapt stay frozen."""

    def __init__(self, **options):
        self.options = options

    def setup(self, trainer) -> None:
        parts = pretrained_parts(trainer.model)
        adapters = 0
        for name, p in trainer.model.named_parameters():
            if is_adapter_parameter(name):
                adapters += p.numel()
            elif _is_pretrained(name, parts):
                p.requires_grad_(False)
        if not adapters:
            raise ValueError("lora: the model has no adapters (is the lora entry in train.retention?)")
        log.info("lora: %d adapter parameters train; the pretrained weights are frozen", adapters)


@RETENTION.register("distill")
class Distill(Retention):
    """KL(teacher || student) on the speech task's next-token distributions, teacher-forced on
    the batch's own transcripts, added to its loss with weight ``weight``. The teacher is the
    frozen pretrained model; ``teacher_window``: it reads Whisper's 30 s window, as it was
    trained (its distributions are then those of a Whisper that transcribes well), while the
    student keeps the short input."""

    def __init__(self, weight: float = 1.0, temperature: float = 1.0, teacher_window: bool = True):
        self.weight, self.temperature, self.teacher_window = weight, temperature, teacher_window
        self.teacher = None

    def setup(self, trainer) -> None:
        self.task = speech_task(trainer.model)
        if self.task is None:
            raise ValueError("distill: no whisper_decoder task to distil into")
        self.teacher = pretrained_model(trainer.config, window=self.teacher_window).to(trainer.device)

    def extra_loss(self, trainer, task, out, batch):
        if task != self.task:
            return {}
        target = batch.targets[task_kind(trainer.config, task).target]
        head = trainer.model.heads[task]
        with torch.no_grad(), trainer._autocast():
            t_out = self.teacher(batch.inputs, batch.lengths, [task])[task]
        with torch.no_grad():
            t_logits, labels = self.teacher.heads[task].teacher_forced(t_out, target.texts, *row_prompts(target))
        s_logits, _ = head.teacher_forced(out[task], target.texts, *row_prompts(target))
        return {"distill": self.weight * distillation_kl(s_logits, t_logits, labels, self.temperature)}


def row_prompts(target) -> tuple[list[str] | None, list[str] | None]:
    """The decoder task and language of each row of a ``TextTarget`` (its prompt)."""
    return getattr(target, "tasks", None), getattr(target, "languages", None)


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """Mean over target positions of KL(teacher || student) at ``temperature`` (scaled by T^2,
    so the gradient's size does not depend on T). Vocabularies may differ by added task
    tokens: the shared part is compared."""
    v = min(student.shape[-1], teacher.shape[-1])
    keep = labels != IGNORE
    s = F.log_softmax(student[..., :v][keep] / temperature, -1)
    t = F.log_softmax(teacher[..., :v][keep] / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


@RETENTION.register("replay")
class Replay(Retention):
    """Untranscribed natural speech (the corpus's ``replay_train``), transcribed once by the
    pretrained model in its 30 s window (cached in the run folder), mixed into the speech steps: a
    batch of ``max_duration`` seconds every ``every`` steps, its attention loss weighted by
    ``weight``. The decoder keeps rehearsing the English it knew, in its own written form."""

    def __init__(self, weight: float = 0.5, every: int = 1, max_duration: float = 20.0,
                 set_name: str = REPLAY_SET, limit: int | None = None):
        self.weight, self.every, self.max_duration = weight, every, max_duration
        self.set_name, self.limit = set_name, limit

    def setup(self, trainer) -> None:
        from ..tasks import collator
        from .loader import make_stream

        self.task = speech_task(trainer.model)
        if self.task is None:
            raise ValueError("replay: no whisper_decoder task to replay into")
        cuts = pseudo_labelled(trainer.config, self.set_name, trainer.device, trainer.run_dir / PSEUDO_LABELS,
                               self.limit)
        tc = trainer.config.train
        collate = collator([task_kind(trainer.config, self.task)], trainer.cache, spec_augment=False)
        self.stream = make_stream(tc, cuts, collate, self.max_duration, tc.seed + 7919,
                                  rank=trainer.dist.rank, world_size=trainer.dist.world_size)
        trainer.streams[f"{self.task}/replay"] = self.stream  # closed with the others

    def extra_loss(self, trainer, task, out, batch):
        if task != self.task or trainer.step % self.every:
            return {}
        b = self.stream.next(trainer.step).to(trainer.device)
        head = trainer.model.heads[task]
        with trainer._autocast():
            r_out = trainer.model(b.inputs, b.lengths, [task])[task]
        logits, labels = head.teacher_forced(r_out, b.targets["text"].texts, *row_prompts(b.targets["text"]))
        return {"replay": self.weight * head.attention_loss(logits, labels)}


def pseudo_labelled(config: Config, set_name: str, device, cache_dir: Path, limit: int | None = None):
    """``set_name``'s cuts with their text replaced by the pretrained model's transcripts (in
    its 30 s window), computed once and cached in ``cache_dir`` (a resumed run reuses them;
    the corpus itself is never written to)."""
    from lhotse import CutSet

    from ..tasks.speech import transcribe_cuts
    from ..training.checkpoint import write_text_atomic

    if set_name not in available_sets(config.corpus):
        raise FileNotFoundError(f"replay: the corpus {config.corpus} has no {set_name} set "
                                "(synthesise it again: polyhead synth)")
    cuts = [c for c in load_set(config.corpus, set_name)][:limit]
    cache = Path(cache_dir) / f"{set_name}.{Path(config.encoder.pretrained).name}.json"
    texts = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [c for c in cuts if c.id not in texts]
    if todo:
        log.info("replay: transcribing %d %s utterances with the pretrained model (once)", len(todo), set_name)
        teacher = pretrained_model(config, window=True).to(device)
        task = next(iter(teacher.config.tasks))
        for cut, hyp in transcribe_cuts(teacher, todo, task):
            texts[cut.id] = hyp.strip()
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps(texts, indent=0) + "\n")
    out = []
    for c in cuts:
        text = texts.get(c.id, "")
        if text:  # nothing heard: nothing to rehearse
            out.append(replace(c, supervisions=[replace(c.supervisions[0], text=text)]))
    return CutSet.from_cuts(out)


@RETENTION.register("interpolate")
class Interpolate(Retention):
    """WiSE-FT: after training, the pretrained parts of ``best/`` are moved back towards the
    pretrained weights, theta_0 + a * (theta_ft - theta_0), for each ``a`` of ``grid``; the
    chosen ``a`` has the lowest in-domain dev WER among those whose WER on every retention dev
    set (clean, and through a telephone line where the corpus has that copy) is at most the
    pretrained model's own there (run in its 30 s window) minus ``margin`` (relative: 0.05 asks
    for 5% below it, room for the noise of a small dev split), or, when none is, the lowest
    mean retention dev WER. New heads keep their trained weights. The search and the choice
    are written to ``interpolation.json``; ``best/`` holds the interpolated model."""

    def __init__(self, grid=(0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), dev_limit: int = 80,
                 retention_sets=(RETENTION_DEV, RETENTION_TEL_DEV), margin: float = 0.0):
        self.grid, self.dev_limit = tuple(sorted(grid)), dev_limit
        self.retention_sets, self.margin = tuple(retention_sets), margin

    def finish(self, trainer) -> dict | None:
        from ..tasks.speech import evaluate_asr
        from .checkpoint import write_checkpoint, write_text_atomic

        config, corpus = trainer.config, trainer.config.corpus
        have = set(available_sets(corpus))
        task = speech_task(trainer.model)
        dev = config.tasks[task].dev_set if task else None
        retention = [s for s in self.retention_sets if s in have]
        if task is None or not retention or dev not in have:
            log.warning("interpolate: needs a whisper_decoder task, one of %s and its dev set; skipped",
                        ", ".join(self.retention_sets))
            return None
        if len(retention) < len(self.retention_sets):
            log.warning("interpolate: the corpus has no %s (synthesised before it existed); choosing on %s",
                        ", ".join(sorted(set(self.retention_sets) - set(retention))), ", ".join(retention))
        best = trainer.run_dir / BEST
        done = trainer.run_dir / INTERPOLATION_FILE
        if done.is_file() and json.loads(done.read_text()).get("weights_sha256") == _sha256(best / WEIGHTS_FILE):
            return json.loads(done.read_text())  # a resumed, finished run: best/ is interpolated already
        model = MultiTaskModel.load(best if best.is_dir() else trainer.run_dir / LAST).to(trainer.device)
        reference = pretrained_model(config, window=True).to(trainer.device)
        ref_task = next(iter(reference.config.tasks))
        sets = {name: load_set(corpus, name) for name in retention}
        in_domain = load_set(corpus, dev)
        limit = self.dev_limit
        ref = {name: evaluate_asr(reference, cuts, ref_task, limit=limit)["wer"] for name, cuts in sets.items()}
        tuned = {k: v.clone() for k, v in model.state_dict().items()}
        start = reference.state_dict()
        mapping = _pretrained_names(model, task, ref_task)
        search = []
        for a in self.grid:
            model.load_state_dict(interpolated(tuned, start, mapping, a))
            row = {"alpha": a, "retention": {name: evaluate_asr(model, cuts, task, limit=limit)["wer"]
                                             for name, cuts in sets.items()},
                   "in_domain": evaluate_asr(model, in_domain, task, limit=limit)["wer"]}
            log.info("interpolate: a=%.2f retention dev WER %s, in-domain dev WER %.3f", a,
                     " ".join(f"{k} {v:.3f}" for k, v in row["retention"].items()), row["in_domain"])
            search.append(row)
        ok = [r for r in search if all(r["retention"][k] <= ref[k] * (1 - self.margin) for k in ref)]
        mean = lambda r: sum(r["retention"].values()) / len(r["retention"])  # noqa: E731
        chosen = min(ok, key=lambda r: (r["in_domain"], -r["alpha"])) if ok else min(search, key=mean)
        model.load_state_dict(interpolated(tuned, start, mapping, chosen["alpha"]))
        model.config = trainer.model.config  # the training config (pretrained source named)
        write_checkpoint(best, model)
        record = {"alpha": chosen["alpha"], "constraint_met": bool(ok), "margin": self.margin,
                  "pretrained_retention_dev_wer": ref, "search": search, "dev_limit": limit,
                  "weights_sha256": _sha256(best / WEIGHTS_FILE)}
        write_text_atomic(trainer.run_dir / INTERPOLATION_FILE, json.dumps(record, indent=2) + "\n")
        return record


def _sha256(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _pretrained_names(model: MultiTaskModel, task: str, ref_task: str) -> dict[str, str]:
    """Names in ``model``'s state dict of the pretrained encoder and decoder -> the same
    tensors' names in the plain pretrained model's. Adapters, branch copies and new heads are
    left as trained."""
    out = {}
    for name in model.state_dict():
        if is_adapter_parameter(name):
            continue
        if name.startswith("encoder."):
            ref_name = name
        elif name.startswith(f"heads.{task}.decoder."):
            ref_name = f"heads.{ref_task}.decoder." + name[len(f"heads.{task}.decoder."):]
        else:
            continue
        out[name] = ref_name.replace(".base_layer.", ".")
    return out


def interpolated(tuned: dict, start: dict, mapping: dict[str, str], alpha: float) -> dict:
    """theta_0 + alpha * (theta_ft - theta_0) on the mapped tensors; a table grown by new task
    tokens is interpolated on its pretrained rows."""
    state = dict(tuned)
    for name, ref_name in mapping.items():
        ft, t0 = tuned[name], start[ref_name]
        if ft.shape == t0.shape:
            state[name] = t0 + alpha * (ft - t0)
        elif ft.dim() == t0.dim() and ft.shape[1:] == t0.shape[1:] and ft.shape[0] > t0.shape[0]:
            mixed = ft.clone()
            mixed[: t0.shape[0]] = t0 + alpha * (ft[: t0.shape[0]] - t0)
            state[name] = mixed
    return state


def build(config: Config) -> list[Retention]:
    return [RETENTION.build(r.name, **r.options) for r in config.train.retention]
