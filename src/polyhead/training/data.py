"""From corpus sets to training batches: label vocabularies, validation, samplers, collation.

Batches are built by lhotse samplers (length-bucketed, capped by total seconds of audio;
split across ranks for data parallelism). Each task gets its own stream of batches for the
disjoint step; the joint step uses one stream whose batches carry every label.
Randomness (crops, SpecAugment) comes from a generator seeded by (seed, step), so a resumed
run sees exactly the batches an uninterrupted one would.

A Whisper decoder head with several ``decoder_tasks`` gets one stream that mixes them: each
task takes from the task's train sets (or its ``decoder_task_sets``) the cuts that carry its labels (commands for slu,
windows of long recordings for speakers, any labelled language for language; transcribe
as before), tagged with the task, and the pools are sampled with temperature
``train.task_temperature`` over their seconds of audio. Each batch row then learns its own
task's target (``decoder_target``).
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.lazy import Dillable, LazyIteratorChain, count_newlines_fast
from lhotse.serialization import decode_json_line, deserialize_item, open_best

from ..audio import AudioError, to_model_audio
from ..config import Config, ConfigError, TaskConfig
from ..features import FeatureExtractor, from_spec
from ..data.corpus import ManifestError, cuts_path, label, load_set, read_info, recordings_of, source_problem
from ..metrics import segments_to_frames
from ..text import normalize_text
from ..model.decoder import MAX_SPEAKERS
from ..model.decoder_tasks import LANGUAGE, SLU, SPEAKERS, TRANSCRIBE, decoder_tasks_of, slu_text, speakers_text

log = logging.getLogger(__name__)

CHARS = list(" 'abcdefghijklmnopqrstuvwxyz")  # CTC vocabulary after normalize_text; 0 = blank
UTTERANCE_TARGETS = ("speaker", "language", "intent", "gender")
NUM_BUCKETS = 20
SPEC_AUG_FREQ = (2, 12)  # masks, max width (mel bins)
SPEC_AUG_TIME = (2, 0.05)  # masks, max width as a fraction of the utterance
DECODER_TASK = "decoder_task"  # the cut's custom field naming its decoder task (none: transcribe)
TIME_TOLERANCE_S = 1e-3  # manifests round times to 0.1 ms: a segment this far out is still inside
# Batches whose every utterance is unreadable are skipped (counted); this many in a row means
# the corpus's audio is gone (a lost mount), not a few bad files: training stops, saying so.
MAX_UNUSABLE_BATCHES_IN_A_ROW = 100


class UnusableBatch(AudioError):
    """Every utterance of a batch is unusable (the stream skips it and draws the next)."""


def text_of(cut) -> str | None:
    t = label(cut, "text")
    return normalize_text(t) if t else None


def raw_text_of(cut) -> str | None:
    """The transcript as the corpus writes it (case, punctuation): what Whisper's decoder
    learns to write; ``text_of`` is what CTC learns and what WER scores."""
    t = label(cut, "text")
    return " ".join(t.split()) if t else None


def phonemes_of(cut) -> str | None:
    p = label(cut, "phonemes")
    return " ".join(p.split()) if p else None


def build_vocab(config: Config) -> dict[str, list[str]]:
    """Label sets from the training sets: speakers, languages, intents, phoneme symbols."""
    vocab: dict[str, set] = {}
    read = lazy_set if config.train.lazy_manifests else load_set
    for name, task in config.tasks.items():
        if task.target == "text":
            vocab["text"] = set(CHARS)
            if SLU in decoder_tasks_of(task.head.options):
                # the intents the decoder learns to write: its closed set at inference
                intents = vocab.setdefault("intent", set())
                for set_name in task.decoder_task_sets.get(SLU, task.train_sets):
                    intents.update(v for cut in read(config.corpus, set_name) if (v := label(cut, "intent")))
            continue
        if task.target == "vad":
            continue
        values = vocab.setdefault(task.target, set())
        for set_name in task.train_sets:
            for cut in read(config.corpus, set_name):
                v = phonemes_of(cut) if task.target == "phonemes" else label(cut, task.target)
                if v is None:
                    continue
                values.update(v) if task.target == "phonemes" else values.add(v)
    out = {k: sorted(v) for k, v in vocab.items()}
    if "text" in out:
        out["text"] = CHARS
    return out


def check_cut(cut, task: TaskConfig, vocab: dict[str, list[str]]) -> str | None:
    """Why a cut cannot train this task, or None when it can."""
    if not cut.duration or cut.duration <= 0:
        return "zero duration"
    if task.target == "text":
        text = text_of(cut)
        if not text:
            return "no transcript"
        bad = sorted(set(text) - set(vocab["text"]))
        if bad:
            return f"characters outside the vocabulary: {''.join(bad)!r}"
    elif task.target == "vad":
        return None
    if task.target in ("text", "phonemes") and len(cut.supervisions) > 1:
        return "several speech segments: a long recording, not one utterance"  # label() reads the first
    if task.target == "phonemes":
        if not phonemes_of(cut):
            return "no phonemes"
    elif task.target == "speaker" and label(cut, "speaker") not in vocab["speaker"]:
        return "speaker not in the training vocabulary"
    elif task.target in vocab and task.target not in ("speaker", "text") and label(cut, task.target) not in vocab[task.target]:
        # an utterance without the label (an intent head on sentences that are not commands)
        # would only spend the step on a zero loss
        return f"no {task.target} label in the training vocabulary"
    return None


def decoder_task_of(cut) -> str:
    return (getattr(cut, "custom", None) or {}).get(DECODER_TASK, TRANSCRIBE)


def decoder_target(cut, task: str) -> str:
    """What the decoder learns to write for this cut in this task (decoder_tasks.py)."""
    if task == SLU:
        return slu_text(label(cut, "intent"), label(cut, "slots"))
    if task == LANGUAGE:
        return label(cut, "language")
    if task == SPEAKERS:
        return speakers_text([(s.speaker, s.text or "") for s in sorted(cut.supervisions, key=lambda s: s.start)])
    return raw_text_of(cut) or ""


def speaker_windows(cut, max_seconds: float) -> list:
    """A long recording as windows of whole speech segments, each at most ``max_seconds``
    from its first segment's start to its last one's end, cut only where no segment is
    under way (an overlap is never split). A stretch of overlapping segments longer than the
    limit is in no window. Ids are the recording's with the start in ms."""
    units, end = [], -math.inf  # runs of segments that overlap one another
    for s in sorted(cut.supervisions, key=lambda s: s.start):
        if not units or s.start >= end:
            units.append([])
        units[-1].append(s)
        end = max(end, s.end)
    windows, current = [], []
    for unit in units + [None]:
        if unit is not None and max(s.end for s in unit) - (current or unit)[0].start <= max_seconds:
            current += unit
            continue
        if current:
            windows.append(_window(cut, current))
        current = unit if unit and max(s.end for s in unit) - unit[0].start <= max_seconds else []
    return windows


