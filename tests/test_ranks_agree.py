"""Ranks that always agree: 2 gloo ranks made to disagree (different dev data, a NaN loss on one
rank only, a clock that runs 1000 times faster on one rank) take every control-flow decision
together (skip the step, stop early, stop for the time budget, GradNorm's weights), so neither
waits forever for the other and both end with identical weights."""

from __future__ import annotations

import datetime
import os
import time
from types import SimpleNamespace

import pytest
import torch

from polyhead.config import Config
from polyhead.training import trainer as trainer_module
from polyhead.training.trainer import Trainer
from test_optimizer_drift import TASKS, free_port, run_ranks

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")
NAN_STEP, BUDGET_S, FAST_CLOCK = 2, 600.0, 1000.0
DEV_SETS = ("speech_dev", "speech_test")  # rank 0's and rank 1's dev data


def _config(corpus: str, rank: int) -> Config:
    tasks = {t: dict(TASKS[t]) for t in ("asr", "speaker")}
    tasks["asr"]["dev_set"] = DEV_SETS[rank]
    return Config.model_validate(dict(
        corpus=corpus,
        encoder=dict(name="conformer", dim=32, layers=2, heads=2, ff_mult=2, dropout=0.0),
        tasks=tasks,
        # patience 1: rank 0 stops once its dev score fails to improve, while a rank scoring
        # by itself would go on; clip_norm 0: only the loss check can see the NaN
        train=dict(step="disjoint", steps=16, lr=1e-3, max_duration=8.0, eval_every=4, log_every=1,
                   clip_norm=0.0, early_stop_patience=1, time_budget_s=BUDGET_S,
                   weighting=dict(name="gradnorm"))))


def rank_worker(rank: int, world: int, port: int, corpus: str, run: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    # a short collective timeout: ranks that part ways fail fast instead of hanging
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20))
    if rank == 1:
        real, t0 = time.time, time.time()
        trainer_module.time = SimpleNamespace(time=lambda: t0 + (real() - t0) * FAST_CLOCK)
        compute = Trainer.compute_losses

        def nan_once(self, step, micro=0):
            losses, seconds = compute(self, step, micro)
            if step == NAN_STEP:
                losses["asr"] = losses["asr"] * float("nan")
            return losses, seconds

        Trainer.compute_losses = nan_once
    trainer = Trainer(_config(corpus, rank), run, progress=False)
    summary = trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "weighting": trainer.weighting.state_dict(),
                "summary": {k: summary[k] for k in ("steps", "stopped", "best_criterion", "skipped_steps")}},
               f"{out}/rank{rank}.pt")
    trainer.dist.close()


def test_two_ranks_that_disagree_end_identical(tiny_corpus, tmp_path):
    folder, _ = tiny_corpus
    # bounded: ranks that part ways fail (collective timeout) or are killed, never hang the suite
    run_ranks(rank_worker, (2, free_port(), str(folder), str(tmp_path / "run"), str(tmp_path)), limit_s=100)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["summary"] == r1["summary"]
    assert r0["summary"]["skipped_steps"] == 1  # the NaN on rank 1 skipped the step on both
    assert r0["summary"]["stopped"] != "time budget"  # rank 0's clock, not rank 1's, decides
    for part in ("model", "weighting"):
        assert r0[part].keys() == r1[part].keys()
        for key, tensor in r0[part].items():
            assert torch.equal(tensor, r1[part][key]), (part, key)
    assert not torch.equal(r0["weighting"]["w"], torch.ones(2))  # GradNorm did move its weights
