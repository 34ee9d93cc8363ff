"""What a task kind is: everything about one kind of task from its labels to its answers.

A task in the config names its kind by ``head.type``. The kind knows which head to build
(the nn.Module, registered in ``model.heads.HEADS``), which labels a cut gives it and how
they batch, its loss, its metrics on a test set, what ``analyze`` answers for it and what
its ONNX outputs are. Training, evaluation, inference and export loop over the kinds of a
config's tasks and never ask which kind a task is.

A new kind is one class with ``@TASK_KINDS.register("name")`` on it; registering it also
registers its head class under the same name, so a config can use it at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch

from ..config import Config, ConfigError, TaskConfig
from ..data.batching import Collator, FeatureCache, Rows
from ..data.corpus import label
from ..data.windows import pieces
from ..model.heads import HEADS, Head
from ..registry import Registry

EVAL_BATCH_SECONDS = 120.0
WINDOW_BATCH_SECONDS = 60.0  # pieces of one long recording, run together


class TaskKindRegistry(Registry):
    """A Registry whose entries bring their head class along into ``HEADS``."""

    def register(self, name: str):
        add = super().register(name)

        def add_with_head(kind):
            if name not in HEADS:
                HEADS.register(name)(kind.head_class)
            return add(kind)
        return add_with_head


TASK_KINDS = TaskKindRegistry("task kind")


class TaskKind:
    """One task of a config, as its kind sees it. Subclasses set the class attributes and
    override what differs; the defaults describe an utterance-level label task."""

    head_class: type[Head] = Head  # the nn.Module this kind trains (in HEADS under the kind's name)
    targets: tuple[str, ...] = ()  # the labels (TaskConfig.target) a task of this kind may learn
    # (name of an ONNX output after the task name, key in the head's output dict); outputs
    # named *log_probs get a log-softmax in the graph
    outputs: tuple[tuple[str, str], ...] = ()
    per_frame = False  # its outputs run over encoder frames (come with "lengths")
    detects_speech = False  # its frame logits say where speech is (the pipeline gates on them)
    transcribes = False  # its answer is a transcript (the pipeline decodes it)
    decodes = False  # its head writes text token by token (Whisper's decoder: search options apply)
    embeds = False  # its answer is a speaker embedding (verify, identify, diarize)
    answer_rank = 50  # where its answer goes in an analysis (lower first)

    def __init__(self, name: str, config: Config):
        self.name, self.config = name, config
        self.task: TaskConfig = config.tasks[name]
        if self.targets and self.task.target not in self.targets:
            raise ConfigError(f"task {name}: head {self.task.head.type!r} learns "
                              f"{' | '.join(self.targets)}, not {self.task.target!r}")

    @property
    def target(self) -> str:
        return self.task.target

    @property
    def labels(self) -> list[str]:
        """The target's label vocabulary (stored in the config when training starts)."""
        return self.config.vocab.get(self.target, [])

    # --- targets -----------------------------------------------------------------------------

    def vocab(self, cuts_of: Callable[[str], Iterable]) -> dict[str, set]:
        """Label sets this task adds to the config's vocab, from its train sets
        (``cuts_of(set_name)`` reads one)."""
        values = {v for s in self.task.train_sets for cut in cuts_of(s) if (v := label(cut, self.target)) is not None}
        return {self.target: values}

    def check_cut(self, cut, vocab: dict) -> str | None:
        """Why a cut cannot train this task, or None when it can (``why_unusable`` checks its
        duration first). An utterance without the label (an intent head on sentences that are not
        commands) would only spend the step on a zero loss."""
        if label(cut, self.target) not in vocab.get(self.target, ()):
            return f"no {self.target} label in the training vocabulary"
        return None

    def collate(self, cuts: list, rows: Rows):
        """The batch's target: each row's label index, -1 where it has none."""
        index = {v: i for i, v in enumerate(self.labels)}
        return torch.tensor([index.get(label(c, self.target), -1) for c in cuts])

    def check_training(self, joint: bool) -> None:
        """ConfigError for a training set-up this kind cannot take (``joint``: the joint step)."""

    def pools(self, vocab: dict, max_utterance: float) -> dict[str | None, tuple[list[str], Callable]]:
        """Where its training cuts come from: pool name -> (set names, function from a set's
        cuts to (cut, why it cannot train or None)). One unnamed pool: the train sets,
        checked by ``check_cut``; several named ones are mixed, each cut ``tag``ged."""
        return {None: (self.task.train_sets, lambda cuts: ((c, self.why_unusable(c, vocab)) for c in cuts))}

    def why_unusable(self, cut, vocab: dict) -> str | None:
        """``check_cut`` after the check every task makes: that the cut has audio at all."""
        return "zero duration" if not cut.duration or cut.duration <= 0 else self.check_cut(cut, vocab)

    def tag(self, cut, pool: str):
        """A cut of a named pool as its batch row must see it (which pool it came from)."""
        return cut

    # --- loss --------------------------------------------------------------------------------

    def loss(self, head: Head, out: dict, target) -> torch.Tensor:
        return head.loss(out, target)

    # --- evaluation --------------------------------------------------------------------------

    def extra_eval_sets(self) -> tuple[str, ...]:
        """Test sets that `polyhead evaluate` should score by default for this task."""
        return ()

    def evaluate(self, model, corpus: str | Path, set_name: str, cuts, limit: int | None = None,
                 **calibration) -> dict[str, dict]:
        """Its metrics on one test set, keyed by result name (the task's name; a decoder's
        other tasks add "<task>/<decoder task>"); {} where the set is not for it."""
        return {}

    def dev_metrics(self, model, corpus: str | Path, set_name: str, limit: int) -> dict | None:
        """The metrics that select checkpoints during training (``train.criterion``)."""
        return None

    # --- inference ---------------------------------------------------------------------------

    def answer(self, out: dict, i: int) -> dict:
        """What `analyze` says for item i of a batch, from the head's output ``out``."""
        return {}

    def export_outputs(self) -> list[tuple[str, str]]:
        return list(self.outputs)


