"""Which cuts a task trains on: label vocabularies, then each task's usable utterances of its
train sets (its kind's ``check_cut``), counted and named where they are not usable.

Several train sets are mixed by ``train.temperature``; a kind with several pools (a Whisper
decoder's decoder tasks) has them mixed by ``train.task_temperature``, each cut tagged with
its pool.
"""

from __future__ import annotations

import logging
import operator
import random
from functools import reduce
from pathlib import Path

from lhotse import CutSet

from ..config import Config, ConfigError
from ..data.batching import mix_sets
from ..data.corpus import ManifestError, load_set
from ..data.manifests import lazy_set
from ..tasks import TaskKind, task_kind, task_kinds

log = logging.getLogger(__name__)


def build_vocab(config: Config) -> dict[str, list[str]]:
    """Label sets from the training sets: speakers, languages, intents, phoneme symbols. A
    kind that gives a list (CTC's characters) keeps its order; sets are sorted."""
    read = lazy_set if config.train.lazy_manifests else load_set
    vocab: dict[str, object] = {}
    for kind in task_kinds(config):
        for name, values in kind.vocab(lambda s: read(config.corpus, s)).items():
            if isinstance(values, list):
                vocab[name] = values
            elif not isinstance(vocab.get(name), list):
                vocab[name] = set(vocab.get(name, set())) | set(values)
    return {k: v if isinstance(v, list) else sorted(v) for k, v in vocab.items()}


def training_cuts(config: Config, task_name: str, on_error: str = "skip") -> CutSet:
    """The task's training sets, validated. Problems are counted and named; with
    on_error="raise" the first one stops training before it starts. A kind with several
    pools gets them mixed (see the module's docstring)."""
    if config.train.lazy_manifests:
        return lazy_training_cuts(config, task_name)
    kind = task_kind(config, task_name)
    kind.check_training(joint=config.train.step == "joint")
    check_nonspeech(config, task_name)
    problems: list[str] = []
    pools = kind.pools(config.vocab, config.train.max_utterance)
    kept = {name: usable_cuts(config, kind, name, sets, check, problems) for name, (sets, check) in pools.items()}
    if problems:
        if on_error == "raise":
            raise ManifestError(f"task {task_name}: {len(problems)} unusable utterances, e.g. {problems[0]}")
        log.warning("task %s: skipped %d utterances (e.g. %s)", task_name, len(problems), problems[0])
    for name, cuts in kept.items():
        if not cuts:
            which = f" for decoder task {name}" if name else ""
            raise ManifestError(f"task {task_name}: no usable utterances{which} in {pools[name][0]}")
    if list(kept) == [None]:
        return with_nonspeech(config, task_name, CutSet.from_cuts(kept[None]))
    tagged = [[kind.tag(c, name) for c in cuts] for name, cuts in kept.items()]
    return CutSet.from_cuts(mix_sets(tagged, config.train.task_temperature, config.train.seed))


NONSPEECH_CLIP_S = 16.0  # a clip's length when the task takes whole utterances (no crop)


def check_nonspeech(config: Config, task_name: str) -> None:
    """A task's ``nonspeech`` share, refused where clips without labels mean nothing: any
    task kind but voice activity, and the joint step (checked before any cut is read)."""
    if not config.tasks[task_name].nonspeech:
        return
    kind = task_kind(config, task_name)
    if config.train.step == "joint":
        raise ConfigError(f"task {task_name}: nonspeech needs train.step=disjoint (the joint step shares "
                          "each utterance between tasks, and a clip has nothing for the others)")
    if not kind.detects_speech:
        raise ConfigError(f"task {task_name}: nonspeech is for voice-activity tasks; a {kind.task.head.type} "
                          "head has nothing to learn from clips without labels")


