"""How far a run's heads are from the teachers that configs/teachers.yaml distils (issue 24),
and what the teachers cost: the before/after number for training/teachers.py.

    OMP_NUM_THREADS=1 .venv/bin/python bench/teacher_agreement.py --run runs/demo/multitask --corpus corpora/demo

Speaker, per trial set (speaker_dev, ood_test): the relational loss the speaker_teacher trains
(``similarity_loss``, KL of row softmaxes at T=0.1 and MSE of cosines) between the head's
full-utterance embeddings and resemblyzer's, over random batches of ``--batch`` utterances,
and the Spearman correlation of the two sets of pairwise cosines. VAD, per recording set
(vad_dev): the soft-target KL the vad_teacher trains between the head's raw frame logits and
silero-vad's probabilities, and the frame agreement (head logit > 0 vs silero > 0.5). Teacher
seconds per audio second, from which the first hearing of the training sets is estimated.
Teacher outputs are cached under bench/out/teacher_cache/ (reruns hear nothing again).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from polyhead.data.corpus import available_sets, load_set
from polyhead.model import MultiTaskModel
from polyhead.tasks.base import predict_windows
from polyhead.tasks.speaker import embeddings
from polyhead.training import teachers as T

OUT_DIR = Path(__file__).parent / "out"


def timed_cache(folder: Path, model):
    """A TeacherCache whose model's seconds are counted (cached hits cost nothing)."""
    spent = {"seconds": 0.0, "audio": 0.0}

    def compute(samples):
        start = time.perf_counter()
        out = model(samples)
        spent["seconds"] += time.perf_counter() - start
        spent["audio"] += len(samples) / T.SAMPLE_RATE
        return out
    return T.TeacherCache(folder, compute), spent


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def speaker_agreement(model, task, cuts, cache, batch: int, seed: int) -> dict:
    emb = embeddings(model, cuts, task)
    rows = [(emb[c.id], t) for c in cuts if (t := cache.get(c)) is not None]
    s = torch.from_numpy(np.stack([r[0] for r in rows]))
    t = torch.from_numpy(np.stack([r[1] for r in rows]))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    groups = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)]
    kl = [float(T.similarity_loss(s[g], t[g], "kl", 0.1)) for g in groups]
    mse = [float(T.similarity_loss(s[g], t[g], "mse")) for g in groups]
    off = ~np.eye(len(rows), dtype=bool)
    cs = (s / s.norm(dim=1, keepdim=True)).numpy()
    ct = (t / t.norm(dim=1, keepdim=True)).numpy()
    return {"utterances": len(rows), "batches": len(groups), "kl_T0.1": float(np.mean(kl)), "mse": float(np.mean(mse)),
            "spearman_cosines": spearman((cs @ cs.T)[off], (ct @ ct.T)[off]),
            "student_mean_cos": float((cs @ cs.T)[off].mean()), "teacher_mean_cos": float((ct @ ct.T)[off].mean())}


def vad_agreement(model, task, cuts, cache) -> dict:
    fps = model.encoder.frames_per_second
    kls, agree, frames = [], 0, 0
    for cut, pieces in predict_windows(model, cuts, task):
        logits = torch.cat(pieces).float().cpu()
        probs = cache.get(cut)
        target = torch.from_numpy(T.to_head_frames(probs, T.SILERO_HOP, 0.0, len(logits), fps))
        keep = torch.ones(len(logits), dtype=torch.bool)
        kls.append((float(T.soft_target_loss(logits, target, keep)), len(logits)))
        agree += int(((logits > 0) == (target > 0.5)).sum())
        frames += len(logits)
    return {"recordings": len(cuts), "soft_kl": sum(k * n for k, n in kls) / frames,
            "frame_agreement": agree / frames}


def train_seconds(corpus, sets) -> float:
    return sum(c.duration for s in sets for c in load_set(corpus, s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--speaker-sets", nargs="+", default=["speaker_dev", "ood_test"])
    parser.add_argument("--vad-sets", nargs="+", default=["vad_dev"])
    parser.add_argument("--batch", type=int, default=12, help="utterances per similarity batch (the demo's ~12 crops)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    run = Path(args.run)
    model = MultiTaskModel.load(run / "best" if (run / "best").is_dir() else run).eval()
    have = set(available_sets(args.corpus))
    speaker = next((k for k, t in model.config.tasks.items() if t.head.type == "speaker"), None)
    vad = next((k for k, t in model.config.tasks.items() if t.target == "vad"), None)
    cache_root = OUT_DIR / "teacher_cache" / Path(args.corpus).name
    out = {"run": str(run), "corpus": str(args.corpus), "speaker": {}, "vad": {}}

    emb_cache, emb_time = timed_cache(cache_root / "resemblyzer", T.resemblyzer_model())
    for s in args.speaker_sets if speaker else []:
        if s in have:
            out["speaker"][s] = speaker_agreement(model, speaker, list(load_set(args.corpus, s)), emb_cache,
                                                  args.batch, args.seed)
    vad_cache, vad_time = timed_cache(cache_root / "silero", T.silero_model())
    for s in args.vad_sets if vad else []:
        if s in have:
            out["vad"][s] = vad_agreement(model, vad, list(load_set(args.corpus, s)), vad_cache)
    cost = {}
    for name, spent, sets in (("resemblyzer", emb_time, model.config.tasks[speaker].train_sets if speaker else []),
                              ("silero", vad_time, model.config.tasks[vad].train_sets if vad else [])):
        if spent["audio"]:
            rtf = spent["seconds"] / spent["audio"]
            cost[name] = {"seconds_per_audio_second": rtf, "train_sets": sets,
                          "first_hearing_of_train_sets_s": rtf * train_seconds(args.corpus, sets)}
    out["teacher_cost"] = cost
    path = args.out or OUT_DIR / f"teacher_agreement_{run.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
