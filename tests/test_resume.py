"""Resume semantics: overrides given with --resume are applied (how long, how often) with a
warning or refused (what is trained) with a message naming the key, and the time budget counts
the training time spent before the crash."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from polyhead.cli import main
from polyhead.training import trainer as trainer_module
from polyhead.training.trainer import Trainer
from test_training import small_config

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")


def test_resume_applies_safe_overrides_and_refuses_the_rest(tiny_corpus, tmp_path, capsys, caplog):
    folder, _ = tiny_corpus
    run = tmp_path / "run"
    base = [f"corpus={folder}", "encoder.dim=32", "encoder.layers=2", "train.eval_every=2",
            "train.time_budget_s=null", "~tasks.lid", "~tasks.vad", "tasks.speaker.train_sets=[speaker_train]",
            "~train.weighting.options.weights.lid", "~train.weighting.options.weights.vad"]
    train = ["train", "--config", "scratch", "--run", str(run)]
    assert main([*train, *base, "train.steps=2"]) == 0

    capsys.readouterr()
    assert main([*train, "--resume", "encoder.dim=48"]) == 2  # another model: refused, nothing trained
    assert "'encoder.dim'" in capsys.readouterr().err
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 2

    assert main([*train, "--resume", "train.steps=3"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 3
    assert "train.steps 2 -> 3" in caplog.text


def test_resume_counts_the_time_already_spent(tiny_corpus, tmp_path, monkeypatch):
    """Every step takes 30 s of a fake clock under a 100 s budget: a run that crashes after
    its step-2 checkpoint (60 s spent) has 40 s left when resumed, so it stops at step 4
    (120 s), as an unbroken run would; restarting the clock would let it run to step 6."""
    folder, _ = tiny_corpus
    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(time=lambda: clock[0]))
    step = Trainer.train_step

    def slow_step(self):
        if crash and self.step == 3:
            raise KeyboardInterrupt  # the crash: after the checkpoint of step 2
        clock[0] += 30.0
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", slow_step)
    config = small_config(folder, steps=10, eval_every=2, time_budget_s=100.0)
    crash = True
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "run", progress=False).fit()
    crash = False
    summary = Trainer(config, tmp_path / "run", resume=True, progress=False).fit()
    assert summary["stopped"] == "time budget"
    assert summary["steps"] == 4


def test_budget_refit_after_a_rollback_measures_afresh():
    """A rollback moves the step back behind the budget's last mark: the refit must not
    divide by a zero or negative number of steps, and measures from the new step on."""
    from types import SimpleNamespace

    from polyhead.training.trainer import EVAL_TIME_SHARE, Trainer

    t = Trainer.__new__(Trainer)
    t.config = SimpleNamespace(train=SimpleNamespace(schedule=(0.1, 0.4, 0.5), steps=100, eval_every=10,
                                                     time_budget_s=1000.0))
    t.step, t._eval_seconds, t._configured_steps = 20, 0.0, None
    t._budget_mark = (30, 300.0)  # marked at step 30, then rolled back to step 20
    t._fit_schedule_to_budget(elapsed=310.0)
    assert t._budget_mark == (20, 310.0) and t.config.train.steps == 100
    t.step = 30  # ten steps later at 10 s each, with 590 s of the budget left
    t._fit_schedule_to_budget(elapsed=410.0)
    assert t.config.train.steps == 30 + int(590 / 10 * (1 - EVAL_TIME_SHARE))