def _window(cut, sups):
    start, end = sups[0].start, max(s.end for s in sups)
    w = cut.truncate(offset=start, duration=end - start, preserve_id=False)
    w = w.filter_supervisions(lambda s: s.start >= -TIME_TOLERANCE_S and s.end <= w.duration + TIME_TOLERANCE_S)
    return w.with_id(f"{cut.id}_{int(round(start * 1000)):07d}")


def _decoder_task_candidates(cuts, task: str, max_seconds: float, max_speakers: int):
    """(cut, why not) for the cuts that carry this decoder task's labels; the others are
    no problem, they just serve other tasks."""
    for cut in cuts:
        single = len(cut.supervisions) == 1
        if task == SLU and single and label(cut, "intent"):
            yield cut, None
        elif task == LANGUAGE and label(cut, "language"):
            yield cut, None
        elif task == SPEAKERS and len(cut.supervisions) > 1:
            for w in speaker_windows(cut, max_seconds):
                n = len({s.speaker for s in w.supervisions})
                yield w, (f"{n} speakers, more than max_speakers={max_speakers}" if n > max_speakers else None)


def training_cuts(config: Config, task_name: str, on_error: str = "skip") -> CutSet:
    """The task's training sets, validated. Problems are counted and named; with
    on_error="raise" the first one stops training before it starts. A decoder head with
    several decoder tasks gets their pools mixed (see the module's docstring)."""
    if config.train.lazy_manifests:
        return lazy_training_cuts(config, task_name)
    task = config.tasks[task_name]
    decoder_tasks = decoder_tasks_of(task.head.options)
    if decoder_tasks != [TRANSCRIBE] and config.train.step == "joint":
        raise ConfigError(f"task {task_name}: decoder_tasks {decoder_tasks} need train.step=disjoint "
                          "(the joint step's batches carry one target per task)")
    unused = sorted(set(task.decoder_task_sets) - set(decoder_tasks))
    if unused:
        raise ConfigError(f"task {task_name}: decoder_task_sets names {unused}, not among decoder_tasks {decoder_tasks}")
    problems: list[str] = []
    pools = {t: _usable_cuts(config, task, t, problems) for t in decoder_tasks}
    if problems:
        if on_error == "raise":
            raise ManifestError(f"task {task_name}: {len(problems)} unusable utterances, e.g. {problems[0]}")
        log.warning("task %s: skipped %d utterances (e.g. %s)", task_name, len(problems), problems[0])
    for t, kept in pools.items():
        if not kept:
            which = "" if decoder_tasks == [TRANSCRIBE] else f" for decoder task {t}"
            sets = task.decoder_task_sets.get(t, task.train_sets)
            raise ManifestError(f"task {task_name}: no usable utterances{which} in {sets}")
    if decoder_tasks == [TRANSCRIBE]:
        return CutSet.from_cuts(pools[TRANSCRIBE])
    tagged = [[c if t == TRANSCRIBE else c.with_id(f"{c.id}.{t}").with_custom(DECODER_TASK, t) for c in kept]
              for t, kept in pools.items()]
    return CutSet.from_cuts(mix_sets(tagged, config.train.task_temperature, config.train.seed))


