"""Run folders and crash-safe checkpoints.

    <run>/last/   config.json, model.safetensors, trainer_state.pt   (resume from here)
    <run>/best/   config.json, model.safetensors, checkpoint.json    (selected by the criterion)

``best/checkpoint.json`` says which evaluation chose it (``step``, ``criterion``) and ``last``'s
state names the step of its best (``best_step``); ``last`` is written first, so a crash between
the two writes leaves ``last`` naming its own step as best, and resume re-creates ``best`` from
it (``repair_best``).

A checkpoint folder is written under a temporary name, flushed to disk (fsync) and renamed
into place; the previous one is removed only after that, so a crash (kill -9, power loss) or a
full disk never leaves a half checkpoint. A crash between the renames and the clean-up leaves
``.old``/``.tmp`` folders; resume clears them (``recover``, then ``repair_best`` for ``best.old``).
Trainer state holds only tensors and plain Python values and is read with
``torch.load(weights_only=True)``: no pickle of arbitrary objects.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..runs import BEST, LAST, WEIGHTS_FILE

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"
META_FILE = "checkpoint.json"  # which evaluation a best/ checkpoint holds: {"step", "criterion"}


class CheckpointError(RuntimeError):
    pass


def write_checkpoint(folder: Path, model, state: dict | None = None, meta: dict | None = None) -> None:
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(tmp)
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        if meta is not None:
            (tmp / META_FILE).write_text(json.dumps(meta) + "\n")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise CheckpointError(f"disk full while writing {folder}; the previous checkpoint is kept") from None
        raise CheckpointError(f"cannot write checkpoint {folder}: {e}") from None
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    _fsync(folder.parent)  # the rename itself reaches the disk
    shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """A small file (summaries) that a crash leaves either old or new, never half written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync(tmp)
    tmp.replace(path)


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(run_dir: Path) -> None:
    """Undo or finish a write of ``last`` that a crash cut short, before resuming: ``last.old``
    goes once ``last`` is complete, or is renamed back when ``last`` is missing (a crash between
    the two renames); ``*.tmp`` folders were never renamed in, so they go. ``best.old`` is left
    to ``repair_best``, which knows the step ``last`` names as best."""
    run_dir = Path(run_dir)
    changed = False
    for name in (LAST, BEST):
        tmp = run_dir / (name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            changed = True
    last, old = run_dir / LAST, run_dir / (LAST + ".old")
    if old.exists():
        if _resumable(last):
            shutil.rmtree(old, ignore_errors=True)
            changed = True
        elif not last.exists() and _resumable(old):
            old.rename(last)
            changed = True
            log.warning("%s: last/ restored from last.old (a crash hit while it was replaced)", run_dir)
    if changed:
        _fsync(run_dir)


def _resumable(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def find_resumable(run_dir: Path) -> Path | None:
    """The last complete checkpoint: ``last``, or ``last.old`` if a crash hit mid-rename."""
    for name in (LAST, LAST + ".old"):
        folder = Path(run_dir) / name
        if _resumable(folder):
            return folder
    return None


def read_state(folder: Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")


def read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def repair_best(run_dir: Path, resumed: Path, model) -> str:
    """Make ``<run>/best`` the checkpoint that ``resumed``'s state names as best
    (``best_step``), after a crash between the two writes of an evaluation. Returns what was
    done: "ok" (they agree, or the state predates ``best_step``), "from best.old" (a crash
    mid-rename of best), "from last" (best is this very checkpoint: ``model`` holds its weights)
    or "unknown" (nothing holds it: logged, best left as it is)."""
    run_dir = Path(run_dir)
    want = read_state(resumed).get("best_step")
    best, old = run_dir / BEST, run_dir / (BEST + ".old")
    if want is None or ((read_meta(best) or {}).get("step") == want and (best / WEIGHTS_FILE).is_file()):
        # a crash after best/ was renamed in, before the previous one was deleted
        if old.exists():
            if (best / WEIGHTS_FILE).is_file():
                shutil.rmtree(old, ignore_errors=True)
            elif (old / WEIGHTS_FILE).is_file():  # no best_step, cut between the renames: keep it
                shutil.rmtree(best, ignore_errors=True)
                old.rename(best)
            _fsync(run_dir)
        return "ok"
    if (read_meta(old) or {}).get("step") == want and (old / WEIGHTS_FILE).is_file():
        shutil.rmtree(best, ignore_errors=True)
        old.rename(best)
        _fsync(run_dir)
        log.warning("%s: best/ restored from best.old (a crash hit while it was replaced)", run_dir)
        return "from best.old"
    state = read_state(resumed)
    if state["step"] == want:
        write_checkpoint(best, model, meta={"step": want, "criterion": state["best"]})
        log.warning("%s: best/ did not hold the step-%d checkpoint %s names as best (a crash between the "
                    "two writes); re-created from it", run_dir, want, resumed.name)
        return "from last"
    log.warning("%s: best/ does not hold the step-%d checkpoint %s names as best, and nothing else does",
                run_dir, want, resumed.name)
    return "unknown"
