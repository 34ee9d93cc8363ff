"""Parameters without a gradient stay out of the optimiser step: a head whose task sat the step
out (tasks.X.every) and an encoder frozen for train.heads_only_steps are left bit-identical and
gain no Adam step count, in one process and across ranks (gloo)."""

from __future__ import annotations

import datetime
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from polyhead.config import Config
from polyhead.training.distributed import Distributed
from polyhead.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- one process ---------------------------------------------------------------------------------

def test_untouched_parameter_is_not_stepped_single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    d = Distributed()
    assert not d.enabled
    torch.manual_seed(0)
    used, idle = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([used, idle], lr=0.1, weight_decay=0.01)

    # Step 1: both have gradients (Adam builds momentum for both).
    (used.sum() + idle.sum()).backward()
    d.average_grads([used, idle])
    opt.step()
    opt.zero_grad(set_to_none=True)

    # Step 2: only `used` has one; `idle` sat the step out.
    before = idle.detach().clone()
    (used ** 2).sum().backward()
    d.average_grads([used, idle])
    assert idle.grad is None
    opt.step()
    assert torch.equal(idle.detach(), before)
    assert int(opt.state[idle]["step"]) == 1 and int(opt.state[used]["step"]) == 2

    # A parameter that never had a gradient gains no optimiser state at all.
    fresh = torch.nn.Parameter(torch.randn(2))
    opt.add_param_group({"params": [fresh]})
    opt.zero_grad(set_to_none=True)
    used.sum().backward()
    d.average_grads([used, idle, fresh])
    assert fresh.grad is None
    opt.step()
    assert fresh not in opt.state or "step" not in opt.state[fresh]


TASKS = {
    "asr": dict(head=dict(type="ctc"), target="text", train_sets=["speech_train"]),
    "speaker": dict(head=dict(type="speaker", options=dict(pooling="mean", emb_dim=16)),
                    target="speaker", train_sets=["speaker_train"], crop=1.0),
    # every 2nd step, as the demo's LID and VAD run every 4th
    "lid": dict(head=dict(type="classifier", options=dict(hidden=16)), target="language",
                train_sets=["speaker_train"], crop=1.0, every=2),
}


def tiny_trainer(corpus, run, **train) -> Trainer:
    train = dict(dict(step="disjoint", steps=100, lr=1e-3, max_duration=8.0, eval_every=10**6,
                      weight_decay=0.01, time_budget_s=None), **train)
    config = Config.model_validate(dict(
        corpus=str(corpus),
        encoder=dict(name="conformer", dim=32, layers=2, heads=2, ff_mult=2, dropout=0.0),
        tasks=TASKS, train=train))
    return Trainer(config, run, progress=False)


def test_head_that_sits_a_step_out_stays_put(tiny_corpus, tmp_path):
    folder, _ = tiny_corpus
    trainer = tiny_trainer(folder, tmp_path / "run")
    lid = list(trainer.model.heads["lid"].parameters())
    asr = list(trainer.model.heads["asr"].parameters())
    assert trainer.active_tasks(0) == ["asr", "speaker", "lid"]
    assert trainer.active_tasks(1) == ["asr", "speaker"]
    trainer.train_step()
    lid_before, asr_before = snapshot(lid), snapshot(asr)
    trainer.train_step()  # LID sits this one out
    assert identical(snapshot(lid), lid_before)
    assert not identical(snapshot(asr), asr_before)
    state = trainer.optimizer.state
    assert {int(state[p]["step"]) for p in lid} == {1}
    assert {int(state[p]["step"]) for p in asr} == {2}


def test_frozen_encoder_gains_no_step_count(tiny_corpus, tmp_path):
    folder, _ = tiny_corpus
    trainer = tiny_trainer(folder, tmp_path / "run", heads_only_steps=2)
    encoder = [p for p in trainer.model.encoder.parameters() if p.requires_grad]
    before = snapshot(encoder)
    trainer.train_step()
    trainer.train_step()
    assert identical(snapshot(encoder), before)
    state = trainer.optimizer.state
    assert all(p not in state or "step" not in state[p] for p in encoder)
    trainer.train_step()  # unfrozen: the encoder's first update, with bias correction at step 1
    assert not identical(snapshot(encoder), before)
    assert {int(state[p]["step"]) for p in encoder} == {1}


# --- two ranks (gloo) ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    d = Distributed()
    assert d.enabled and d.rank == rank
    torch.manual_seed(0)  # same initial weights on both ranks
    both, one, none = (torch.nn.Parameter(torch.randn(n)) for n in (4, 3, 2))
    opt = torch.optim.Adam([both, one, none], lr=0.1, weight_decay=0.01)
    loss = (rank + 1.0) * both.sum()  # different gradients per rank
    if rank == 0:
        loss = loss + (one ** 2).sum()  # only rank 0 touches `one`
    loss.backward()
    d.average_grads([both, one, none])
    grads = {"both": both.grad.clone(), "one": one.grad.clone() if one.grad is not None else None,
             "none": none.grad}
    none_before = none.detach().clone()
    opt.step()
    torch.save({"grads": grads, "none_unchanged": torch.equal(none.detach(), none_before),
                "none_state": dict(opt.state.get(none, {})),
                "weights": [p.detach().clone() for p in (both, one, none)]}, f"{out}/rank{rank}.pt")
    d.close()


def run_ranks(fn, args: tuple, limit_s: float = 120, nprocs: int = 2) -> None:
    """``fn(rank, *args)`` in ``nprocs`` spawned processes; fails the test if they outlast
    ``limit_s`` (ranks waiting for each other) and kills what is left."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    try:
        t0 = time.monotonic()
        while not ctx.join(timeout=2):
            if time.monotonic() - t0 > limit_s:
                pytest.fail(f"{nprocs} ranks still running after {limit_s} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


def test_two_ranks_agree_on_grads_and_skip_untouched(tmp_path):
    run_ranks(_rank_worker, (2, free_port(), str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in ("both", "one"):
        assert torch.equal(r0["grads"][name], r1["grads"][name]), name
    torch.testing.assert_close(r0["grads"]["both"], torch.full((4,), 1.5))  # mean of 1 and 2
    torch.manual_seed(0)
    _, one_init, _ = (torch.randn(n) for n in (4, 3, 2))
    torch.testing.assert_close(r0["grads"]["one"], one_init)  # 2*w on rank 0, zeros on rank 1, mean
    for r in (r0, r1):
        assert r["grads"]["none"] is None
        assert r["none_unchanged"] and "step" not in r["none_state"]
    assert identical(r0["weights"], r1["weights"])
