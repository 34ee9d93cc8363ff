"""Two ranks made to disagree, on a real corpus: the scenario of
tests/test_ranks_agree.py (issue 12, item 2) run on --corpus instead of the tiny test corpus.

    .venv/bin/python bench/ranks_agree.py --corpus corpora/demo

2 gloo ranks, 1 thread each, a 2-layer conformer with CTC + speaker heads, GradNorm weights,
early stopping with patience 1, a time budget, and three disagreements planted:
  * dev data: rank 0 scores speech_dev, rank 1 speech_test (rank 0's scores decide);
  * a NaN loss on rank 1 only, at step 2 (the step must be skipped on both);
  * rank 1's clock runs 1000 times faster (its own clock would stop it for the time budget).
Reports each rank's steps, skipped steps, stop reason and best dev score, the largest
difference between the ranks' final weights (model and weighting state), and the wall time;
ranks that part ways would hit the 20 s collective timeout instead of hanging.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scenario is the test's own, not a copy of it

from test_optimizer_drift import free_port, run_ranks  # noqa: E402
from test_ranks_agree import rank_worker  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="corpora/demo")
    p.add_argument("--limit-s", type=float, default=900.0, help="fail if the ranks outlast this")
    p.add_argument("--json", default=str(ROOT / "bench/out/ranks_agree.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        run_ranks(rank_worker, (2, free_port(), str(Path(a.corpus).resolve()), f"{tmp}/run", tmp), limit_s=a.limit_s)
        wall = time.monotonic() - t0
        ranks = [torch.load(f"{tmp}/rank{r}.pt", weights_only=True) for r in (0, 1)]
    diffs, count = {}, 0
    for part in ("model", "weighting"):
        a0, a1 = ranks[0][part], ranks[1][part]
        assert a0.keys() == a1.keys(), part
        count += len(a0)
        diffs[part] = max(float((a0[k].float() - a1[k].float()).abs().max()) if a0[k].numel() else 0.0 for k in a0)
    result = {"corpus": a.corpus, "wall_s": round(wall, 1), "tensors_compared": count,
              "max_abs_weight_difference": diffs, "summaries": [r["summary"] for r in ranks],
              "gradnorm_weights": [r["weighting"]["w"].tolist() for r in ranks]}
    print(json.dumps(result, indent=2))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    if any(diffs.values()) or ranks[0]["summary"] != ranks[1]["summary"]:
        sys.exit("the ranks ended differently")


if __name__ == "__main__":
    main()
