"""Architecture peers: transformers' wav2vec2 models against polyhead's, trained on the same
data for the same steps, from scratch, and scored on the same test sets by polyhead's code.

    OMP_NUM_THREADS=1 .venv/bin/python bench/arch_peers.py --corpus corpora/bench --steps 200
    OMP_NUM_THREADS=1 .venv/bin/python bench/arch_peers.py --corpus corpora/bench --steps 200 --only w2v_ctc
    OMP_NUM_THREADS=1 .venv/bin/python bench/arch_peers.py --corpus corpora/demo --steps 3 \
        --speech-limit 20 --out /tmp/arch_peers_smoke                      # smoke test, about a minute

Systems (all single-task, random init, nothing downloaded):
    w2v_ctc           transformers Wav2Vec2ForCTC, polyhead's character vocabulary, its own CTC loss
    w2v_xvector       transformers Wav2Vec2ForXVector, its own AMSoftmax loss over training speakers
    polyhead_speech   polyhead's bench conformer + CTC head (configs/bench/scratch.yaml, ~tasks.speaker)
    polyhead_speaker  the same encoder + mean-pooling speaker head, 3 s crops (~tasks.asr)

The wav2vec2 configs are size-matched to the bench conformer (width 144, 6 layers, 4 heads).
Same footing: the training cuts, batches and schedule come from polyhead's own code
(training_cuts, BatchStream and Collator of the matching single-task config, tri_stage), so
every system sees the same utterances in the same batches: bucketed by duration, up to
--max-seconds of audio each, utterances over 20 s skipped, speaker batches of random 3 s crops.
All four use --lr with a 10% warm-up (polyhead's tri-stage) and gradient clipping at 5.0;
the peers use AdamW, polyhead its trainer (Adam). polyhead's runs go to runs/arch_peers/.

Scoring: speech_test WER/CER of greedy CTC decoding on the first --speech-limit utterances
(metrics.error_rates), speaker_test EER and minDCF(0.01) of cosine scores of full-utterance,
L2-normalised embeddings on its trial list (evaluate.evaluate_trials). s/step is training wall
time over steps (dev evaluation and checkpointing left out). Each system's row is cached in
<out>/arch_peers.json, so `--only` reruns one row; rows trained with other settings are dropped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from polyhead.config import Config, load_config  # noqa: E402
from polyhead.data.corpus import load_set, read_trials, trials_path  # noqa: E402
from polyhead import metrics  # noqa: E402
from polyhead.data.batching import BatchStream, FeatureCache  # noqa: E402
from polyhead.data.labels import CHARS, text_of  # noqa: E402
from polyhead.tasks import collator, task_kind  # noqa: E402
from polyhead.tasks.base import EVAL_BATCH_SECONDS, batches_by_duration  # noqa: E402
from polyhead.tasks.ctc import decode_ctc  # noqa: E402
from polyhead.tasks.speaker import evaluate_speaker, evaluate_trials  # noqa: E402
from polyhead.tasks.speech import evaluate_asr  # noqa: E402
from polyhead.model import MultiTaskModel  # noqa: E402
from polyhead.training.cuts import build_vocab, training_cuts  # noqa: E402
from polyhead.training.schedule import tri_stage  # noqa: E402
from polyhead.training.trainer import Trainer  # noqa: E402

BASE_CONFIG = ROOT / "configs" / "bench" / "scratch.yaml"
SPEECH_SET, SPEAKER_SET = "speech_test", "speaker_test"
SPEAKER_CROP_S = 3.0  # as polyhead's bench stl_speaker_3s run
DEFAULT_STEPS = 200
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_LR = 5e-4
DEFAULT_SPEECH_LIMIT = 600
WEIGHT_DECAY = 0.01  # AdamW's default
LOG_EVERY = 25
SAMPLE_RATE = 16_000
BLANK = 0  # polyhead's CTC blank; text ids are CHARS index + 1, so decode_ctc reads them as is

# Size-matched to the bench conformer (dim 144, 6 layers, 4 heads, ff_mult 4, ~3.1 M). Each
# conformer layer has two half-step feed-forwards of 4 x 144 (macaron) and a convolution
# module; one 8 x 144 feed-forward per transformer layer brings the totals close (~2.9 M).
# A narrower conv front end (128 channels, default kernels and strides: 20 ms frames) and a
# shorter positional convolution (64 frames, 1.3 s) keep the front end small. Layer norm in
# the conv front end, not group norm: with group norm padded batches change the outputs,
# and transformers advises against passing an attention mask.
W2V_ENCODER = dict(hidden_size=144, num_hidden_layers=6, num_attention_heads=4, intermediate_size=1152,
                   conv_dim=(128,) * 7, num_conv_pos_embeddings=64, feat_extract_norm="layer")
# CTC: blank = pad_token_id = 0 and the loss averaged over target lengths and utterances, as
# polyhead's CTC head does (transformers' default reduction is "sum"); zero_infinity keeps an
# utterance too fast for the frame rate from poisoning the batch.
W2V_CTC = dict(vocab_size=len(CHARS) + 1, pad_token_id=BLANK, ctc_loss_reduction="mean", ctc_zero_infinity=True)
# x-vector TDNN scaled from (512,)*4 + (1500,) to the encoder width; 128-d embeddings as
# polyhead's speaker head (emb_dim 128).
W2V_XVECTOR = dict(tdnn_dim=(144,) * 4 + (432,), xvector_output_dim=128)

SYSTEMS = ("w2v_ctc", "w2v_xvector", "polyhead_speech", "polyhead_speaker")
TASK_OF = {"w2v_ctc": "asr", "w2v_xvector": "speaker", "polyhead_speech": "asr", "polyhead_speaker": "speaker"}
OTHER_TASK = {"asr": "speaker", "speaker": "asr"}
LABELS = {"w2v_ctc": "transformers Wav2Vec2ForCTC", "w2v_xvector": "transformers Wav2Vec2ForXVector",
          "polyhead_speech": "polyhead conformer + CTC", "polyhead_speaker": "polyhead conformer + speaker (mean)"}


# -------------------------------------------------------------------------- config / data

def single_task_config(args, task: str) -> Config:
    """polyhead's single-task bench config, from scratch, with this benchmark's budget; its
    vocabularies filled in from the training sets as the trainer does."""
    overrides = [f"~tasks.{OTHER_TASK[task]}", "encoder.init_from=null", "train.heads_only_steps=0",
                 f"train.steps={args.steps}", f"train.eval_every={args.steps}", f"train.lr={args.lr}",
                 f"corpus={args.corpus}", f"tasks.{task}.max_duration={args.max_seconds}"]
    if task == "speaker":
        overrides.append(f"tasks.speaker.crop={SPEAKER_CROP_S}")
    config = load_config(str(BASE_CONFIG), overrides)
    return config.model_copy(update={"vocab": build_vocab(config)})


def batch_stream(config: Config, task: str) -> BatchStream:
    """The batches polyhead's trainer would draw for this single-task config, as waveforms:
    same validated cuts, sampler, seed and crops; no SpecAugment (wav2vec2 masks its own)."""
    tc, tconf = config.train, config.tasks[task]
    collate = collator([task_kind(config, task)], FeatureCache("waveform"), crop=tconf.crop)
    return BatchStream(training_cuts(config, task), collate, tconf.max_duration or tc.max_duration,
                       tc.seed, crop=tconf.crop)


def waveforms(batch) -> list[np.ndarray]:
    return [batch.inputs[i, :n].numpy() for i, n in enumerate(batch.lengths.tolist())]


def w2v_inputs(front_end, waves: list[np.ndarray]) -> dict:
    """wav2vec2's own front end: per-utterance zero mean, unit variance, zero padding, mask."""
    x = front_end(waves, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
                  return_tensors="pt")
    return {"input_values": x["input_values"].float(), "attention_mask": x["attention_mask"]}