def _usable_cuts(config: Config, task: TaskConfig, decoder_task: str, problems: list[str]) -> list:
    """One decoder task's usable cuts of its train sets (transcribe: the task's own target,
    for any head), the sets mixed by ``train.temperature``."""
    max_speakers = task.head.options.get("max_speakers", MAX_SPEAKERS)
    per_set, seen = [], set()
    for set_name in task.decoder_task_sets.get(decoder_task, task.train_sets):
        kept = []
        cuts = load_set(config.corpus, set_name)
        if decoder_task == TRANSCRIBE:
            candidates = ((cut, check_cut(cut, task, config.vocab)) for cut in cuts)
        else:
            candidates = _decoder_task_candidates(cuts, decoder_task, config.train.max_utterance, max_speakers)
        where = "" if decoder_task == TRANSCRIBE else f" ({decoder_task})"
        for cut, why in candidates:
            if why is None and (not cut.duration or cut.duration <= 0):
                why = "zero duration"
            if why is None and cut.id in seen:
                why = "duplicate id"
            if why is None and cut.has_recording:
                missing = [s.source for s in cut.recording.sources if s.type == "file" and not Path(s.source).is_file()]
                if missing:
                    why = f"audio file missing: {missing[0]}"
            seen.add(cut.id)
            if why is None and cut.duration > config.train.max_utterance and not task.crop:
                why = f"longer than train.max_utterance={config.train.max_utterance} s"
            if why:
                problems.append(f"{set_name}:{cut.id}{where}: {why}")
                continue
            kept.append(cut)
        per_set.append(kept)
    return mix_sets(per_set, config.train.temperature, config.train.seed)


