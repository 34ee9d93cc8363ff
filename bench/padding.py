"""Padding fraction of length-bucketed batches (issue: at most 10% on the bench corpus).

    .venv/bin/python bench/padding.py corpora/bench --max-duration 60
"""

import argparse
import json

from polyhead.data.corpus import load_set
from polyhead.data.batching import padding_fraction

parser = argparse.ArgumentParser()
parser.add_argument("corpus")
parser.add_argument("--sets", nargs="*", default=["speech_train", "speaker_train"])
parser.add_argument("--max-duration", type=float, nargs="*", default=[30.0, 60.0, 200.0])
args = parser.parse_args()

rows = []
for set_name in args.sets:
    cuts = load_set(args.corpus, set_name)
    for md in args.max_duration:
        rows.append({"set": set_name, "max_duration": md, "padding_fraction": round(padding_fraction(cuts, md), 4)})
print("| set | max seconds per batch | padding fraction |\n|---|---|---|")
for r in rows:
    print(f"| {r['set']} | {r['max_duration']:g} | {100 * r['padding_fraction']:.2f}% |")
print(json.dumps(rows))