def ctc_labels(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """polyhead's padded text ids (CHARS index + 1, padded with 0) padded with -100 instead."""
    pad = torch.arange(ids.shape[1])[None, :] >= lengths[:, None]
    return ids.masked_fill(pad, -100)


# -------------------------------------------------------------------------- wav2vec2 peers

def build_w2v(system: str, config: Config):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2ForXVector

    torch.manual_seed(config.train.seed)
    np.random.seed(config.train.seed)  # wav2vec2 draws its time masks from numpy's global generator
    if system == "w2v_ctc":
        model = Wav2Vec2ForCTC(Wav2Vec2Config(**W2V_ENCODER, **W2V_CTC))
    else:
        model = Wav2Vec2ForXVector(Wav2Vec2Config(**W2V_ENCODER, **W2V_XVECTOR,
                                                  num_labels=len(config.vocab["speaker"])))
    front_end = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=True)
    return model, front_end


def w2v_loss(model, front_end, batch, task: str) -> torch.Tensor:
    """The model's own loss: CTC over characters, or AMSoftmax over training speakers."""
    inputs = w2v_inputs(front_end, waveforms(batch))
    if task == "asr":
        labels = ctc_labels(*batch.targets["text"])
    else:
        labels = batch.targets["speaker"]
    return model(**inputs, labels=labels).loss