# Lines of streamed manifests that were not a cut (cut short, not JSON): path -> line -> why
_MALFORMED: dict[str, dict[int, str]] = {}
_NOT_A_CUT = (ValueError, KeyError, TypeError, AttributeError, IndexError)  # JSON or lhotse's from_dict


class TolerantManifest(Dillable):
    """lhotse's ``LazyManifestIterator`` over a cuts JSONL manifest, except that a line that is
    not a cut (cut short by a copy, not JSON, not a cut's fields) is skipped: a warning names
    the file and line the first time, and it is counted (``malformed_lines``). One damaged
    line among millions no longer stops a run with a JSON error naming neither."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def __iter__(self):
        bad = _MALFORMED.setdefault(self.path, {})
        with open_best(self.path, "r") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    cut = deserialize_item(decode_json_line(line))
                    if not isinstance(cut, Cut):
                        raise ValueError(f"a {type(cut).__name__}, not a cut")
                except _NOT_A_CUT as e:
                    if number not in bad:
                        bad[number] = f"{type(e).__name__}: {e}"
                        log.warning("%s:%d: not a cut, line skipped (%d in this manifest so far): %s",
                                    self.path, number, len(bad), bad[number][:200])
                    continue
                yield cut

    def __len__(self) -> int:
        return count_newlines_fast(self.path)

    def __add__(self, other) -> LazyIteratorChain:
        return LazyIteratorChain(self, other)


def malformed_lines(config: Config) -> int:
    """Manifest lines skipped so far as not a cut, over the train sets of ``config``."""
    paths = {str(cuts_path(config.corpus, s)) for t in config.tasks.values() for s in t.train_sets}
    return sum(len(_MALFORMED.get(p, ())) for p in paths)


def lazy_set(corpus_dir: str | Path, name: str) -> CutSet:
    """A named set streamed from its manifest (as lhotse's ``CutSet.from_jsonl_lazy``, but a
    malformed line is skipped and counted: ``TolerantManifest``): memory stays flat however
    large the set. Each cut's audio sources are checked as it is read, as ``load_cuts``
    checks them all up front."""
    path = cuts_path(corpus_dir, name)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    return (CutSet(TolerantManifest(path)).map(partial(_checked_sources, path=str(path)))
            .with_recording_path_prefix(str(Path(corpus_dir).resolve())))


def _checked_sources(cut, path: str):
    for rec in recordings_of(cut):
        problem = source_problem(rec)
        if problem:
            raise ManifestError(f"{path}: cut {cut.id!r}: {problem}")
    return cut


def set_hours(corpus_dir: str | Path, name: str) -> float:
    """Hours of audio in a set: as corpus.json declares them (no pass over a large
    manifest), else summed from the streamed manifest."""
    declared = read_info(corpus_dir).get("sets", {}).get(name, {}).get("hours")
    if declared is not None:
        return float(declared)
    return sum(c.duration for c in lazy_set(corpus_dir, name)) / 3600.0


class _Usable:
    """Lazy filter of a task's training cuts (``check_cut`` and the length limit). Nothing
    is counted up front, as that would take a pass over every manifest: the first skipped
    utterance is logged. Missing audio shows up as unusable audio when a batch is made."""

    def __init__(self, config: Config, task_name: str):
        self.task, self.name = config.tasks[task_name], task_name
        # sets: this runs for every cut of every epoch, on the training process
        self.vocab = {k: set(v) for k, v in config.vocab.items()}
        self.max_utterance, self.logged = config.train.max_utterance, False

    def __call__(self, cut) -> bool:
        why = check_cut(cut, self.task, self.vocab)
        if why is None and cut.duration > self.max_utterance and not self.task.crop:
            why = f"longer than train.max_utterance={self.max_utterance} s"
        if why and not self.logged:
            self.logged = True
            log.warning("task %s: skipping unusable utterances as they are read (e.g. %s: %s)", self.name, cut.id, why)
        return why is None


def lazy_training_cuts(config: Config, task_name: str) -> CutSet:
    """``train.lazy_manifests``: the task's train sets streamed and filtered as they are read,
    chained one after the other. Temperature sampling and decoder-task pools resample in
    memory, and the joint step intersects every task's utterances, so those refuse."""
    task = config.tasks[task_name]
    if config.train.step == "joint":
        raise ConfigError("train.lazy_manifests needs train.step=disjoint: the joint step intersects "
                          "the tasks' utterances in memory")
    if decoder_tasks_of(task.head.options) != [TRANSCRIBE]:
        raise ConfigError(f"task {task_name}: train.lazy_manifests does not mix decoder_tasks (their pools "
                          "are built in memory)")
    if len(task.train_sets) > 1 and config.train.temperature != 1.0:
        raise ConfigError(f"task {task_name}: train.lazy_manifests chains train sets; "
                          "train.temperature must be 1 (it resamples them in memory)")
    usable = _Usable(config, task_name)
    return reduce(operator.add, [lazy_set(config.corpus, s).filter(usable) for s in task.train_sets])


