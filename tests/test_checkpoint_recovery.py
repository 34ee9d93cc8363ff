"""Issue 25: a kill between the renames of a checkpoint write and its clean-up leaves
``last.old``/``best.old``/``*.tmp`` folders. Resume (``recover`` then ``repair_best``, as the
trainer calls them) must end with exactly ``last`` and ``best``, the checkpoint resume takes
being the last one completed (or the one in flight), and ``best`` the model ``last`` names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from polyhead.training import checkpoint as ckpt


class Model:
    """Stands for MultiTaskModel: its "weights" are the step it was saved at."""

    def __init__(self, step):
        self.step = step

    def save(self, folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_text(str(self.step))


def _last(folder: Path, step: int, best_step: int | None) -> None:
    Model(step).save(folder)
    torch.save({"step": step, "best": step / 10, "best_step": best_step}, folder / ckpt.STATE_FILE)


def _best(folder: Path, step: int) -> None:
    Model(step).save(folder)
    (folder / ckpt.META_FILE).write_text(f'{{"step": {step}, "criterion": {step / 10}}}\n')


def _partial(folder: Path) -> None:  # a .tmp the kill hit while it was being written
    folder.mkdir()
    (folder / "config.json").write_text("{}")


def _resume(run: Path):
    """What the trainer does on --resume: recover, find the checkpoint, repair best/."""
    ckpt.recover(run)
    found = ckpt.find_resumable(run)
    if found is None:
        return None, None
    step = ckpt.read_state(found)["step"]
    return found, ckpt.repair_best(run, found, Model(step))


# Every state a kill leaves in a save at step 4 (previous: last/ = step 3, best/ = step 2),
# folder -> (writer, step, best_step): the write of last/, then, when step 4 improves, of best/.
# The repair resume makes of best/ (write_checkpoint(best) from last/) passes the same states as
# the improving save's best/ write. Expected: (step resumed from, step best/ holds, repair).
PLAIN_BEST = {"best": (_best, 2)}
STATES = {
    # the run's first save (step 1): nothing resumable until last/ is renamed in
    "first: last.tmp being written": ({"last.tmp": (_partial,)}, (None, None, None)),
    "first: last.tmp complete, not renamed": ({"last.tmp": (_last, 1, 1)}, (None, None, None)),
    "first: best.tmp being written": ({"last": (_last, 1, 1), "best.tmp": (_partial,)}, (1, 1, "from last")),
    "first: best.tmp complete, not renamed": ({"last": (_last, 1, 1), "best.tmp": (_best, 1)}, (1, 1, "from last")),
    "first: done": ({"last": (_last, 1, 1), "best": (_best, 1)}, (1, 1, "ok")),
    # a save that does not improve (step 4 names step 2)
    "plain: last.tmp being written": ({"last": (_last, 3, 2), "last.tmp": (_partial,), **PLAIN_BEST}, (3, 2, "ok")),
    "plain: last.tmp complete": ({"last": (_last, 3, 2), "last.tmp": (_last, 4, 2), **PLAIN_BEST}, (3, 2, "ok")),
    "plain: last -> last.old": ({"last.old": (_last, 3, 2), "last.tmp": (_last, 4, 2), **PLAIN_BEST}, (3, 2, "ok")),
    "plain: last.tmp -> last, last.old left": ({"last.old": (_last, 3, 2), "last": (_last, 4, 2), **PLAIN_BEST},
                                               (4, 2, "ok")),
    "plain: done": ({"last": (_last, 4, 2), **PLAIN_BEST}, (4, 2, "ok")),
    # a save that improves: last/ (naming step 4), then best/
    "improving: last.tmp being written": ({"last": (_last, 3, 2), "last.tmp": (_partial,), **PLAIN_BEST},
                                          (3, 2, "ok")),
    "improving: last -> last.old": ({"last.old": (_last, 3, 2), "last.tmp": (_last, 4, 4), **PLAIN_BEST},
                                    (3, 2, "ok")),
    "improving: last.tmp -> last, last.old left": ({"last.old": (_last, 3, 2), "last": (_last, 4, 4), **PLAIN_BEST},
                                                   (4, 4, "from last")),
    "improving: best.tmp being written": ({"last": (_last, 4, 4), "best.tmp": (_partial,), **PLAIN_BEST},
                                          (4, 4, "from last")),
    "improving: best.tmp complete": ({"last": (_last, 4, 4), "best.tmp": (_best, 4), **PLAIN_BEST},
                                     (4, 4, "from last")),
    "improving: best -> best.old": ({"last": (_last, 4, 4), "best.old": (_best, 2), "best.tmp": (_best, 4)},
                                    (4, 4, "from last")),
    # issue 25 (seed 5): killed before `rmtree best.old` of the run's last improving save
    "improving: best.tmp -> best, best.old left": ({"last": (_last, 4, 4), "best.old": (_best, 2),
                                                    "best": (_best, 4)}, (4, 4, "ok")),
    "improving: done": ({"last": (_last, 4, 4), "best": (_best, 4)}, (4, 4, "ok")),
    # best/ renamed away and the new one not in, while last/ still names the old best
    "best.old holds the best last names": ({"last": (_last, 4, 2), "best.old": (_best, 2)}, (4, 2, "from best.old")),
    # a state written before best_step existed: best.old goes, or comes back when best/ is missing
    "no best_step: best.old left": ({"last": (_last, 4, None), "best.old": (_best, 2), "best": (_best, 4)},
                                    (4, 4, "ok")),
    "no best_step: best/ missing": ({"last": (_last, 4, None), "best.old": (_best, 2)}, (4, 2, "ok")),
}


@pytest.mark.parametrize("name", list(STATES))
def test_resume_recovers_every_state_a_kill_leaves(tmp_path, name):
    folders, (resume_step, best_step, repair) = STATES[name]
    run = tmp_path / "run"
    run.mkdir()
    for folder, (make, *args) in folders.items():
        make(run / folder, *args)
    found, answer = _resume(run)
    left = sorted(p.name for p in run.iterdir())
    if resume_step is None:  # nothing was committed: a fresh start, nothing left behind
        assert found is None and left == []
        return
    assert left == ["best", "last"] and found == run / "last"
    assert ckpt.read_state(found)["step"] == resume_step and answer == repair
    assert (run / "best" / "model.safetensors").read_text() == str(best_step)
    assert ckpt.read_meta(run / "best")["step"] == best_step
    # a second resume finds nothing to do
    assert _resume(run)[1] == "ok" and sorted(p.name for p in run.iterdir()) == left


class _Kill(BaseException):  # like SIGKILL: nothing is cleaned up
    pass


def _save(run: Path, step: int, improves: bool, best_step: int) -> None:
    """Trainer.save: last/ (naming its best), then best/ when it improved."""
    best_step = step if improves else best_step
    model = Model(step)
    ckpt.write_checkpoint(run / "last", model, {"step": step, "best": step / 10, "best_step": best_step})
    if improves:
        ckpt.write_checkpoint(run / "best", model, meta={"step": step, "criterion": step / 10})


def _ops(monkeypatch, kill_at: int | None) -> list:
    """Counts the filesystem operations of a write; raises _Kill just before the kill_at-th."""
    seen = []

    def watch(real):
        def wrapper(*args, **kwargs):
            seen.append(real)
            if kill_at is not None and len(seen) - 1 == kill_at:
                raise _Kill
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ckpt.shutil, "rmtree", watch(shutil.rmtree))
    monkeypatch.setattr(Path, "rename", watch(Path.rename))
    monkeypatch.setattr(ckpt.torch, "save", watch(torch.save))
    monkeypatch.setattr(Model, "save", watch(Model.save))
    return seen


@pytest.mark.parametrize("improves", [False, True])
def test_a_kill_before_any_operation_of_a_save_resumes_clean(tmp_path, monkeypatch, improves):
    """The same, driven by the real write: a kill before each operation of a save at step 4."""
    probe = tmp_path / "probe"
    probe.mkdir()
    _save(probe, 3, True, 3)
    with monkeypatch.context() as m:
        ops = _ops(m, None)
        _save(probe, 4, improves, 3)
    n = len(ops)
    assert n >= (10 if improves else 5)
    for kill_at in range(n + 1):
        run = tmp_path / f"run{kill_at}"
        run.mkdir()
        _save(run, 3, True, 3)
        with monkeypatch.context() as m:
            _ops(m, kill_at)
            if kill_at < n:
                with pytest.raises(_Kill):
                    _save(run, 4, improves, 3)
            else:
                _save(run, 4, improves, 3)
        found, _ = _resume(run)
        assert sorted(p.name for p in run.iterdir()) == ["best", "last"], kill_at
        step = ckpt.read_state(found)["step"]
        assert step in (3, 4), kill_at  # the previous checkpoint or the one in flight, never none
        want = ckpt.read_state(found)["best_step"]
        assert (run / "best" / "model.safetensors").read_text() == str(want), kill_at