def train_w2v(system: str, args) -> dict:
    task = TASK_OF[system]
    config = single_task_config(args, task)
    tc = config.train
    model, front_end = build_w2v(system, config)
    stream = batch_stream(config, task)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: tri_stage(s, tc.steps, tc.schedule, tc.final_lr_scale))
    model.train()
    losses, skipped, audio_s = [], 0, 0.0
    start = time.perf_counter()
    for step in range(tc.steps):
        batch = stream.next(step)
        audio_s += batch.seconds
        loss = w2v_loss(model, front_end, batch, task)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, tc.clip_norm)
        if torch.isfinite(loss) and torch.isfinite(norm):
            optimizer.step()
        else:
            skipped += 1
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % LOG_EVERY == 0 or step == tc.steps - 1:
            print(f"{system} step {step}: loss {losses[-1]:.3f}", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - start
    model.eval()
    res = {"parameters": count(model), "encoder_parameters": count(model.wav2vec2),
           "train_seconds": round(train_s, 1), "s_per_step": train_s / tc.steps,
           "audio_seconds": round(audio_s, 1), "skipped_steps": skipped,
           "loss_first": losses[0], "loss_last": float(np.mean(losses[-LOG_EVERY:]))}
    if task == "asr":
        res.update(w2v_asr(model, front_end, args))
    else:
        res.update(w2v_speaker(model, front_end, args))
    return res


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def eval_batches(cuts):
    """Full utterances in batches of up to EVAL_BATCH_SECONDS (padded), as evaluate.py batches."""
    cache = FeatureCache("waveform", enabled=False)
    for group in batches_by_duration(list(cuts), EVAL_BATCH_SECONDS):
        yield group, [cache.get(c) for c in group]


def speech_cuts(args) -> list:
    """The first --speech-limit transcribed test utterances (0: all), as evaluate_asr takes them."""
    return [c for c in load_set(args.corpus, SPEECH_SET) if text_of(c)][:args.speech_limit or None]


@torch.no_grad()
def w2v_asr(model, front_end, args) -> dict:
    cuts = speech_cuts(args)
    refs, hyps = [], []
    for group, waves in eval_batches(cuts):
        inputs = w2v_inputs(front_end, waves)
        logits = model(**inputs).logits
        lengths = model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1))
        for cut, lg, n in zip(group, logits, lengths.tolist()):
            refs.append(text_of(cut))
            hyps.append(decode_ctc(lg[:n], CHARS))
    res = metrics.error_rates(refs, hyps)
    return {"wer": res["wer"], "cer": res["cer"], "utterances": len(refs),
            "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:2]]}


@torch.no_grad()
def w2v_speaker(model, front_end, args) -> dict:
    cuts = load_set(args.corpus, SPEAKER_SET)
    trials = read_trials(trials_path(args.corpus, SPEAKER_SET), known_ids={c.id for c in cuts})
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    emb = {}
    for group, waves in eval_batches([c for c in cuts if c.id in needed]):
        out = model(**w2v_inputs(front_end, waves)).embeddings.numpy()
        for cut, e in zip(group, out):
            emb[cut.id] = e / (np.linalg.norm(e) + 1e-9)  # evaluate_trials scores dot products
    return speaker_metrics(evaluate_trials(emb, trials))


def speaker_metrics(res: dict) -> dict:
    return {"eer": res["eer"], "min_dcf": res["min_dcf_0.01"], "trials": res["trials"]}


# -------------------------------------------------------------------------- polyhead

def train_polyhead(system: str, args) -> dict:
    """polyhead's own trainer, in process, from scratch; scored like tables.py scores runs."""
    task = TASK_OF[system]
    run = Path(args.runs) / Path(args.corpus).name / system
    if run.exists():
        shutil.rmtree(run)  # a fresh run: the trainer appends to an existing train_log.jsonl
    # train() with the trainer kept, for its evaluation time: s/step leaves the final dev
    # evaluation and checkpoint out, as the peers' does.
    trainer = Trainer(single_task_config(args, task), run, progress=False)
    try:
        summary = trainer.fit()
    finally:
        trainer.dist.close()
    train_s = summary["train_seconds"] - trainer._eval_seconds
    model = MultiTaskModel.load(run / "best")
    res = {"parameters": summary["parameters"]["total"], "encoder_parameters": summary["parameters"]["shared"],
           "train_seconds": round(train_s, 1), "s_per_step": train_s / max(summary["steps"], 1),
           "audio_seconds": round(summary["audio_seconds_seen"][task], 1),
           "skipped_steps": summary["skipped_steps"], "run": str(run)}
    if task == "asr":
        cuts = speech_cuts(args)
        r = evaluate_asr(model, cuts, task)
        res.update({"wer": r["wer"], "cer": r["cer"], "utterances": len(cuts), "examples": r["examples"][:2]})
    else:
        res.update(speaker_metrics(evaluate_speaker(model, args.corpus, SPEAKER_SET, task)))
    return res


# -------------------------------------------------------------------------- report

def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(out: dict) -> str:
    s = out["settings"]
    lines = [f"Architecture peers on {s['corpus']}: {s['steps']} steps from scratch, batches of up to "
             f"{s['max_seconds']:g} s, lr {s['lr']:g} (10% warm-up, tri-stage), speaker crops "
             f"{SPEAKER_CROP_S:g} s; WER/CER on the first {s['speech_limit']} {SPEECH_SET} utterances, "
             f"EER/minDCF on the {SPEAKER_SET} trials.", "",
             "| model | params | s/step | WER | CER | EER | minDCF 0.01 |",
             "|---|---|---|---|---|---|---|"]
    for system in SYSTEMS:
        r = out["results"].get(system)
        if r is None:
            lines.append(f"| {LABELS[system]} | not run | | | | | |")
            continue
        lines.append(f"| {LABELS[system]} | {r['parameters'] / 1e6:.2f} M | {r['s_per_step']:.2f} | "
                     f"{pct(r.get('wer'))} | {pct(r.get('cer'))} | {pct(r.get('eer'))} | {num(r.get('min_dcf'))} |")
    return "\n".join(lines) + "\n"


def load_cached(path: Path, settings: dict) -> dict:
    """Earlier rows, kept only when they were trained and scored with the same settings."""
    out = json.loads(path.read_text()) if path.is_file() else {}
    if out and out.get("settings") != settings:
        print(f"{path}: other settings ({out.get('settings')}), earlier rows dropped", file=sys.stderr)
        out = {}
    return {"settings": settings, "results": out.get("results", {})}


# -------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="corpora/bench")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help="seconds of audio per training batch")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak learning rate of every system")
    parser.add_argument("--speech-limit", type=int, default=DEFAULT_SPEECH_LIMIT,
                        help=f"first N {SPEECH_SET} utterances (0: all)")
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, help="default: every system")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "arch_peers",
                        help="where polyhead's runs go (a folder per corpus and system)")
    args = parser.parse_args()

    settings = {"corpus": args.corpus, "steps": args.steps, "max_seconds": args.max_seconds,
                "lr": args.lr, "speech_limit": args.speech_limit}
    json_path = args.out / "arch_peers.json"
    out = load_cached(json_path, settings)
    for system in args.only or SYSTEMS:
        start = time.perf_counter()
        train = train_w2v if system.startswith("w2v") else train_polyhead
        out["results"][system] = train(system, args)
        print(f"{system}: {time.perf_counter() - start:.0f} s in all", file=sys.stderr, flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2, default=float) + "\n")  # after every system
    md = render(out)
    (args.out / "arch_peers.md").write_text(md)
    print(md)
    print(f"written: {json_path}, {args.out / 'arch_peers.md'}")


if __name__ == "__main__":
    main()
