"""Speaker-attributed transcription of the synthetic conversations: DER (0.25 s collar) and
cpWER, with the speaker count given and estimated.

    .venv/bin/python bench/conversations.py runs/demo/multitask --corpus corpora/demo
"""

import argparse
import json

from polyhead.data.corpus import load_set
from polyhead.metrics import DER_COLLAR_S, cp_wer, der
from polyhead.inference import load
from polyhead.inference.diarize import transcribe

from attributed import hypothesis_of, reference_of  # bench/: the script's folder

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--corpus", default="corpora/demo")
parser.add_argument("--set", default="conversations_test")
args = parser.parse_args()

model = load(args.model)
rows = {}
for mode in ("known count", "estimated count"):
    ders, cps = [], []
    for cut in load_set(args.corpus, args.set):
        path = cut.recording.sources[0].source
        sups = cut.supervisions
        n = len({s.speaker for s in sups}) if mode == "known count" else None
        hyp = transcribe(model, path, num_speakers=n)["segments"]
        ref_turns, ref_text = reference_of(cut)
        hyp_turns, hyp_text = hypothesis_of(hyp)
        ders.append(der(ref_turns, hyp_turns, collar=DER_COLLAR_S)["der"])
        cps.append(cp_wer(ref_text, hyp_text))
    rows[mode] = {"der": sum(ders) / len(ders), "cpwer": sum(cps) / len(cps), "recordings": len(ders)}
print("| speakers | DER (0.25 s collar) | cpWER | recordings |\n|---|---|---|---|")
for mode, r in rows.items():
    print(f"| {mode} | {100 * r['der']:.1f}% | {100 * r['cpwer']:.1f}% | {r['recordings']} |")
print(json.dumps(rows))
