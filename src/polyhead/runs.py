"""Run folders: the names of the files a run holds, which checkpoint a path means, and the
decision thresholds ``polyhead evaluate`` calibrates.

    <run>/config.json, calibration.json, cohort.safetensors, interpolation.json, metrics.json
    <run>/best/, <run>/last/   checkpoints: config.json, model.safetensors, tokenizer/

Base floor: file names and paths only, so training, evaluation, inference and the benches
spell them once.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "config.json"  # the full Config, label vocabularies included
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"  # a Whisper decoder head's tokenizer, beside its weights
CALIBRATION_FILE = "calibration.json"  # dev-set thresholds, written by `polyhead evaluate`
COHORT_FILE = "cohort.safetensors"  # the AS-norm cohort, beside calibration.json
INTERPOLATION_FILE = "interpolation.json"  # retention's weight interpolation record
METRICS_FILE = "metrics.json"  # `polyhead evaluate`'s results
BEST, LAST = "best", "last"
# Where a checkpoint sits under a path given as a run: its own best, the demo's multitask run,
# then the last one written (a run stopped before its first evaluation).
CHECKPOINT_CANDIDATES = ("", BEST, "multitask/" + BEST, LAST)


def checkpoint_folder(path: str | Path, checkpoint: str | None = None) -> Path:
    """The checkpoint folder (one holding WEIGHTS_FILE) that ``path`` means: the path itself
    or one of CHECKPOINT_CANDIDATES under it; with ``checkpoint`` ("best", "last"), that one
    under the run first. Raises FileNotFoundError when there is none."""
    path = Path(path)
    names = (checkpoint, "") if checkpoint else CHECKPOINT_CANDIDATES
    for name in names:
        candidate = path / name if name else path
        if (candidate / WEIGHTS_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no polyhead checkpoint ({CONFIG_FILE} + {WEIGHTS_FILE}) found")


def calibration_dir(folder: str | Path) -> Path | None:
    """Where the calibration of a checkpoint folder is: the folder itself (an export) or its
    run (one level up); None when uncalibrated."""
    folder = Path(folder)
    for where in (folder, folder.parent):
        if (where / CALIBRATION_FILE).is_file():
            return where
    return None


def read_calibration(folder: str | Path) -> tuple[dict, Path | None]:
    """(the calibration of a checkpoint folder, the folder that holds it); ({}, None) when none."""
    where = calibration_dir(folder)
    if where is None:
        return {}, None
    return json.loads((where / CALIBRATION_FILE).read_text()), where


def write_calibration(run: str | Path, calibration: dict) -> Path:
    path = Path(run) / CALIBRATION_FILE
    path.write_text(json.dumps(calibration, indent=2) + "\n")
    return path


def apply_calibration(model, calibration: dict) -> None:
    """Set the decision thresholds ``polyhead evaluate`` picked on dev sets (calibration.json)
    on a MultiTaskModel (duck-typed: this floor knows no model)."""
    if "vad_threshold" in calibration:
        for task in model.tasks_with(target="vad"):
            model.heads[task].threshold = float(calibration["vad_threshold"])
