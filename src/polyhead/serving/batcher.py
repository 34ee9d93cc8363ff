"""One thread owns the model; concurrent analyses are run as padded batches.

Requests put jobs on a queue and wait on futures. The worker takes the first job; if it is
an analysis it keeps collecting analyses for up to ``window_s`` (or until ``max_batch``),
then runs them through the encoder together: on CPU a [16, T, D] matrix product costs far
less than sixteen [1, T, D] ones, because per-operator overhead dominates a small model. Jobs
that queued up while a batch ran are taken at once, without waiting for the window.

Other work (verification, enrolment, long-form transcription) is a plain call, run alone and
in arrival order, so the model is never used by two threads at once.

Deadlines: a job may carry its request's ``Deadline``. The worker drops a job whose deadline
has passed (or whose request was cancelled) before running it; while a forward runs,
``should_stop()`` says whether everyone it serves has given up, and ``stop_hooks`` turn that
into a ``DeadlineExceeded`` raised between the model's layers (every encoder layer, every
decoder step), so a request that timed out frees the model within one layer's time instead
of holding it to the end. Long work that is a plain call checks its deadline between chunks.

The queue is bounded (``max_queue`` waiting jobs): past it, ``WorkerBusy`` (the service's 503
with Retry-After) instead of a queue that grows without limit.
"""

from __future__ import annotations

import collections
import logging
import math
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
DEFAULT_MAX_QUEUE = 128  # jobs waiting for the model; more are refused (WorkerBusy) until it drains
# Inputs in one forward differ in length by at most this factor: sorting a collected batch by
# length and cutting it where the ratio is passed keeps padding (wasted compute) under a third.
MAX_LENGTH_RATIO = 1.5


class DeadlineExceeded(TimeoutError):
    """The request a job belongs to gave up (its deadline passed, or it was cancelled)."""