# --- batches ------------------------------------------------------------------------------------

@dataclass
class TextTarget:
    """Transcripts of a batch: CTC label ids (padded) and their lengths, and the text itself
    (as written in the corpus) for heads with a tokenizer of their own (Whisper's decoder)."""

    ids: torch.Tensor  # [B, L], 0-padded; characters or phonemes, 1-based (0 = blank)
    lengths: torch.Tensor  # [B]
    texts: list[str]  # per row its decoder task's target (decoder_target)
    tasks: list[str] | None = None  # decoder task per row; None: all transcribe

    def to(self, device) -> "TextTarget":
        return TextTarget(self.ids.to(device), self.lengths.to(device), self.texts, self.tasks)

    def pin_memory(self) -> "TextTarget":  # called by a DataLoader with pin_memory
        return TextTarget(self.ids.pin_memory(), self.lengths.pin_memory(), self.texts, self.tasks)


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T, F] features or [B, S] waveform
    lengths: torch.Tensor
    targets: dict[str, object]  # per target name
    cut_ids: list[str]
    seconds: float

    @property
    def padding_fraction(self) -> float:
        """Share of the padded input that is padding."""
        return 1.0 - float(self.lengths.sum()) / (len(self.lengths) * float(self.lengths.max()))

    def to(self, device) -> "Batch":
        def move(v):  # tensors or TextTargets
            return v.to(device)

        return Batch(self.inputs.to(device), self.lengths.to(device),
                     {k: move(v) for k, v in self.targets.items()}, self.cut_ids, self.seconds)

    def pin_memory(self) -> "Batch":  # called by a DataLoader with pin_memory: faster copies to the GPU
        return Batch(self.inputs.pin_memory(), self.lengths.pin_memory(),
                     {k: v.pin_memory() for k, v in self.targets.items()}, self.cut_ids, self.seconds)


class FeatureCache:
    """Decoded audio / features per cut id. Small corpora are re-read every epoch, and on
    CPU decoding plus features would otherwise cost a large share of each step."""

    def __init__(self, features: str | FeatureExtractor, enabled: bool = True):
        self.features, self.enabled, self.store = from_spec(features), enabled, {}

    def get(self, cut) -> np.ndarray:
        if cut.id in self.store:
            return self.store[cut.id]
        try:
            audio = cut.load_audio()
        except Exception as e:
            raise AudioError(f"{cut.id}: cannot load audio ({e})") from None
        x = self.features(to_model_audio(audio.T if audio.ndim == 2 else audio, cut.sampling_rate, name=cut.id))
        if self.enabled:
            self.store[cut.id] = x
        return x


