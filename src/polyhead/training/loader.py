"""Batches prepared off the training thread, and whether the feature cache fits in memory.

``train.loader_workers: N > 0`` puts each task's batch stream behind a
``torch.utils.data.DataLoader`` with N worker processes: the lhotse sampler still runs in the
training process (it only reads manifests), and each sampled CutSet goes to a worker that
decodes, resamples, computes features, augments and collates it (lhotse's map-style dataset
pattern: ``DataLoader(dataset, sampler=sampler, batch_size=None)``). Each worker keeps
``train.prefetch_factor`` batches ready. Disjoint steps draw one batch per task per step, so
each task has its own loader. With 0 workers training uses ``BatchStream`` unchanged.

``train.cache_features: auto`` keeps decoded features in memory only when the training sets'
audio, as features, fits ``train.cache_budget_gb``; the decision is logged.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config, TrainConfig
from ..features import FeatureExtractor
from ..data.batching import MAX_UNUSABLE_BATCHES_IN_A_ROW, BatchStream, Collator, UnusableBatch
from ..data.manifests import set_hours

log = logging.getLogger(__name__)
FLOAT_BYTES = 4  # features and waveforms are float32


def feature_bytes_per_second(features: FeatureExtractor) -> float:
    return features.rate * (features.dim or 1) * FLOAT_BYTES


def training_hours(config: Config) -> float:
    """Hours of audio in every task's train sets (each set once)."""
    return sum(set_hours(config.corpus, s) for s in sorted({s for t in config.tasks.values() for s in t.train_sets}))


def cache_enabled(config: Config, features: FeatureExtractor) -> bool:
    """``train.cache_features`` resolved: a bool as given; ``auto`` from the corpus size.
    Every loader worker fills a cache of its own, and every speed factor is another copy of
    an utterance, so both multiply what the cache would hold."""
    tc = config.train
    if tc.cache_features != "auto":
        return bool(tc.cache_features)
    hours = training_hours(config)
    copies = max(1, tc.loader_workers) * max(1, len(tc.speed_perturb))
    need_gb = hours * 3600.0 * feature_bytes_per_second(features) * copies / 1e9
    enabled = need_gb <= tc.cache_budget_gb
    log.info("train.cache_features=auto: %.2f h of training audio as %s features (%.0f kB/s) x %d "
             "cop%s = %.2f GB, budget train.cache_budget_gb=%.2f GB: feature cache %s",
             hours, features.name, feature_bytes_per_second(features) / 1e3, copies,
             "y" if copies == 1 else "ies", need_gb, tc.cache_budget_gb, "on" if enabled else "off")
    return enabled


class CutBatches(Dataset):
    """Map-style dataset over sampled CutSets: ``(cuts, epoch, position)`` in, ``(batch,
    epoch, position, bad audio)`` out. Runs in a worker, so its crop and SpecAugment draws
    come from the batch's own place in the stream rather than the training step, and the
    utterances it had to drop travel back to the training process's count."""

    def __init__(self, collator: Collator, seed: int, rank: int):
        self.collator, self.seed, self.rank = collator, seed, rank

    def __getitem__(self, item):
        cuts, epoch, position = item
        try:
            batch = self.collator(list(cuts), np.random.default_rng([self.seed, epoch, position, self.rank]))
        except UnusableBatch as e:  # the training process skips it (and counts it)
            batch = e
        bad, self.collator.bad_audio = self.collator.bad_audio, {}
        return batch, epoch, position, bad


class _Epochs:
    """The stream's sampler, epoch after epoch without end, each batch tagged with its
    (epoch, position after it). Iterated by the DataLoader in the training process: one
    iterator for the whole run, so prefetching carries across epoch boundaries."""

    def __init__(self, stream: "LoaderStream", epoch: int, skip: int):
        self.stream, self.epoch, self.skip = stream, epoch, skip

    def __iter__(self):
        s, epoch, skip = self.stream, self.epoch, self.skip
        while True:
            taken = skip
            # Skipping on the sampler reads manifests only: a resumed run does not decode
            # the batches it already trained on.
            for cuts in itertools.islice(s._sampler(epoch), skip, None):
                taken += 1
                yield cuts, epoch, taken
            if taken == 0:  # an epoch without a single batch: as BatchStream does
                if not s._drop_last:
                    raise ValueError("batch stream: no batch can be built from these cuts")
                s._drop_last = False
                continue
            epoch, skip = epoch + 1, 0


def _as_is(item):
    return item  # the dataset collates; DataLoader's default_convert would copy into lists


class LoaderStream(BatchStream):
    """``BatchStream`` (same samplers, rank sharding and state) whose batches come from a
    DataLoader with ``workers`` processes. ``epoch`` and ``position`` count the batches
    handed to training, not the ones prefetched, so a checkpoint resumes after the last
    batch trained on (its crops and masks are drawn afresh)."""

    def __init__(self, cuts, collator: Collator, max_duration: float, seed: int, crop: float | None = None,
                 rank: int = 0, world_size: int = 1, workers: int = 2, prefetch_factor: int = 2):
        super().__init__(cuts, collator, max_duration, seed, crop=crop, rank=rank, world_size=world_size)
        self.workers, self.prefetch_factor = workers, prefetch_factor
        self._it = None

    def _loader(self) -> DataLoader:
        return DataLoader(CutBatches(self.collator, self.seed, self.rank),
                          sampler=_Epochs(self, self.epoch, self.position), batch_size=None,
                          collate_fn=_as_is, num_workers=self.workers,
                          prefetch_factor=self.prefetch_factor if self.workers else None,
                          persistent_workers=self.workers > 0, pin_memory=torch.cuda.is_available())

    def restore(self, state: dict) -> None:
        self.close()
        self.epoch, self.position = state["epoch"], state["position"]
        self.skipped_batches = state.get("skipped_batches", 0)

    def next(self, step: int):
        if self._it is None:
            self._it = iter(self._loader())
        for _ in range(MAX_UNUSABLE_BATCHES_IN_A_ROW):
            batch, self.epoch, self.position, bad = next(self._it)
            self.collator.bad_audio.update(bad)
            if not isinstance(batch, UnusableBatch):
                return batch
            self._skipped(batch)
        raise self._too_many()

    def close(self) -> None:
        """Stop the workers now rather than whenever the iterator is collected."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def make_stream(tc: TrainConfig, cuts, collator: Collator, max_duration: float, seed: int,
                crop: float | None = None, rank: int = 0, world_size: int = 1) -> BatchStream:
    """The batch stream ``train.loader_workers`` asks for: in-process (0) or a DataLoader."""
    if tc.loader_workers > 0:
        return LoaderStream(cuts, collator, max_duration, seed, crop=crop, rank=rank, world_size=world_size,
                            workers=tc.loader_workers, prefetch_factor=tc.prefetch_factor)
    return BatchStream(cuts, collator, max_duration, seed, crop=crop, rank=rank, world_size=world_size)
