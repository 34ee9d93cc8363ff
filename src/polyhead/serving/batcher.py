"""One thread owns the model; concurrent analyses are run as padded batches.

Requests put jobs on a queue and wait on futures. The worker takes the first job; if it is
an analysis it keeps collecting analyses for up to ``window_s`` (or until ``max_batch``),
then runs them through the encoder together: on CPU a [16, T, D] matrix product costs far
less than sixteen [1, T, D] ones, because per-operator overhead dominates a small model. Jobs
that queued up while a batch ran are taken at once, without waiting for the window.

Other work (verification, enrolment, long-form transcription) is a plain call, run alone and
in arrival order, so the model is never used by two threads at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from ..inference.pipeline import Features, Polyhead

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16
DEFAULT_WINDOW_S = 0.010
# Inputs in one forward differ in length by at most this factor: sorting a collected batch by
# length and cutting it where the ratio is passed keeps padding (wasted compute) under a third.
MAX_LENGTH_RATIO = 1.5


@dataclass
class _Analysis:
    features: Features
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable
    args: tuple
    future: Future = field(default_factory=Future)


_STOP = object()


def length_groups(items: list, length: Callable[[object], int], max_ratio: float = MAX_LENGTH_RATIO) -> list[list]:
    """Split ``items`` into groups of similar length (sorted, cut where the longest would
    exceed ``max_ratio`` times the group's shortest)."""
    groups: list[list] = []
    for item in sorted(items, key=length):
        if groups and length(item) <= max_ratio * max(1, length(groups[-1][0])):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


class ModelWorker:
    """``analyze(features)`` and ``call(fn, *args)`` return futures; one daemon thread runs
    them. ``max_batch=1`` switches batching off (each analysis is its own forward).
    ``on_batch(size)`` is told the size of every forward (for the metrics)."""

    def __init__(self, model: Polyhead, max_batch: int = DEFAULT_MAX_BATCH, window_s: float = DEFAULT_WINDOW_S,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model, self.max_batch, self.window_s = model, max_batch, max(0.0, window_s)
        self.on_batch = on_batch or (lambda _size: None)
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="polyhead-model", daemon=True)
        self.thread.start()

    def analyze(self, features: Features) -> Future:
        job = _Analysis(features)
        self.queue.put(job)
        return job.future

    def call(self, fn: Callable, *args) -> Future:
        job = _Call(fn, args)
        self.queue.put(job)
        return job.future

    def close(self, timeout: float | None = 5.0) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout)

    # --- the worker thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is _STOP:
                return
            if isinstance(job, _Call):
                self._run_call(job)
                continue
            batch, deferred, stop = self._collect(job)
            self._run_batch(batch)
            for call in deferred:
                self._run_call(call)
            if stop:
                return

    def _collect(self, first: _Analysis) -> tuple[list[_Analysis], list[_Call], bool]:
        """The first analysis plus whatever analyses arrive within the window; calls seen
        meanwhile are run after the batch."""
        batch, deferred = [first], []
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            try:
                job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP:
                return batch, deferred, True
            (deferred if isinstance(job, _Call) else batch).append(job)
        return batch, deferred, False

    def _run_call(self, job: _Call) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # the request gave up (timeout) before its turn
        try:
            job.future.set_result(job.fn(*job.args))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            job.future.set_exception(e)

    def _run_batch(self, batch: list[_Analysis]) -> None:
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        for group in length_groups(live, lambda job: len(job.features.inputs)):
            self.on_batch(len(group))
            try:
                results = self.model.analyze_features([job.features for job in group])
            except BaseException as e:  # noqa: BLE001 - every request of the group hears of it
                log.exception("batch of %d failed", len(group))
                for job in group:
                    job.future.set_exception(e)
                continue
            for job, result in zip(group, results):
                job.future.set_result(result)