class WorkerBusy(RuntimeError):
    """The worker's queue is full; ``retry_after_s``: about when it will have room."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"the server is busy ({queued} requests waiting for the model); retry in "
                         f"{retry_after_s} s")
        self.queued, self.retry_after_s = queued, retry_after_s


class Deadline:
    """When a request gives up: ``seconds`` from now (None: never), or sooner when cancelled.
    Thread-safe; checked by the worker before a job and between layers and chunks."""

    def __init__(self, seconds: float | None = None):
        self.at = None if seconds is None else time.monotonic() + seconds
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def expired(self) -> bool:
        return self._cancelled.is_set() or (self.at is not None and time.monotonic() >= self.at)

    def check(self) -> None:
        """Raise DeadlineExceeded once the request has given up (long work calls this between
        its chunks)."""
        if self.expired:
            raise DeadlineExceeded("the request's deadline passed")


@dataclass
class _Analysis:
    features: Features
    deadline: Deadline | None = None
    future: Future = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable
    args: tuple
    deadline: Deadline | None = None
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
    """``analyze(features, deadline)`` and ``call(fn, *args, deadline=...)`` return futures;
    one daemon thread runs them. ``max_batch=1`` switches batching off (each analysis is its
    own forward). ``on_batch(size)`` is told the size of every forward (for the metrics);
    ``on_late(seconds)``, for every forward or call that ended after the deadlines of all the
    requests it served, how long after (how long requests that had timed out kept the model);
    ``on_drop()``, of every job dropped unrun because its request had given up.
    At most ``max_queue`` jobs wait (None: no limit); more raise ``WorkerBusy``."""

    def __init__(self, model: Polyhead, max_batch: int = DEFAULT_MAX_BATCH, window_s: float = DEFAULT_WINDOW_S,
                 on_batch: Callable[[int], None] | None = None, max_queue: int | None = DEFAULT_MAX_QUEUE,
                 on_late: Callable[[float], None] | None = None, on_drop: Callable[[], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_queue is not None and max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.model, self.max_batch, self.window_s = model, max_batch, max(0.0, window_s)
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda _size: None)
        self.on_late, self.on_drop = on_late or (lambda _s: None), on_drop or (lambda: None)
        self.queue: queue.Queue = queue.Queue()
        self._admit = threading.Lock()
        self._pending: collections.deque = collections.deque()  # calls taken from the queue, in order, not yet run
        self._running: list[Deadline | None] = []  # the deadlines of the forward or call now running
        self.job_seconds = 0.1  # running mean of a job's time (for Retry-After)
        self.thread = threading.Thread(target=self._loop, name="polyhead-model", daemon=True)
        self.thread.start()

    def analyze(self, features: Features, deadline: Deadline | None = None) -> Future:
        return self._submit(_Analysis(features, deadline))

    def call(self, fn: Callable, *args, deadline: Deadline | None = None) -> Future:
        return self._submit(_Call(fn, args, deadline))

    def check_room(self) -> None:
        """WorkerBusy when the queue is full (a request checks before it decodes its upload)."""
        queued = self.queue.qsize() + len(self._pending)
        if self.max_queue is not None and queued >= self.max_queue:
            raise WorkerBusy(queued, self.retry_after(queued))

    def retry_after(self, queued: int) -> int:
        """Seconds until about ``queued`` jobs have run (1 to 60)."""
        return int(min(60, max(1, math.ceil(queued * self.job_seconds))))

    def should_stop(self) -> bool:
        """On the model's thread: True when every request the running forward serves has
        given up (none without a deadline)."""
        running = self._running
        return bool(running) and all(d is not None and d.expired for d in running)

    def close(self, timeout: float | None = 5.0) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout)

    def _submit(self, job):
        with self._admit:  # the size check and the put as one step: the bound holds under concurrency
            self.check_room()
            self.queue.put(job)
        return job.future

    # --- the worker thread ---------------------------------------------------------------------

    def run_waiting_analyses(self) -> None:
        """On the model's thread, between the chunks of a long call (long-form transcription,
        a long recording's embedding windows): run the analyses waiting now, as batches, so a
        short request waits for one chunk of a long one rather than all of it. Calls found
        meanwhile keep their order and run after the current one. Elsewhere: nothing."""
        if threading.current_thread() is not self.thread:
            return
        waiting = []
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                self._pending.append(job)
                break
            (self._pending if isinstance(job, _Call) else waiting).append(job)
        running = self._running
        for i in range(0, len(waiting), self.max_batch):
            self._run_batch(waiting[i:i + self.max_batch])
        self._running = running

    def _loop(self) -> None:
        while True:
            job = self._pending.popleft() if self._pending else self.queue.get()
            if job is _STOP:
                return
            if isinstance(job, _Call):
                self._run_call(job)
                continue
            batch, deferred, stop = self._collect(job)
            self._pending.extend(deferred + ([_STOP] if stop else []))
            self._run_batch(batch)

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

    def _start(self, job) -> bool:
        """Mark the job running; False (and the job answered) when its request has given up."""
        if not job.future.set_running_or_notify_cancel():
            self.on_drop()
            return False  # the request gave up (timeout) before its turn
        if job.deadline is not None and job.deadline.expired:
            job.future.set_exception(DeadlineExceeded("the request's deadline passed before its turn"))
            self.on_drop()
            return False
        return True

    def _timed(self, deadlines: list, fn: Callable):
        self._running = deadlines
        start = time.monotonic()
        try:
            return fn()
        finally:
            self._running = []
            end = time.monotonic()
            self.job_seconds = 0.8 * self.job_seconds + 0.2 * (end - start)
            if deadlines and all(d is not None and d.at is not None for d in deadlines):
                late = end - max(d.at for d in deadlines)
                if late > 0:
                    self.on_late(late)

    def _run_call(self, job: _Call) -> None:
        if not self._start(job):
            return
        try:
            job.future.set_result(self._timed([job.deadline], lambda: job.fn(*job.args)))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            job.future.set_exception(e)

    def _run_batch(self, batch: list[_Analysis]) -> None:
        live = [job for job in batch if self._start(job)]
        for group in length_groups(live, lambda job: len(job.features.inputs)):
            gone = [job for job in group if job.deadline is not None and job.deadline.expired]
            for job in gone:  # gave up while an earlier group of this batch ran
                job.future.set_exception(DeadlineExceeded("the request's deadline passed before its turn"))
                self.on_drop()
            group = [job for job in group if job not in gone]
            if not group:
                continue
            self.on_batch(len(group))
            try:
                results = self._timed([job.deadline for job in group],
                                      lambda: self.model.analyze_features([job.features for job in group]))
            except BaseException as e:  # noqa: BLE001 - every request of the group hears of it
                if not isinstance(e, DeadlineExceeded):
                    log.exception("batch of %d failed", len(group))
                for job in group:
                    job.future.set_exception(e)
                continue
            for job, result in zip(group, results):
                job.future.set_result(result)


def stop_hooks(module, worker: ModelWorker) -> list:
    """Forward pre-hooks on every layer of ``module`` (each element of an ``nn.ModuleList`` or
    ``nn.ModuleDict``: encoder and decoder layers, run once per decoding step, and the heads)
    and on its direct children: on the worker's thread, once ``worker.should_stop()``, they
    raise DeadlineExceeded, so a forward nobody waits for any more ends at the next layer.
    Returns the hook handles."""
    import torch

    if not isinstance(module, torch.nn.Module):  # an ONNX export: runs to the end of its forward
        return []
    thread = worker.thread

    def check(_module, _inputs):
        if threading.current_thread() is thread and worker.should_stop():
            raise DeadlineExceeded("the request's deadline passed while the model ran")

    targets = list(module.children())
    for m in module.modules():
        if isinstance(m, torch.nn.ModuleList):
            targets += list(m)
        elif isinstance(m, torch.nn.ModuleDict):
            targets += list(m.values())
    seen, handles = set(), []
    for m in targets:
        if id(m) not in seen:
            seen.add(id(m))
            handles.append(m.register_forward_pre_hook(check))
    return handles
