"""Where speech recognition errors come from: CER on training utterances vs held-out speakers.

A large gap means the model does not generalise across voices (the test sets use speakers,
and half of them base voices, never seen in training), not that it lacks steps.

    .venv/bin/python bench/generalisation.py runs/demo_long [--limit 200]
"""

from __future__ import annotations

import argparse
import json
import random

import polyhead
from polyhead.data.corpus import load_set
from polyhead.tasks.speech import evaluate_asr

SETS = ("speech_train", "speech_dev", "speech_test")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--limit", type=int, default=200, help="utterances per set (seeded subset)")
    ap.add_argument("--task", default="asr")
    args = ap.parse_args()
    model = polyhead.load(args.run).model
    corpus = model.config.corpus
    rows = {}
    for name in SETS:
        cuts = list(load_set(corpus, name))
        random.Random(0).shuffle(cuts)
        r = evaluate_asr(model, cuts[: args.limit], args.task)
        rows[name] = {"cer": r["cer"], "wer": r["wer"], "utterances": min(args.limit, len(cuts))}
    print("| set | utterances | CER | WER |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['utterances']} | {r['cer']:.1%} | {r['wer']:.1%} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
