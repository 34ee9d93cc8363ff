"""The serving worker on a stand-in model: what queues up while a batch runs is run as the
next batch, batches are capped and grouped by length, calls run alone and in order, cancelled
requests are skipped and failures reach exactly the requests they concern."""

import threading

import numpy as np
import pytest

from polyhead.inference.pipeline import Features
from polyhead.serving.batcher import ModelWorker, length_groups

WAIT_S = 10.0


class StandIn:
    """Records every batch; the first one blocks until ``release`` is set, so the test can
    queue work deterministically behind it."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.started, self.release = threading.Event(), threading.Event()
        self.fail_on = fail_on
        self.events: list[str] = []

    def analyze_features(self, items):
        sizes = [len(f.inputs) for f in items]
        self.batches.append(sizes)
        self.events.append(f"batch{len(items)}")
        self.started.set()
        assert self.release.wait(WAIT_S)
        if self.fail_on in sizes:
            raise RuntimeError("boom")
        return [{"frames": n} for n in sizes]


def _features(frames: int) -> Features:
    return Features(np.zeros((frames, 4), dtype=np.float32), frames / 100)


def test_length_groups_bound_the_padding():
    groups = length_groups([10, 100, 11, 30, 14, 20], length=lambda n: n, max_ratio=1.5)
    assert groups == [[10, 11, 14], [20, 30], [100]]
    assert length_groups([], length=len) == []


def test_requests_that_queue_during_a_batch_form_the_next_one():
    model = StandIn()
    worker = ModelWorker(model, max_batch=4, window_s=0.0)
    first = worker.analyze(_features(100))
    assert model.started.wait(WAIT_S)
    later = [worker.analyze(_features(100 + i)) for i in range(6)]
    call = worker.call(lambda: model.events.append("call") or "called")
    model.release.set()
    assert first.result(WAIT_S) == {"frames": 100}
    assert [f.result(WAIT_S) for f in later] == [{"frames": 100 + i} for i in range(6)]
    assert call.result(WAIT_S) == "called"
    # capped at max_batch; the call waited for the batch it arrived during, then ran alone
    assert [len(b) for b in model.batches] == [1, 4, 2]
    assert model.events.index("call") > model.events.index("batch4")
    worker.close()


def test_no_batching_runs_one_request_per_forward():
    model = StandIn()
    model.release.set()
    worker = ModelWorker(model, max_batch=1, window_s=0.05)
    futures = [worker.analyze(_features(50)) for _ in range(5)]
    assert all(f.result(WAIT_S) == {"frames": 50} for f in futures)
    assert [len(b) for b in model.batches] == [1] * 5
    worker.close()


def test_mixed_lengths_go_through_separate_forwards():
    model = StandIn()
    sizes = []
    worker = ModelWorker(model, max_batch=16, window_s=0.0, on_batch=sizes.append)
    worker.analyze(_features(10))
    assert model.started.wait(WAIT_S)
    futures = [worker.analyze(_features(n)) for n in (100, 1000, 110, 1050)]
    model.release.set()
    assert [f.result(WAIT_S)["frames"] for f in futures] == [100, 1000, 110, 1050]
    assert sorted(map(sorted, model.batches)) == [[10], [100, 110], [1000, 1050]]
    assert sorted(sizes) == [1, 2, 2]
    worker.close()


def test_cancelled_requests_are_skipped_and_failures_reach_their_requests():
    model = StandIn(fail_on=999)
    worker = ModelWorker(model, max_batch=8, window_s=0.0)
    worker.analyze(_features(10))
    assert model.started.wait(WAIT_S)
    gone = worker.analyze(_features(12))
    assert gone.cancel()  # the request timed out before its turn
    doomed = [worker.analyze(_features(999)), worker.analyze(_features(1000))]
    fine = worker.analyze(_features(11))
    bad_call = worker.call(lambda: 1 / 0)
    model.release.set()
    for f in doomed:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(WAIT_S)
    with pytest.raises(ZeroDivisionError):
        bad_call.result(WAIT_S)
    assert fine.result(WAIT_S) == {"frames": 11}
    assert worker.call(lambda: "still serving").result(WAIT_S) == "still serving"
    assert all(12 not in b for b in model.batches)
    worker.close()
    assert not worker.thread.is_alive()
