"""`polyhead sweep`: a grid over config values, run one after another, picked by the criterion.

A sweep file names a base config and either a grid (every combination) or named variants
(each a list of overrides), or both (variants x grid):

    base: bench
    grid:
      train.lr: [1.0e-4, 1.78e-4, 3.16e-4]
    variants:
      static_0.5: [train.weighting.name=static, "train.weighting.options={weights: {asr: 0.5, speaker: 0.5}}"]
      dynamic:    [train.weighting.name=dynamic]

Runs go to ``<out>/<variant>__<key>=<value>...``; finished runs are skipped, so a sweep can
be resumed, and several `polyhead sweep` processes on the same ``--out`` share the work (each
run is locked while one process trains it; a crashed process's lock goes with it). Diverged
runs (non-finite training, or WER ~100% and EER ~50% as the papers saw at high learning rates) are marked as diverged and never selected. ``--backend optuna``
samples the same grid with Optuna (installed separately) instead of enumerating it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import math
import shutil
from pathlib import Path

import yaml

from .config import load_config

log = logging.getLogger(__name__)
DIVERGED_WER = 0.99
DIVERGED_EER = 0.45


def expand(spec: dict) -> dict[str, list[str]]:
    """Sweep spec -> {run name: overrides}."""
    grid = spec.get("grid") or {}
    variants = spec.get("variants") or {"base": []}
    keys = list(grid)
    runs = {}
    for vname, voverrides in variants.items():
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            name = "__".join([vname] + [f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values)])
            runs[name] = list(voverrides) + [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]
    return runs


def is_diverged(summary: dict, dev: dict) -> bool:
    """Training stopped on divergence, or the dev metrics are non-finite or all at chance
    level (WER ~100%, EER ~50%: what the papers saw at too high a learning rate)."""
    if summary.get("stopped") == "diverged":
        return True
    metrics = [(k, v) for per_set in dev.values() for m in per_set.values()
               for k, v in m.items() if k in ("wer", "eer") and v is not None]
    if any(not math.isfinite(v) for _, v in metrics):
        return True
    at_chance = [v >= (DIVERGED_WER if k == "wer" else DIVERGED_EER) for k, v in metrics]
    return bool(at_chance) and all(at_chance)


def measured(dev: dict) -> set[str]:
    """The criterion metrics (wer, eer) a run's dev results contain."""
    return {k for per_set in dev.values() for m in per_set.values() for k, v in m.items()
            if k in ("wer", "eer") and v is not None}


def run_sweep(spec_path: str | Path, out: str | Path, extra: list[str] = (), backend: str = "local",
              trials: int | None = None, only: list[str] | None = None) -> dict:
    from .training.checkpoint import find_resumable
    from .training.trainer import TrainingDiverged, train

    spec = yaml.safe_load(Path(spec_path).read_text())
    runs = expand(spec)
    if only:  # a subset of the runs, e.g. what a smaller budget allows
        unknown = sorted(set(only) - set(runs))
        if unknown:
            raise ValueError(f"{spec_path}: no run named {', '.join(unknown)} (runs: {', '.join(runs)})")
        runs = {k: v for k, v in runs.items() if k in only}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}

    def one(name: str, overrides: list[str], wait: bool = True) -> dict | None:
        with _run_lock(out / f".{name}.lock", wait) as mine:
            # None: another process is training it; collected at the end
            return _result(out / name, overrides) if mine else None

    def _result(run_dir: Path, overrides: list[str]) -> dict:
        done = run_dir / "train_summary.json"
        if done.is_file():
            summary = json.loads(done.read_text())
        else:
            resume = find_resumable(run_dir) is not None
            if not resume and run_dir.exists():
                shutil.rmtree(run_dir)  # killed before its first checkpoint: its log starts over
            try:
                # resume: a run a killed sweep left half done continues from its last checkpoint
                summary = train(load_config(spec["base"], [*overrides, *extra]), run_dir, resume=resume,
                                progress=False)
            except TrainingDiverged as e:  # the trainer wrote its summary (stopped: diverged)
                summary = json.loads(done.read_text()) if done.is_file() else {"stopped": "diverged"}
                summary.setdefault("error", str(e))
        evaluated = summary.get("history") or []
        history = [h for h in evaluated if math.isfinite(h["criterion"])]
        best = min(history, key=lambda h: h["criterion"]) if history else {"criterion": float("inf"), "dev": {}}
        # every evaluation non-finite is divergence too, even if training never stopped on it
        diverged = is_diverged(summary, best["dev"]) or (bool(evaluated) and not history)
        return {"overrides": overrides, "criterion": best["criterion"], "dev": best["dev"], "diverged": diverged,
                **({"error": summary["error"]} if "error" in summary else {})}

    if backend == "optuna":
        import optuna  # optional: pip install optuna

        names = list(runs)
        study = optuna.create_study(direction="minimize")

        def objective(trial):
            name = trial.suggest_categorical("run", names)
            results[name] = one(name, runs[name])
            return float("inf") if results[name]["diverged"] else results[name]["criterion"]

        study.optimize(objective, n_trials=trials or len(names))
    else:
        busy = []
        for name, overrides in runs.items():
            r = one(name, overrides, wait=False)
            if r is None:
                busy.append(name)
                continue
            results[name] = r
            log.info("%s: criterion %.4f%s", name, results[name]["criterion"],
                     " (diverged)" if results[name]["diverged"] else "")
        for name in busy:  # wait for the other processes' runs
            results[name] = one(name, runs[name])
        results = {name: results[name] for name in runs}
    valid = {k: v for k, v in results.items() if not v["diverged"]}
    # A single-task baseline's criterion covers only its own metric (e.g. 1/4 WER, no EER
    # term): it is not comparable with the shared models', so pick among the most complete.
    most = max((len(measured(v["dev"])) for v in valid.values()), default=0)
    valid = {k: v for k, v in valid.items() if len(measured(v["dev"])) == most}
    best = min(valid, key=lambda k: valid[k]["criterion"]) if valid else None
    summary = {"best": best, "runs": results}
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


@contextlib.contextmanager
def _run_lock(path: Path, wait: bool):
    """An exclusive lock on ``path`` for the duration (flock: released if the process dies);
    yields False at once if another process holds it and ``wait`` is off."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
