"""Learning curves (dev CER, WER and EER against training step) of one or more runs, as PNG.

    .venv/bin/python bench/curves.py runs/demo/multitask runs/demo/asr_only --out docs/img/demo_curves.png
"""

import argparse
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

parser = argparse.ArgumentParser()
parser.add_argument("runs", nargs="+")
parser.add_argument("--out", required=True)
args = parser.parse_args()

fig = Figure(figsize=(10, 4))
FigureCanvasAgg(fig)
axes = {m: fig.add_subplot(1, 2, i + 1) for i, m in enumerate(("cer", "eer"))}
for run in args.runs:
    history = json.loads((Path(run) / "train_summary.json").read_text())["history"]
    for metric, ax in axes.items():
        pts = [(h["step"], v[metric]) for h in history for s in h["dev"].values() for v in s.values() if metric in v]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=Path(run).name)
for metric, ax in axes.items():
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dev {metric.upper()}")
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
fig.savefig(args.out, dpi=110)
print(args.out)
