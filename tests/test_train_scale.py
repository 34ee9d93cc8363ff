"""Training at the papers' scale (issue 12, item 3): gradient accumulation, bf16 autocast,
torch.compile of the encoder layers, and torchrun through the command line with checkpoints
that resume on another number of ranks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml

from polyhead.config import Config
from polyhead.model import MultiTaskModel
from polyhead.training import checkpoint as ckpt
from polyhead.data.batching import Batch
from polyhead.tasks.speech import TextTarget
from polyhead.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")

TASKS = {
    "asr": dict(head=dict(type="ctc", options=dict(dropout=0.0)), target="text", train_sets=["speech_train"]),
    # a classifier, not a speaker head: the speaker head's batch norm normalises each
    # micro-batch by its own statistics, as it does each rank's batch
    "lid": dict(head=dict(type="classifier", options=dict(hidden=16, dropout=0.0)), target="language",
                train_sets=["speaker_train"], crop=1.0),
}


def _config(corpus, layers: int = 2, **train) -> Config:
    """A tiny conformer without dropout or augmentation: a step is a function of its batches."""
    train = dict(dict(step="disjoint", steps=10, lr=1e-3, max_duration=30.0, eval_every=10**6,
                      spec_augment=False, clip_norm=0.0), **train)
    return Config.model_validate(dict(
        corpus=str(corpus), encoder=dict(name="conformer", dim=32, layers=layers, heads=2, ff_mult=2, dropout=0.0),
        tasks=TASKS, train=train))


def _rows(batch: Batch, rows: list[int]) -> Batch:
    """The batch's ``rows``, padded as in the whole batch (so the halves of a batch are the
    batch, cut in two)."""
    idx = torch.tensor(rows)

    def pick(v):
        if isinstance(v, TextTarget):
            return TextTarget(v.ids[idx], v.lengths[idx], [v.texts[i] for i in rows],
                              None if v.tasks is None else [v.tasks[i] for i in rows])
        return v[idx]

    return Batch(batch.inputs[idx], batch.lengths[idx], {k: pick(v) for k, v in batch.targets.items()},
                 [batch.cut_ids[i] for i in rows], batch.seconds * len(rows) / len(batch.cut_ids))


class _Replay:
    """A stream that hands out the given batches in turn and records the keys it was asked with."""

    def __init__(self, batches: list[Batch]):
        self.batches, self.keys = batches, []

    def next(self, key: int) -> Batch:
        self.keys.append(key)
        return self.batches[(len(self.keys) - 1) % len(self.batches)]


@pytest.mark.parametrize("aggregator", ["sum", "upgrad"])
def test_accumulated_halves_update_as_the_whole_batch(tiny_corpus, tmp_path, aggregator):
    """accumulate=2 over the two halves of each task's batch gives the gradients, and so the
    update, of accumulate=1 over the whole batches; with an aggregator, the per-task gradients
    it combines are the accumulated ones."""
    folder, _ = tiny_corpus
    whole, halves = (Trainer(_config(folder, accumulate=n, aggregator=dict(name=aggregator)),
                             tmp_path / f"run{n}", progress=False) for n in (1, 2))
    for t in TASKS:
        batch = whole.streams[t].next(0)
        n = len(batch.cut_ids) // 2 * 2
        assert n >= 2, f"{t}: batch of {len(batch.cut_ids)}"
        whole.streams[t] = _Replay([_rows(batch, list(range(n)))])
        halves.streams[t] = _Replay([_rows(batch, list(range(n // 2))), _rows(batch, list(range(n // 2, n)))])
    assert all(torch.equal(a, b) for a, b in zip(whole.model.parameters(), halves.model.parameters()))
    # plain SGD, whose update is the gradient itself: Adam's first step is about lr * sign(g),
    # blind to a gradient's scale and flipped by rounding where g is near zero
    for trainer in (whole, halves):
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
        trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
    start = {n: p.detach().clone() for n, p in whole.model.named_parameters()}
    rec_whole, rec_halves = whole.train_step(), halves.train_step()
    assert halves.streams["asr"].keys == [0, 1]  # one key per micro-step: the halves draw apart
    for (name, a), b in zip(whole.model.named_parameters(), halves.model.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=name)
        assert a.grad is None or not torch.equal(a, start[name]), name  # it did move
    for t in TASKS:
        assert rec_halves[f"loss/{t}"] == pytest.approx(rec_whole[f"loss/{t}"], rel=1e-5)
    if aggregator != "sum":
        assert rec_halves["agg/asr"] == pytest.approx(rec_whole["agg/asr"], rel=1e-4)


def test_bf16_autocasts_the_forward_only(tiny_corpus, tmp_path):
    """precision=bf16 on CPU: the encoder runs in bf16 under autocast (device type from the
    model's device), the losses are computed in fp32 outside it, and parameters, gradients and
    optimiser state stay fp32."""
    folder, _ = tiny_corpus
    trainer = Trainer(_config(folder, precision="bf16"), tmp_path / "run", progress=False)
    seen = {"layer": [], "loss": []}
    for module in trainer.model.encoder.layers.modules():  # layer norms give fp32 under autocast
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)):
            module.register_forward_hook(lambda m, i, out: seen["layer"].append(out.dtype))
    for name, head in trainer.model.heads.items():
        def loss(out, target, _inner=head.loss):
            value = _inner(out, target)
            seen["loss"].append((torch.is_autocast_enabled("cpu"), value.dtype))
            return value
        head.loss = loss
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    rec = trainer.train_step()
    assert seen["layer"] and set(seen["layer"]) == {torch.bfloat16}
    assert seen["loss"] and set(seen["loss"]) == {(False, torch.float32)}
    assert not rec["skipped"] and all(torch.isfinite(torch.tensor(rec[f"loss/{t}"])) for t in TASKS)
    for n, p in trainer.model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), n
        assert p.grad is None or p.grad.dtype == torch.float32, n
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    states = [s for s in trainer.optimizer.state.values() if "exp_avg" in s]
    assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)


def test_compile_falls_back_with_a_warning(tiny_corpus, tmp_path, monkeypatch, caplog):
    """Where torch.compile cannot run, train.compile warns once, naming why, and trains eager."""
    folder, _ = tiny_corpus

    def unavailable(*_args, **_kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unavailable)
    with caplog.at_level(logging.WARNING, logger="polyhead.training.trainer"):
        trainer = Trainer(_config(folder, compile=True), tmp_path / "run", progress=False)
    assert "torch.compile does not work here (RuntimeError: Dynamo is not supported" in caplog.text
    assert all(layer._compiled_call_impl is None for layer in trainer.model.encoder.layers)
    assert not trainer.train_step()["skipped"]


@pytest.mark.slow  # inductor compiles each layer's forward and backward on CPU: minutes here
def test_compiled_layers_train_and_checkpoint(tiny_corpus, tmp_path):
    """train.compile: the layers are compiled, steps on batches of different lengths run, and
    the checkpoint has the eager model's parameter names."""
    folder, _ = tiny_corpus
    trainer = Trainer(_config(folder, layers=1, compile=True), tmp_path / "run", progress=False)
    assert all(layer._compiled_call_impl is not None for layer in trainer.model.encoder.layers)
    for _ in range(2):
        rec = trainer.train_step()
        assert not rec["skipped"] and all(torch.isfinite(torch.tensor(rec[f"loss/{t}"])) for t in TASKS)
    trainer.save()
    eager = MultiTaskModel.load(tmp_path / "run" / "last")
    assert eager.state_dict().keys() == trainer.model.state_dict().keys()


def _torchrun(nproc: int, args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "polyhead.cli", "train", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_torchrun_cli_resumes_on_another_number_of_ranks(tiny_corpus, tmp_path):
    """`torchrun ... -m polyhead.cli train` on 2 gloo ranks, resumed on 1 process and then on 2
    again: each resume keeps the share of the epoch already trained on (a position counts its
    rank's batches) and the global batch (accumulate x ranks)."""
    folder, _ = tiny_corpus
    tree = _config(folder, max_duration=8.0, eval_every=2).model_dump(mode="json")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tree))
    run = tmp_path / "run"

    def position() -> tuple[int, int, int]:
        st = ckpt.read_state(run / "last")
        return st["world_size"], st["streams"]["asr"]["epoch"], st["streams"]["asr"]["position"]

    # 2 ranks, 2 micro-batches each: 2 steps take 4 batches per rank, 8 of the epoch
    _torchrun(2, ["--config", str(tmp_path / "tiny.yaml"), "--run-dir", str(run), "train.steps=2",
                  "train.accumulate=2"])
    assert position() == (2, 0, 4)
    # 1 process, 4 micro-batches: the same global batch; 8 batches in, then 4 more
    from polyhead.cli import main

    assert main(["train", "--run", str(run), "--resume", "train.steps=3", "train.accumulate=4"]) == 0
    assert position() == (1, 0, 12)
    # 2 ranks again: 12 batches in are 6 per rank, then 2 more
    _torchrun(2, ["--run-dir", str(run), "--resume", "train.steps=4", "train.accumulate=2"])
    assert position() == (2, 0, 8)
    assert ckpt.read_state(run / "last")["step"] == 4
