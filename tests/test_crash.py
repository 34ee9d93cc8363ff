"""Crash safety: `polyhead train` killed with SIGKILL at random points and resumed with
--resume ends with exactly the weights of a run that was never interrupted; a checkpoint
write cut short at any point leaves a complete checkpoint to resume from."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from polyhead.cli import main
from polyhead.training import checkpoint as ckpt

STEPS, EVAL_EVERY, KILLS = 24, 3, 5


def _config(corpus, path):
    """A tiny two-task model, no dev sets (evaluation is free), a checkpoint every 3 steps;
    dropout and SpecAugment on, so their random draws must resume exactly too."""
    path.write_text(yaml.safe_dump(dict(
        corpus=str(corpus),
        encoder=dict(name="conformer", dim=32, layers=2, heads=2, ff_mult=2, dropout=0.1),
        tasks=dict(asr=dict(head=dict(type="ctc"), target="text", train_sets=["speech_train"]),
                   speaker=dict(head=dict(type="speaker", options=dict(pooling="mean", emb_dim=16)),
                                target="speaker", train_sets=["speaker_train"], crop=1.0)),
        train=dict(step="disjoint", steps=STEPS, lr=1e-3, max_duration=8.0, eval_every=EVAL_EVERY,
                   log_every=1, seed=0, weighting=dict(name="dynamic")))))
    return path


def _logged_steps(log, start: int) -> list[int]:
    """Steps logged in train_log.jsonl after byte ``start`` (this process's lines)."""
    if not log.is_file():
        return []
    with open(log, "rb") as f:
        f.seek(start)
        lines = f.read().decode(errors="replace").splitlines()
    steps = []
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass  # a line still being written
    return steps


def test_kill_9_at_random_points_then_resume_is_exact(tiny_corpus, tmp_path):
    config = _config(tiny_corpus[0], tmp_path / "tiny.yaml")
    reference = tmp_path / "straight"
    assert main(["train", "--config", str(config), "--run", str(reference)]) == 0

    run, log = tmp_path / "killed", tmp_path / "killed" / "train_log.jsonl"
    rng = random.Random(int(os.environ.get("POLYHEAD_KILL_SEED", "0")))
    # Kill points: the first during start-up (a random delay), the others once a random step
    # has been logged, plus a random fraction of a step (some land inside a checkpoint write).
    targets = sorted(rng.sample(range(2, STEPS - 1), KILLS - 1))
    argv = [sys.executable, "-m", "polyhead.cli", "train", "--config", str(config), "--run", str(run), "--resume"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    kills = []
    for target in [None, *targets, "finish"]:
        start = log.stat().st_size if log.is_file() else 0
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if target == "finish":
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            break
        deadline = time.monotonic() + 120
        if target is None:
            time.sleep(rng.uniform(0.5, 2.0))
        else:
            while max(_logged_steps(log, start), default=-1) < target and proc.poll() is None:
                assert time.monotonic() < deadline, "training made no progress"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            found = ckpt.find_resumable(run)
            kills.append((target, ckpt.read_state(found)["step"] if found else None))
    print("killed at (target step, checkpoint step):", kills)
    assert len(kills) >= 5, kills

    assert not list(run.glob("*.tmp")) and not list(run.glob("*.old"))
    for name in ("last", "best"):
        want = load_file(str(reference / name / "model.safetensors"))
        got = load_file(str(run / name / "model.safetensors"))
        assert want.keys() == got.keys()
        for key, tensor in want.items():
            assert torch.equal(got[key], tensor), (name, key)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == STEPS and summary["stopped"] == "steps"
    straight = json.loads((reference / "train_summary.json").read_text())
    assert summary["history"] == straight["history"]


@pytest.mark.parametrize("cut_at", ["save", "state", "rename_old", "rename_new", "cleanup"])
def test_checkpoint_write_cut_short_leaves_a_resumable_checkpoint(tmp_path, monkeypatch, cut_at):
    """Simulate a crash at each stage of write_checkpoint: what is left on disk always
    resumes from a complete checkpoint, the new one or the previous one."""

    class Model:
        def __init__(self, step):
            self.step = step

        def save(self, folder):
            folder.mkdir(parents=True)
            (folder / "config.json").write_text("{}")
            (folder / "model.safetensors").write_text(str(self.step))
            if cut_at == "save" and self.step == 2:
                raise _Crash

    class _Crash(BaseException):  # like SIGKILL: nothing is cleaned up
        pass

    folder = tmp_path / "last"
    ckpt.write_checkpoint(folder, Model(1), {"step": 1})
    real_save, real_rename, real_rmtree = torch.save, type(folder).rename, ckpt.shutil.rmtree

    def save(obj, path):
        real_save(obj, path)
        if cut_at == "state":
            raise _Crash

    def rename(self, target):
        if (cut_at, self.name) in (("rename_old", "last"), ("rename_new", "last.tmp")):
            raise _Crash
        return real_rename(self, target)

    def rmtree(path, ignore_errors=False):
        if cut_at == "cleanup" and path.name == "last.old" and path.exists():
            raise _Crash
        return real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(ckpt.torch, "save", save)
    monkeypatch.setattr(type(folder), "rename", rename)
    monkeypatch.setattr(ckpt.shutil, "rmtree", rmtree)
    with pytest.raises(_Crash):
        ckpt.write_checkpoint(folder, Model(2), {"step": 2})
    monkeypatch.undo()

    found = ckpt.find_resumable(tmp_path)
    step = ckpt.read_state(found)["step"]
    assert (found / "model.safetensors").read_text() == str(step)
    assert step == (2 if cut_at == "cleanup" else 1)
    # the next write recovers whatever was left over
    ckpt.write_checkpoint(folder, Model(3), {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert ckpt.read_state(ckpt.find_resumable(tmp_path))["step"] == 3