def with_nonspeech(config: Config, task_name: str, cuts: CutSet) -> CutSet:
    """``cuts`` and, where the task asks (``nonspeech``), non-speech clips as that share of
    the whole, shuffled in (the samplers shuffle again; this keeps a plain stream mixed)."""
    task = config.tasks[task_name]
    if not task.nonspeech:
        return cuts
    from ..data.synth import nonspeech

    real = list(cuts)
    count = max(1, round(task.nonspeech * len(real) / (1.0 - task.nonspeech)))
    seconds = 2 * task.crop if task.crop else NONSPEECH_CLIP_S
    clips = list(nonspeech.clips(count, seconds, config.train.seed))
    log.info("task %s: %d non-speech clips of %.0f s added to %d cuts", task_name, count, seconds, len(real))
    return CutSet.from_cuts(real + clips).shuffle(random.Random(config.train.seed))


def usable_cuts(config: Config, kind: TaskKind, pool: str | None, sets: list[str], check,
                problems: list[str]) -> list:
    """One pool's usable cuts of its sets (``check``: cuts -> (cut, why not)), the sets
    mixed by ``train.temperature``."""
    per_set, seen = [], set()
    where = f" ({pool})" if pool else ""
    for set_name in sets:
        kept = []
        for cut, why in check(load_set(config.corpus, set_name)):
            if why is None and (not cut.duration or cut.duration <= 0):
                why = "zero duration"
            if why is None and cut.id in seen:
                why = "duplicate id"
            if why is None and cut.has_recording:
                missing = [s.source for s in cut.recording.sources if s.type == "file" and not Path(s.source).is_file()]
                if missing:
                    why = f"audio file missing: {missing[0]}"
            seen.add(cut.id)
            if why is None and cut.duration > config.train.max_utterance and not kind.task.crop:
                why = f"longer than train.max_utterance={config.train.max_utterance} s"
            if why:
                problems.append(f"{set_name}:{cut.id}{where}: {why}")
                continue
            kept.append(cut)
        per_set.append(kept)
    return mix_sets(per_set, config.train.temperature, config.train.seed)


class Usable:
    """Lazy filter of a task's training cuts (its kind's ``check_cut`` and the length limit).
    Nothing is counted up front, as that would take a pass over every manifest: the first
    skipped utterance is logged. Missing audio shows up as unusable audio when a batch is made."""

    def __init__(self, config: Config, task_name: str):
        self.kind, self.name = task_kind(config, task_name), task_name
        # sets: this runs for every cut of every epoch, on the training process
        self.vocab = {k: set(v) for k, v in config.vocab.items()}
        self.max_utterance, self.logged = config.train.max_utterance, False

    def __call__(self, cut) -> bool:
        why = self.kind.why_unusable(cut, self.vocab)
        if why is None and cut.duration > self.max_utterance and not self.kind.task.crop:
            why = f"longer than train.max_utterance={self.max_utterance} s"
        if why and not self.logged:
            self.logged = True
            log.warning("task %s: skipping unusable utterances as they are read (e.g. %s: %s)", self.name, cut.id, why)
        return why is None


def lazy_training_cuts(config: Config, task_name: str) -> CutSet:
    """``train.lazy_manifests``: the task's train sets streamed and filtered as they are read,
    chained one after the other. Temperature sampling and a kind's several pools resample in
    memory, and the joint step intersects every task's utterances, so those refuse."""
    kind = task_kind(config, task_name)
    task = kind.task
    check_nonspeech(config, task_name)
    if task.nonspeech:
        raise ConfigError(f"task {task_name}: nonspeech mixes its clips in memory; not with train.lazy_manifests")
    if config.train.step == "joint":
        raise ConfigError("train.lazy_manifests needs train.step=disjoint: the joint step intersects "
                          "the tasks' utterances in memory")
    if len(kind.pools(config.vocab, config.train.max_utterance)) > 1:
        raise ConfigError(f"task {task_name}: train.lazy_manifests does not mix decoder_tasks (their pools "
                          "are built in memory)")
    if len(task.train_sets) > 1 and config.train.temperature != 1.0:
        raise ConfigError(f"task {task_name}: train.lazy_manifests chains train sets; "
                          "train.temperature must be 1 (it resamples them in memory)")
    return reduce(operator.add, [lazy_set(config.corpus, s).filter(Usable(config, task_name))
                                 for s in task.train_sets])
