"""How long the training loop waits on data (issue 12, item 1 and its Performance line).

For each value of ``train.loader_workers`` a fresh process builds the Trainer of
``--config`` (default: the scratch conformer, shrunk by ``--override``) and runs ``--steps``
training steps, timing each step and, inside it, each call that fetches a batch
(``BatchStream.next``: decoding, features, augmentation and collation in-process; with
workers only the wait for a prefetched batch). It prints per setting: mean step time, mean
data wait, their ratio (with and without the first ``--warmup`` steps, when workers start),
and peak RSS of the training process and of the largest worker.

    .venv/bin/python bench/input_pipeline.py                       # demo corpus, 0 vs 2 workers
    .venv/bin/python bench/input_pipeline.py --workers 0 2 4 --steps 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

# single task (ASR), 2-layer conformer, no evaluations, no time budget, no feature cache (a
# corpus that does not fit in memory)
SMALL = ["encoder.layers=2", "~tasks.speaker", "~tasks.lid", "~tasks.vad", "train.eval_every=1000000",
         "train.weighting={name: static, options: {weights: {asr: 1.0}}}", "train.time_budget_s=null",
         "train.cache_features=false"]


def measure(config_name: str, overrides: list[str], workers: int, steps: int, warmup: int) -> dict:
    import torch

    from polyhead.config import load_config
    from polyhead.training.trainer import Trainer

    torch.set_num_threads(1)  # the data workers get the other core(s)
    config = load_config(config_name, overrides + [f"train.loader_workers={workers}", f"train.steps={steps}"])
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, run, progress=False)
        waits: list[float] = []
        for stream in trainer.streams.values():
            fetch = stream.next

            def timed(step, fetch=fetch):
                t0 = time.perf_counter()
                batch = fetch(step)
                waits[-1] += time.perf_counter() - t0
                return batch

            stream.next = timed
        step_times = []
        for _ in range(steps):
            waits.append(0.0)
            t0 = time.perf_counter()
            trainer.train_step()
            step_times.append(time.perf_counter() - t0)
        for stream in trainer.streams.values():
            stream.close()
    kib = 1024  # ru_maxrss is in KiB on Linux
    out = {"workers": workers, "steps": steps, "main_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
           # the workers have exited after close(): the largest one's peak
           "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib if workers else 0.0}
    for name, lo in (("all", 0), ("after_warmup", min(warmup, steps - 1))):
        step, wait = sum(step_times[lo:]), sum(waits[lo:])
        out[name] = {"step_s": step / (steps - lo), "data_wait_s": wait / (steps - lo), "wait_fraction": wait / step}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="scratch")
    p.add_argument("--corpus", default="corpora/demo")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--override", nargs="*", default=SMALL, help="config overrides (default: %(default)s)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one setting, print JSON
    a = p.parse_args()
    overrides = [f"corpus={a.corpus}"] + list(a.override)
    if a.one is not None:
        print(json.dumps(measure(a.config, overrides, a.one, a.steps, a.warmup)))
        return
    results = []
    for w in a.workers:  # one process each: peak RSS and worker start-up are each setting's own
        cmd = [sys.executable, __file__, "--one", str(w), "--config", a.config, "--corpus", a.corpus,
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--override", *a.override]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"loader_workers={w} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{a.config} {' '.join(overrides)}, {a.steps} steps (first {a.warmup} = warm-up)")
    print(f"{'workers':>7} {'step s':>8} {'wait s':>8} {'wait %':>7} {'wait % warm':>11} {'RSS MB':>7} {'worker MB':>9}")
    for r in results:
        allr, warm = r["all"], r["after_warmup"]
        print(f"{r['workers']:>7} {allr['step_s']:>8.3f} {allr['data_wait_s']:>8.3f} {100 * allr['wait_fraction']:>6.1f}% "
              f"{100 * warm['wait_fraction']:>10.1f}% {r['main_peak_rss_mb']:>7.0f} {r['worker_peak_rss_mb']:>9.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
