"""Step cost of one recipe on several pretrained encoders, interleaved (rounds of steps
taken in turn), so that load from other jobs hits every variant alike and the ratio holds.

    .venv/bin/python bench/step_cost.py --config demo --pretrained whisper-base whisper-tiny.en
"""

import argparse
import time

from polyhead.config import load_config
from polyhead.training.trainer import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="demo")
parser.add_argument("--corpus", default="corpora/demo")
parser.add_argument("--pretrained", nargs="+", default=["whisper-base", "whisper-tiny.en"])
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
args = parser.parse_args()

trainers = {}
for name in args.pretrained:
    cfg = load_config(args.config, [f"corpus={args.corpus}", f"encoder.pretrained={name}",
                                    "train.eval_every=100000", "~train.time_budget_s"])
    trainers[name] = Trainer(cfg, f"bench/out/step_cost_run/{name}", progress=False)
    for _ in range(args.warmup):
        trainers[name].train_step()
for r in range(args.rounds):  # the last round has every feature cached: the steady state
    for name, trainer in trainers.items():
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        print(f"round {r} {name:18s} {(time.perf_counter() - t0) / args.steps:.3f} s/step", flush=True)
