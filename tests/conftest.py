"""Shared fixtures: one thread for torch (the test machine is small and shared), and the
`tiny` synthetic corpus, built once per session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def voices():
    """The synthesis voices installed here; skips a test that needs them when there are none."""
    from polyhead.data.synth.build import TRAINING_ENGINES
    from polyhead.data.synth.engines import available_voices

    v = available_voices()
    if not any(x.engine in TRAINING_ENGINES for x in v):
        pytest.skip("espeak-ng is not installed")
    return v


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, voices):
    """(folder, summary) of the `tiny` preset synthesised with seed 0. Read-only: a test
    that writes manifests copies it first (see `corpus_copy`)."""
    from polyhead.data.synth.build import synthesize

    out = tmp_path_factory.mktemp("corpus")
    summary = synthesize(out, "tiny", seed=0, workers=2, progress=False)
    return out, summary


@pytest.fixture(scope="session")
def tiny_run(tiny_corpus, tmp_path_factory):
    """(corpus folder, run folder) of a tiny demo-config model trained for 3 steps and
    evaluated (so the run has its calibration.json)."""
    from polyhead.cli import main

    folder, _ = tiny_corpus
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "--config", "scratch", "--run", str(run), f"corpus={folder}", "encoder.dim=48",
                 "encoder.layers=2", "train.steps=3", "train.eval_every=3", "train.time_budget_s=null",
                 "tasks.speaker.train_sets=[speaker_train]"]) == 0
    assert main(["evaluate", str(run)]) == 0
    return folder, run


@pytest.fixture
def live_server():
    """``url = live_server(app)``: every server started this way stops when the test ends."""
    import contextlib

    from liveserver import serving

    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(serving(app))[0]