def task_kind(config: Config, name: str) -> TaskKind:
    return TASK_KINDS.build(config.tasks[name].head.type, name, config)


def task_kinds(config: Config, names: Iterable[str] | None = None) -> list[TaskKind]:
    """The kinds of the config's tasks (or of ``names``), in config order."""
    return [task_kind(config, n) for n in (config.tasks if names is None else names)]


def collator(kinds: Iterable[TaskKind], cache: FeatureCache, **options) -> Collator:
    """A Collator that builds the targets of these tasks (one per target label)."""
    return Collator({k.target: k.collate for k in kinds}, cache, **options)


# --- running a model over cuts ------------------------------------------------------------------

def batches_by_duration(cuts: list, max_seconds: float):
    cuts = sorted(cuts, key=lambda c: c.duration)
    batch = []
    for c in cuts:
        if batch and (len(batch) + 1) * c.duration > max_seconds:
            yield batch
            batch = []
        batch.append(c)
    if batch:
        yield batch


@torch.no_grad()
def predict(model, cuts, tasks: list[str], max_seconds: float = EVAL_BATCH_SECONDS,
            cache: FeatureCache | None = None):
    """Yield (cut, {task: per-utterance output}) for every cut, full length, no augmentation."""
    model.eval()
    device = next(model.parameters()).device
    collate = Collator({}, cache or FeatureCache(model.encoder.features, enabled=False))
    for group in batches_by_duration(list(cuts), max_seconds):
        b = collate(group).to(device)
        out = model(b.inputs, b.lengths, tasks)
        for i, cut in enumerate(group):
            yield cut, {t: row_of(o, i) for t, o in out.items()}


def row_of(out: dict, i: int) -> dict:
    """Row i of a head's batch output; frame logits cut to the row's length."""
    row = {}
    for k, v in out.items():
        if torch.is_tensor(v) and v.dim() > 0:
            row[k] = v[i]
        else:
            row[k] = v
    if "logits" in row and "lengths" in out:
        row["logits"] = row["logits"][: int(out["lengths"][i])]
    return row


def predict_windows(model, cuts, task: str, key: str = "logits"):
    """Yield (cut, [output ``key`` per window, in time order]): ``predict`` for recordings
    longer than the encoder takes in one pass."""
    limit = model.encoder.max_input_seconds
    for cut in cuts:
        parts = pieces(cut, limit)
        by_id = {c.id: o[task][key] for c, o in predict(model, parts, [task], max_seconds=WINDOW_BATCH_SECONDS)}
        yield cut, [by_id[c.id] for c in parts]  # predict reorders by length
