"""From cuts to batches, whatever the tasks: features (cached), crops, SpeedPerturb and
SpecAugment, padding, and the endless resumable stream a task trains on.

Batches are built by lhotse samplers (length-bucketed, capped by total seconds of audio;
split across ranks for data parallelism). Randomness (crops, SpecAugment) comes from a
generator seeded by (seed, step), so a resumed run sees exactly the batches an
uninterrupted one would. What each batch row learns is the task kinds' business
(``tasks/``): the Collator is handed one function per target that turns the batch's cuts
into that target.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler

from ..audio import AudioError, to_model_audio
from ..features import FeatureExtractor, from_spec

log = logging.getLogger(__name__)

NUM_BUCKETS = 20
SPEC_AUG_FREQ = (2, 12)  # masks, max width (mel bins)
SPEC_AUG_TIME = (2, 0.05)  # masks, max width as a fraction of the utterance
# Batches whose every utterance is unreadable are skipped (counted); this many in a row means
# the corpus's audio is gone (a lost mount), not a few bad files: training stops, saying so.
MAX_UNUSABLE_BATCHES_IN_A_ROW = 100


class UnusableBatch(AudioError):
    """Every utterance of a batch is unusable (the stream skips it and draws the next)."""


@dataclass(frozen=True)
class Rows:
    """What a target function gets besides the cuts: where each row's crop starts (seconds),
    the rows' input lengths (frames or samples) and how many of them make a second."""

    offsets: list[float]
    lengths: torch.Tensor
    rate: float


# cuts, rows -> the batch's target (a tensor, or an object with .to(device) and .pin_memory())
TargetFn = Callable[[list, Rows], object]


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T, F] features or [B, S] waveform
    lengths: torch.Tensor
    targets: dict[str, object]  # per target name
    cut_ids: list[str]
    seconds: float
    # the cuts the rows were made from (speed-perturbed ones as perturbed) and where each row's
    # crop starts (seconds): what a teacher model needs to hear the row's audio (training/teachers.py)
    cuts: list = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)

    @property
    def padding_fraction(self) -> float:
        """Share of the padded input that is padding."""
        return 1.0 - float(self.lengths.sum()) / (len(self.lengths) * float(self.lengths.max()))

    def to(self, device) -> "Batch":
        def move(v):  # tensors or a task kind's target objects
            return v.to(device)

        return Batch(self.inputs.to(device), self.lengths.to(device),
                     {k: move(v) for k, v in self.targets.items()}, self.cut_ids, self.seconds,
                     self.cuts, self.offsets)

    def pin_memory(self) -> "Batch":  # called by a DataLoader with pin_memory: faster copies to the GPU
        return Batch(self.inputs.pin_memory(), self.lengths.pin_memory(),
                     {k: v.pin_memory() for k, v in self.targets.items()}, self.cut_ids, self.seconds,
                     self.cuts, self.offsets)


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
    """Turns a list of cuts into a Batch; ``targets`` maps each target's name to the function
    that builds it (``TargetFn``; the task kinds' ``collate``)."""

    def __init__(self, targets: dict[str, TargetFn], cache: FeatureCache,
                 crop: float | None = None, spec_augment: bool = False, speed_perturb=()):
        self.targets, self.cache = dict(targets), cache
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
        rows = Rows(offsets, lengths, self.rate())
        targets = {name: make(cuts, rows) for name, make in self.targets.items()}
        return Batch(inputs, lengths, targets, [c.id for c in cuts], float(lengths.sum()) / self.rate(),
                     cuts, offsets)


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
