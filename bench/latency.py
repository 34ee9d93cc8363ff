"""Inference latency of the multi-task model (issue 4).

(a) One pass vs separate models: `analyze` of the multi-task model against four single-task
    models (ASR, speaker, LID, VAD) on the same clips. Each single-task model has the same
    encoder architecture and size and ONE head; its weights are copied from the multi-task
    model (encoder and that head), so its outputs, and so its decoding work, are the same
    as the multi-task model's: only the cost matters here, and it does not depend on the
    weights. Target: multi-task time / sum of single-task times <= 0.35.
(b) CPU real-time factor of the default (demo-config) model with 2 threads over the
    speech_test clips, features and decoding included. Target: <= 0.05.

    .venv/bin/python bench/latency.py --run runs/demo_bn            # full measurement
    .venv/bin/python bench/latency.py --limit 20 --repeats 2         # quick check
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from clips import latency_summary, load_clips, median_time, seconds, timed

from polyhead.audio import load_audio
from polyhead.inference.pipeline import Polyhead
from polyhead.runs import checkpoint_folder
from polyhead.model import MultiTaskModel

RATIO_TARGET = 0.35
RTF_TARGET = 0.05
CLIP_SECONDS = (5.0, 20.0)
CLIP_SOURCE_SET = "conversations_test"  # recordings long enough to cut 20 s of speech from

parser = argparse.ArgumentParser()
parser.add_argument("--run", default="runs/demo_bn", help="trained multi-task run (demo config)")
parser.add_argument("--corpus", default=None, help="default: the run's corpus")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=5, help="timed runs per clip in (a); the median counts")
parser.add_argument("--limit", type=int, default=None, help="speech_test utterances for (b) (default all)")
parser.add_argument("--out", default="bench/out/latency.json")
args = parser.parse_args()
torch.set_num_threads(args.threads)

checkpoint = checkpoint_folder(args.run)
multi = MultiTaskModel.load(checkpoint)
corpus = args.corpus or multi.config.corpus


def single_task(task: str) -> MultiTaskModel:
    """The multi-task model's encoder with one head, as a model of its own."""
    config = multi.config.model_copy(deep=True)
    config.tasks = {task: config.tasks[task]}
    model = MultiTaskModel(config)
    missing, _ = model.load_state_dict(multi.state_dict(), strict=False)
    assert not missing, missing
    return model.eval()


def clip(seconds_: float) -> np.ndarray:
    """The first ``seconds_`` of the first test conversation that long."""
    for wav in sorted((Path(corpus) / "audio" / CLIP_SOURCE_SET).glob("*.wav")):
        samples = load_audio(wav, duration=seconds_)
        if seconds(samples) >= seconds_ - 0.01:
            return samples
    raise SystemExit(f"{corpus}/{CLIP_SOURCE_SET}: no recording of {seconds_} s")


@torch.no_grad()
def forward_time(ph: Polyhead, samples: np.ndarray) -> float:
    """The model alone: features computed beforehand, no decoding."""
    inputs, lengths = ph.model_inputs(samples)
    return median_time(ph.model, inputs, lengths, repeats=args.repeats)


# --- (a) one pass vs four single-task models -------------------------------------------------
full = Polyhead(multi)
singles = {task: Polyhead(single_task(task)) for task in multi.config.tasks}
one_pass = []
for length in CLIP_SECONDS:
    samples = clip(length)
    feats = median_time(multi.encoder.features, samples, repeats=args.repeats)
    row = {"clip_s": length,
           "multi_analyze_s": median_time(full.analyze, samples, repeats=args.repeats),
           "multi_forward_s": forward_time(full, samples), "multi_features_s": feats,
           "single_analyze_s": {t: median_time(p.analyze, samples, repeats=args.repeats) for t, p in singles.items()},
           "single_forward_s": {t: forward_time(p, samples) for t, p in singles.items()}}
    sum_analyze, sum_forward = sum(row["single_analyze_s"].values()), sum(row["single_forward_s"].values())
    # like for like: each system decodes its audio and answers; then the model passes alone;
    # then the strictest: the multi-task analyze against the single-task model passes only.
    row["ratio_analyze"] = row["multi_analyze_s"] / sum_analyze
    row["ratio_forward"] = row["multi_forward_s"] / sum_forward
    row["ratio_analyze_vs_forwards"] = row["multi_analyze_s"] / sum_forward
    row["multi_decode_s"] = max(0.0, row["multi_analyze_s"] - row["multi_forward_s"] - feats)
    one_pass.append(row)
    print(f"{length:4.0f} s clip: multi analyze {row['multi_analyze_s'] * 1000:7.1f} ms "
          f"(features {feats * 1000:.1f}, model {row['multi_forward_s'] * 1000:.1f}, "
          f"decoding {row['multi_decode_s'] * 1000:.1f}) | 4 single analyze {sum_analyze * 1000:7.1f} ms, "
          f"forwards {sum_forward * 1000:7.1f} ms", flush=True)

# --- (b) real-time factor over speech_test -----------------------------------------------------
speech = load_clips(corpus, "speech_test", args.limit)
full.analyze(speech[0][1])  # warm-up
latencies = [timed(full.analyze, samples)[1] for _, samples in speech]
rtf = latency_summary(latencies, [seconds(s) for _, s in speech])

result = {"run": str(checkpoint), "corpus": str(corpus), "threads": torch.get_num_threads(),
          "repeats": args.repeats, "one_pass_vs_single_task": one_pass,
          "ratio_target": RATIO_TARGET, "rtf_speech_test": rtf, "rtf_target": RTF_TARGET,
          "note": "single-task models: the multi-task encoder with one head each (weights copied, "
                  "so decoding work is identical); timings are wall-clock medians"}
Path(args.out).parent.mkdir(parents=True, exist_ok=True)
Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

lines = [f"Threads: {result['threads']}; median of {args.repeats} runs per clip.", "",
         "| clip | multi-task analyze | 4 single-task analyze | ratio | multi-task model pass | "
         "4 single-task model passes | ratio | analyze / 4 passes |", "|---|---|---|---|---|---|---|---|"]
for r in one_pass:
    lines.append(f"| {r['clip_s']:.0f} s | {r['multi_analyze_s'] * 1000:.1f} ms | "
                 f"{sum(r['single_analyze_s'].values()) * 1000:.1f} ms | {r['ratio_analyze']:.3f} | "
                 f"{r['multi_forward_s'] * 1000:.1f} ms | {sum(r['single_forward_s'].values()) * 1000:.1f} ms | "
                 f"{r['ratio_forward']:.3f} | {r['ratio_analyze_vs_forwards']:.3f} |")
lines += ["", f"Ratio target <= {RATIO_TARGET}.", "",
          "| speech_test utterances | audio | RTF | latency mean | p50 | p90 |", "|---|---|---|---|---|---|",
          f"| {rtf['utterances']} | {rtf['audio_s']:.1f} s | {rtf['rtf']:.4f} | {rtf['latency_ms_mean']:.1f} ms | "
          f"{rtf['latency_ms_p50']:.1f} ms | {rtf['latency_ms_p90']:.1f} ms |", "",
          f"RTF target <= {RTF_TARGET} on {args.threads} threads."]
table = "\n".join(lines) + "\n"
Path(args.out).with_suffix(".md").write_text(table)
print("\n" + table)
