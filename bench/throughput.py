"""Training cost: seconds of audio per second for single-task, joint and disjoint steps, and
the disjoint step with gradient aggregation (PCGrad, CAGrad, UPGrad) vs the plain one.

    .venv/bin/python bench/throughput.py --corpus corpora/demo --steps 30
    .venv/bin/python bench/throughput.py --config bench/whisper --corpus corpora/demo

Every timed step trains the encoder: heads-only steps (a frozen encoder, far cheaper) are off.
"""

import argparse
import json
import time

import torch

from polyhead.config import load_config
from polyhead.training.trainer import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("--corpus", default="corpora/demo")
parser.add_argument("--config", default="bench/base")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--warmup", type=int, default=5)
parser.add_argument("--out", default="bench/out/throughput.json")
args = parser.parse_args()

# Same batches (30 s speech, 30 s speaker crops) for every variant; features cached after warm-up.
VARIANTS = {
    "single-task speech": ["~tasks.speaker", "train.weighting.name=static", "train.weighting.options={}"],
    "single-task speaker": ["~tasks.asr", "train.weighting.name=static", "train.weighting.options={}"],
    "joint": ["train.step=joint", "~tasks.speaker.crop", "tasks.speaker.train_sets=[speech_train]"],
    "disjoint": [],
    "disjoint + pcgrad": ["train.aggregator.name=pcgrad"],
    "disjoint + cagrad": ["train.aggregator.name=cagrad"],
    "disjoint + upgrad": ["train.aggregator.name=upgrad"],
}
rows = {}
for name, overrides in VARIANTS.items():
    cfg = load_config(args.config, [f"corpus={args.corpus}", "train.eval_every=100000",
                                    "train.heads_only_steps=0", *overrides])
    trainer = Trainer(cfg, f"bench/out/throughput_run/{name.replace(' ', '_')}", progress=False)
    for _ in range(args.warmup):
        trainer.train_step()
    audio, t0 = 0.0, time.perf_counter()
    for _ in range(args.steps):
        audio += trainer.train_step()["seconds"]
    dt = time.perf_counter() - t0
    rows[name] = {"step_s": dt / args.steps, "audio_s_per_s": audio / dt}
    print(f"{name:22s} {dt / args.steps:.3f} s/step  {audio / dt:7.1f} s audio/s", flush=True)
base = rows["disjoint"]["step_s"]
for name in rows:
    rows[name]["vs_disjoint"] = rows[name]["step_s"] / base
print("\n| step | s/step | audio s per s | time vs plain disjoint |\n|---|---|---|---|")
for name, r in rows.items():
    print(f"| {name} | {r['step_s']:.3f} | {r['audio_s_per_s']:.1f} | {r['vs_disjoint']:.2f}x |")
json.dump({"config": args.config, "threads": torch.get_num_threads(), "rows": rows}, open(args.out, "w"), indent=2)