class Collator:
    """Turns a list of cuts into a Batch for a set of targets."""

    def __init__(self, vocab: dict[str, list[str]], targets: list[str], cache: FeatureCache,
                 crop: float | None = None, spec_augment: bool = False, speed_perturb=()):
        self.vocab, self.targets, self.cache = vocab, targets, cache
        self.index = {k: {v: i for i, v in enumerate(vals)} for k, vals in vocab.items()}
        self.crop, self.spec_augment = crop, spec_augment
        self.speed_perturb = list(speed_perturb)  # factors, one drawn per utterance (lhotse's perturb_speed)
        self.bad_audio: dict[str, str] = {}

    def rate(self) -> float:
        return self.cache.features.rate

    def __call__(self, cuts: list, rng: np.random.Generator | None = None) -> Batch:
        rng = rng or np.random.default_rng(0)
        items, offsets, kept = [], [], []
        for cut in cuts:
            if self.speed_perturb:
                factor = float(self.speed_perturb[int(rng.integers(len(self.speed_perturb)))])
                # a new id (_sp<factor>) and rescaled supervisions; the cache keeps it apart
                cut = cut if factor == 1.0 else cut.perturb_speed(factor)
            try:
                x = self.cache.get(cut)
            except AudioError as e:
                # Corrupt audio found mid-training: drop it from the batch, count it, go on.
                self.bad_audio[cut.id] = str(e)
                log.warning("skipping unusable audio (%d so far): %s", len(self.bad_audio), e)
                continue
            kept.append(cut)
            off = 0
            if self.crop:
                n = int(self.crop * self.rate())
                if len(x) > n:
                    off = int(rng.integers(0, len(x) - n + 1))
                    x = x[off:off + n]
            if self.spec_augment and self.cache.features.augmentable:
                x = spec_augment(x, rng)
            items.append(x)
            offsets.append(off / self.rate())
        if not items:
            raise UnusableBatch(f"every utterance of a batch is unusable, e.g. {next(iter(self.bad_audio.values()))}")
        cuts = kept
        lengths = torch.tensor([len(x) for x in items])
        shape = (len(items), int(lengths.max())) + items[0].shape[1:]
        inputs = torch.zeros(shape, dtype=torch.float32)
        for i, x in enumerate(items):
            inputs[i, : len(x)] = torch.from_numpy(np.ascontiguousarray(x))
        targets = {t: self._target(t, cuts, offsets, lengths) for t in self.targets}
        return Batch(inputs, lengths, targets, [c.id for c in cuts], float(lengths.sum()) / self.rate())

    def _target(self, target: str, cuts, offsets, lengths):
        if target in ("text", "phonemes"):
            tasks = [decoder_task_of(c) for c in cuts]
            # CTC learns the transcripts of transcribe rows only
            seqs = [(text_of(c) if target == "text" else phonemes_of(c)) if t == TRANSCRIBE else ""
                    for c, t in zip(cuts, tasks)]
            idx = self.index[target]
            ids = [[idx[ch] + 1 for ch in (s or "") if ch in idx] for s in seqs]
            lens = torch.tensor([len(s) for s in ids])
            padded = torch.zeros(len(ids), max(1, int(lens.max())), dtype=torch.long)
            for i, s in enumerate(ids):
                padded[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            texts = [decoder_target(c, t) for c, t in zip(cuts, tasks)]
            return TextTarget(padded, lens, texts, None if set(tasks) == {TRANSCRIBE} else tasks)
        if target in UTTERANCE_TARGETS:
            idx = self.index.get(target, {})
            return torch.tensor([idx.get(label(c, target), -1) for c in cuts])
        if target == "vad":
            frames = int(float(lengths.max()) * 100.0 / self.rate()) + 1
            out = torch.zeros(len(cuts), frames)
            for i, (c, off) in enumerate(zip(cuts, offsets)):
                dur = float(lengths[i]) / self.rate()
                segs = [(s.start - off, s.end - off) for s in c.supervisions]
                out[i, :] = torch.from_numpy(segments_to_frames(segs, frames / 100.0)[:frames].astype(np.float32))
                out[i, int(dur * 100):] = 0.0
            return out
        raise ValueError(f"unknown target {target!r}")


def spec_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frequency and time masks (Park et al., 2019), filled with the (normalised) mean 0."""
    x = x.copy()
    n_f, w_f = SPEC_AUG_FREQ
    for _ in range(n_f):
        w = int(rng.integers(0, w_f + 1))
        f0 = int(rng.integers(0, max(1, x.shape[1] - w)))
        x[:, f0:f0 + w] = 0.0
    n_t, frac = SPEC_AUG_TIME
    for _ in range(n_t):
        w = int(rng.integers(0, int(frac * len(x)) + 1))
        t0 = int(rng.integers(0, max(1, len(x) - w)))
        x[t0:t0 + w] = 0.0
    return x


CROP_MEAN_SAMPLE = 10_000


def crops_per_batch(cuts, crop: float, max_duration: float) -> int:
    """Items per batch of a cropped task: max_duration over the mean cropped length, as an
    utterance shorter than the crop is taken whole. Counting every item as a full crop would
    give 9 s crops of 3.7 s utterances a third of the audio the budget allows."""
    # a streamed (lazy) set has no length: its mean comes from its first CROP_MEAN_SAMPLE cuts
    lengths = [min(crop, c.duration) for c in (itertools.islice(cuts, CROP_MEAN_SAMPLE) if cuts.is_lazy else cuts)]
    mean = sum(lengths) / max(len(lengths), 1)
    return max(1, int(max_duration // max(mean, 1e-3)))


class BatchStream:
    """An endless, resumable stream of batches over one CutSet.

    Full utterances are bucketed by duration (lhotse DynamicBucketingSampler, capped by
    seconds of audio); cropped tasks use a plain sampler capped by count, the count that fills
    ``max_duration`` on average (``crops_per_batch``). Position = (epoch, batches taken in
    this epoch): enough to resume.
    """

    def __init__(self, cuts: CutSet, collator: Collator, max_duration: float, seed: int,
                 crop: float | None = None, rank: int = 0, world_size: int = 1):
        self.cuts, self.collator, self.seed = cuts, collator, seed
        self.max_duration, self.crop, self.rank, self.world_size = max_duration, crop, rank, world_size
        self.epoch, self.position = 0, 0
        self.skipped_batches = 0  # batches whose audio was all unusable: skipped, the next one drawn
        self._it: Iterator | None = None
        # drop_last drops incomplete batches; a set smaller than one batch would then give
        # empty epochs forever, so after one empty epoch incomplete batches are kept.
        self._drop_last = True
        self.crops_per_batch = crops_per_batch(cuts, crop, max_duration) if crop else None
        # a lazy (streamed) set has no length without a pass over it: bucket it fully
        self.num_cuts = None if cuts.is_lazy else len(cuts)

    def _sampler(self, epoch: int | None = None):
        buckets = NUM_BUCKETS if self.num_cuts is None else min(NUM_BUCKETS, self.num_cuts // 8)
        if self.crop:
            s = SimpleCutSampler(self.cuts, max_cuts=self.crops_per_batch,
                                 shuffle=True, seed=self.seed, drop_last=self._drop_last,
                                 rank=self.rank, world_size=self.world_size)
        elif buckets < 2:  # lhotse's bucketing needs two buckets; too few cuts to bucket anyway
            s = SimpleCutSampler(self.cuts, max_duration=self.max_duration, shuffle=True,
                                 seed=self.seed, drop_last=self._drop_last,
                                 rank=self.rank, world_size=self.world_size)
        else:
            s = DynamicBucketingSampler(self.cuts, max_duration=self.max_duration, shuffle=True,
                                        num_buckets=buckets, seed=self.seed, drop_last=self._drop_last,
                                        rank=self.rank, world_size=self.world_size)
        s.set_epoch(self.epoch if epoch is None else epoch)
        return iter(s)

    def close(self) -> None:
        """Nothing to release in-process (LoaderStream stops its workers here)."""

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped_batches": self.skipped_batches}

    def restore(self, state: dict) -> None:
        self.skipped_batches = state.get("skipped_batches", 0)  # absent in older checkpoints
        self.epoch, self.position, self._it = state["epoch"], 0, None
        target = state["position"]
        while self.position < target:
            self._next_cuts()

    def _next_cuts(self):
        while True:
            if self._it is None:
                self._it = self._sampler()
            try:
                cuts = next(self._it)
                self.position += 1
                return cuts
            except StopIteration:
                if self.position == 0:  # an epoch without a single batch
                    if not self._drop_last:
                        raise ValueError("batch stream: no batch can be built from these cuts") from None
                    self._drop_last, self._it = False, None
                    continue
                self.epoch, self.position, self._it = self.epoch + 1, 0, None

    def next(self, step: int) -> Batch:
        """The step's batch. One whose audio is all unusable is skipped (counted in
        ``skipped_batches``) and the next one drawn, so a resumed run skips it again
        rather than dying on it."""
        for _ in range(MAX_UNUSABLE_BATCHES_IN_A_ROW):
            cuts = self._next_cuts()
            rng = np.random.default_rng([self.seed, step, self.rank])
            try:
                return self.collator(list(cuts), rng)
            except UnusableBatch as e:
                self._skipped(e)
        raise self._too_many()

    def _skipped(self, e: Exception) -> None:
        self.skipped_batches += 1
        log.warning("skipping a batch whose audio is all unusable (%d batches so far): %s", self.skipped_batches, e)

    def _too_many(self) -> AudioError:
        return AudioError(f"{MAX_UNUSABLE_BATCHES_IN_A_ROW} batches in a row with no usable audio "
                          f"({self.skipped_batches} skipped in all): is the corpus's audio still there?")


def padding_fraction(cuts: CutSet, max_duration: float, seed: int = 0) -> float:
    """Share of padded samples in one epoch of bucketed batches."""
    total = padded = 0.0
    sampler = DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=True,
                                      num_buckets=NUM_BUCKETS, seed=seed)
    for batch in sampler:
        durs = [c.duration for c in batch]
        total += max(durs) * len(durs)
        padded += max(durs) * len(durs) - sum(durs)
    return padded / total if total else 0.0


def mix_sets(per_set: list[list], temperature: float, seed: int) -> list:
    """Concatenate several datasets, re-sampled so dataset i makes up p_i of the result."""
    if len(per_set) < 2 or temperature == 1.0:
        return [c for cuts in per_set for c in cuts]
    total = sum(len(c) for c in per_set)
    rng = np.random.default_rng(seed)
    weights = temperature_weights([sum(c.duration for c in cuts) for cuts in per_set], temperature)
    mixed = []
    for cuts, w in zip(per_set, weights):
        if cuts:
            n = max(1, int(round(w * total)))
            mixed += [cuts[i] for i in rng.choice(len(cuts), size=n, replace=n > len(cuts))]
    # repeated cuts need distinct ids for the sampler
    seen: dict[str, int] = {}
    out = []
    for c in mixed:
        k = seen.get(c.id, 0)
        seen[c.id] = k + 1
        out.append(c if k == 0 else c.with_id(f"{c.id}_rep{k}"))
    return out


def temperature_weights(sizes: list[float], temperature: float) -> list[float]:
    """p_i proportional to D_i^(1/T): T=1 samples by size, large T evens datasets out."""
    w = np.array(sizes, dtype=np.float64) ** (1.0 / temperature)
    return (w / w.sum()).tolist()
