"""Run folders and crash-safe checkpoints.

    <run>/last/   config.json, model.safetensors, trainer_state.pt   (resume from here)
    <run>/best/   config.json, model.safetensors                      (selected by the criterion)

A checkpoint folder is written under a temporary name, flushed to disk (fsync) and renamed
into place; the previous one is removed only after that, so a crash (kill -9, power loss) or a
full disk never leaves a half checkpoint.
Trainer state holds only tensors and plain Python values and is read with
``torch.load(weights_only=True)``: no pickle of arbitrary objects.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch

STATE_FILE = "trainer_state.pt"


class CheckpointError(RuntimeError):
    pass


def write_checkpoint(folder: Path, model, state: dict | None = None) -> None:
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(tmp)
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
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


def find_resumable(run_dir: Path) -> Path | None:
    """The last complete checkpoint: ``last``, or ``last.old`` if a crash hit mid-rename."""
    for name in ("last", "last.old"):
        folder = Path(run_dir) / name
        if (folder / STATE_FILE).is_file() and (folder / "model.safetensors").is_file():
            return folder
    return None


def read_state(folder: Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")
