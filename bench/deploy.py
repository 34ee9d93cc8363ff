"""Deployment variants of one trained run: speed and accuracy side by side (issue 4).

    fp32        the PyTorch checkpoint as trained
    int8        dynamic int8 quantisation of its nn.Linear layers (PyTorch)
    onnx        the whole model exported to ONNX, on onnxruntime
    onnx-int8   that graph with onnxruntime's dynamic int8 quantisation

Speed: real-time factor and per-utterance latency of `Polyhead.analyze` (features, one
model pass, decoding) over speech_test, one utterance at a time. Accuracy: CER on
speech_test (from the same analyze calls) and EER on the speaker_test trial list.

    .venv/bin/python bench/deploy.py --run runs/demo_bn                  # full measurement
    .venv/bin/python bench/deploy.py --limit 20 --trials 200               # quick check
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from clips import latency_summary, load_clips, seconds, timed

from polyhead.data.corpus import read_trials, trials_path
from polyhead.data.labels import text_of
from polyhead.inference.export import EXPORT_FILE, export_model
from polyhead.inference.pipeline import Polyhead
from polyhead.metrics import error_rates
from polyhead.runs import checkpoint_folder
from polyhead.tasks.speaker import evaluate_trials

VARIANTS = ("fp32", "int8", "onnx", "onnx-int8")
ONNX_VARIANTS = ("onnx", "onnx-int8")

parser = argparse.ArgumentParser()
parser.add_argument("--run", default="runs/demo_bn")
parser.add_argument("--corpus", default=None, help="default: the run's corpus")
parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--limit", type=int, default=None, help="speech_test utterances (default all)")
parser.add_argument("--trials", type=int, default=None, help="speaker_test trials (default all)")
parser.add_argument("--exports", default="bench/out/deploy_export", help="where the ONNX exports go")
parser.add_argument("--out", default="bench/out/deploy.json")
args = parser.parse_args()
torch.set_num_threads(args.threads)

checkpoint = checkpoint_folder(args.run)


def weights_bytes(ph: Polyhead, variant: str) -> int:
    """Size of what a deployment ships: the weights file of this variant."""
    if variant in ONNX_VARIANTS:
        folder = Path(args.exports) / variant
        return json.loads((folder / EXPORT_FILE).read_text())["bytes"]  # every graph it ships
    if variant == "fp32":
        return (checkpoint / "model.safetensors").stat().st_size
    buffer = io.BytesIO()
    torch.save(ph.model.state_dict(), buffer)
    return buffer.tell()


def load_variant(variant: str) -> Polyhead:
    if variant in ONNX_VARIANTS:
        folder = Path(args.exports) / variant
        export_model(checkpoint, variant, folder)
        return Polyhead.load(folder)
    return Polyhead.load(checkpoint, quantize="int8" if variant == "int8" else None)


ph = Polyhead.load(checkpoint)
corpus = args.corpus or ph.config.corpus
speech = load_clips(corpus, "speech_test", args.limit, where=text_of)
trials = read_trials(trials_path(corpus, "speaker_test"))
if args.trials:  # spread over the list, which may be grouped by target / non-target
    trials = trials[:: max(1, len(trials) // args.trials)][: args.trials]
needed = {t.enrol for t in trials} | {t.test for t in trials}
speakers = load_clips(corpus, "speaker_test", where=lambda c: c.id in needed)
print(f"{len(speech)} speech_test utterances, {len(trials)} trials over {len(speakers)} speaker_test "
      f"utterances, {torch.get_num_threads()} threads", flush=True)

rows = {}
for variant in args.variants:
    ph = load_variant(variant)
    ph.analyze(speech[0][1])  # warm-up: first-call allocations, onnxruntime's graph set-up
    hyps, latencies = [], []
    for _, samples in speech:
        res, dt = timed(ph.analyze, samples)
        hyps.append(res.get("text", ""))
        latencies.append(dt)
    cer = error_rates([text_of(c) for c, _ in speech], hyps)
    emb = {c.id: ph.embed(s) for c, s in speakers}
    spk = evaluate_trials(emb, trials)
    rows[variant] = {**latency_summary(latencies, [seconds(s) for _, s in speech]),
                     "cer": round(cer["cer"], 4), "wer": round(cer["wer"], 4), "eer": round(spk["eer"], 4),
                     "weights_mb": round(weights_bytes(ph, variant) / 2**20, 2)}
    print(variant, json.dumps(rows[variant]), flush=True)

result = {"run": str(checkpoint), "corpus": str(corpus), "threads": torch.get_num_threads(),
          "speech_test_utterances": len(speech), "speaker_test_trials": len(trials), "variants": rows}
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
lines = [f"{args.run}, {len(speech)} speech_test utterances one at a time, {len(trials)} speaker_test "
         f"trials, {result['threads']} threads.", "",
         "| variant | weights | RTF | latency mean | p50 | p90 | CER | EER |", "|---|---|---|---|---|---|---|---|"]
for name, r in rows.items():
    lines.append(f"| {name} | {r['weights_mb']:.1f} MB | {r['rtf']:.4f} | {r['latency_ms_mean']:.1f} ms | "
                 f"{r['latency_ms_p50']:.1f} ms | {r['latency_ms_p90']:.1f} ms | {100 * r['cer']:.2f}% | "
                 f"{100 * r['eer']:.2f}% |")
table = "\n".join(lines) + "\n"
Path(args.out).with_suffix(".md").write_text(table)
print("\n" + table)
