"""Forgetting control, measured: one point per strategy on in-domain WER against retention WER
(natural English the generator never wrote, clean and by telephone), with speaker EER beside,
and zero-shot Whisper (faster-whisper on the same pretrained files) on the same utterances.

    .venv/bin/python bench/retention.py                        # train what is missing, score, plot
    .venv/bin/python bench/retention.py --only none,lora       # a subset
    .venv/bin/python bench/retention.py --config demo --out runs/retention_demo --steps 300

Each strategy fine-tunes the bench recipe (configs/bench/base.yaml, Whisper tiny.en, speech +
speaker) for the same number of steps; the ``+ interpolate`` rows are the same runs with their
weights moved back towards the pretrained ones, the coefficient chosen on retention_dev
(never on the test sets reported here). Scores are cached per run (retention_metrics.json).
Output: bench/out/retention.{md,json}, docs/img/retention_pareto.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from polyhead.config import load_config, read_config_json  # noqa: E402
from polyhead.data.corpus import load_set  # noqa: E402
from polyhead.tasks.speaker import evaluate_speaker  # noqa: E402
from polyhead.tasks.speech import evaluate_asr  # noqa: E402
from polyhead.evaluation.report import plot_pareto  # noqa: E402
from polyhead.model import MultiTaskModel  # noqa: E402
from polyhead.training.retention import Interpolate  # noqa: E402
from polyhead.training.trainer import train  # noqa: E402

# name -> overrides of the base recipe; "+interp" runs are derived from the named run
STRATEGIES = {
    "none": ["train.retention=[{name: none}]"],
    "frozen": ["train.retention=[{name: frozen}]", "encoder.pad_to_window=true"],
    "lora": ["train.retention=[{name: lora, options: {rank: 8}}]"],
    "distill": ["train.retention=[{name: distill, options: {weight: 1.0}}]"],
    "replay": ["train.retention=[{name: replay, options: {weight: 0.5}}]"],
}
DERIVED = {"none+interp": "none", "distill+interp": "distill", "replay+interp": "replay"}
SETS = {"in_domain": "speech_test", "retention": "retention_test", "retention_tel": "retention_tel_test"}


def train_run(name: str, config: str, corpus: str, out: Path, steps: int) -> Path:
    run = out / name
    if (run / "train_summary.json").is_file() and (run / "best").is_dir():
        return run
    overrides = [f"corpus={corpus}", f"train.steps={steps}", f"train.eval_every={steps}", *STRATEGIES[name]]
    print(f"== training {name}: {' '.join(overrides)}", flush=True)
    t = time.time()
    train(load_config(config, overrides), run, progress=False)
    (run / "bench_train_seconds.txt").write_text(f"{time.time() - t:.0f}\n")
    return run


def interpolate_run(source: Path, target: Path) -> Path:
    """A copy of ``source`` whose best/ is interpolated towards the pretrained weights."""
    if (target / "interpolation.json").is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source / "best", target / "best")
    shutil.copy(source / "train_summary.json", target / "train_summary.json")
    config = read_config_json(source / "config.json")
    model = MultiTaskModel.load(source / "best")
    trainer = SimpleNamespace(config=config, model=model, run_dir=target, device=torch.device("cpu"))
    print(f"== interpolating {source.name} -> {target.name}", flush=True)
    Interpolate().finish(trainer)
    return target


def score(run: Path, corpus: str, limit: int) -> dict:
    cache = run / "retention_metrics.json"
    if cache.is_file() and json.loads(cache.read_text()).get("limit") == limit:
        return json.loads(cache.read_text())
    model = MultiTaskModel.load(run / "best")
    asr = model.tasks_with(head_type="whisper_decoder")[0]
    out = {"limit": limit}
    for key, set_name in SETS.items():
        r = evaluate_asr(model, load_set(corpus, set_name), asr, limit=limit)
        out[key] = {k: r[k] for k in ("wer", "cer", "punctuation_f1", "case_accuracy", "n")}
    spk = model.tasks_with(head_type="speaker")
    if spk:
        out["eer"] = evaluate_speaker(model, corpus, "speaker_test", spk[0])["eer"]
    interp = run / "interpolation.json"
    if interp.is_file():
        out["alpha"] = json.loads(interp.read_text())["alpha"]
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def zero_shot(config: str, corpus: str, out: Path, limit: int) -> dict:
    from polyhead.evaluation.zeroshot import evaluate_zero_shot, faster_whisper_model
    from polyhead.model.pretrained import CT2_SUBDIR, resolve

    cache = out / "zero_shot_greedy.json"
    if cache.is_file() and json.loads(cache.read_text()).get("limit") == limit:
        return json.loads(cache.read_text())
    cfg = load_config(config, [f"corpus={corpus}"])
    model = faster_whisper_model(resolve(cfg.encoder.pretrained) / CT2_SUBDIR)
    res = {"limit": limit, "model": cfg.encoder.pretrained}
    for key, set_name in SETS.items():
        from polyhead.data.labels import text_of

        cuts = [c for c in load_set(corpus, set_name) if text_of(c)][:limit]
        r = evaluate_zero_shot(model, cuts)
        res[key] = {k: r[k] for k in ("wer", "cer", "punctuation_f1", "case_accuracy", "n")}
        print(f"== zero-shot on {set_name}: WER {100 * r['wer']:.1f}%", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(res, indent=2) + "\n")
    return res


def table(rows: dict[str, dict], zs: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| strategy | in-domain WER | retention WER (clean) | retention WER (telephone) | punctuation F1 (retention) | speaker EER | a |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {pct(r['in_domain']['wer'])} | {pct(r['retention']['wer'])} | "
                     f"{pct(r['retention_tel']['wer'])} | {r['retention']['punctuation_f1']:.2f} | "
                     f"{pct(r.get('eer'))} | {r.get('alpha', '-')} |")
    lines.append(f"| zero-shot {zs['model']} (faster-whisper, greedy) | {pct(zs['in_domain']['wer'])} | "
                 f"{pct(zs['retention']['wer'])} | {pct(zs['retention_tel']['wer'])} | "
                 f"{zs['retention']['punctuation_f1']:.2f} | - | - |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="bench/base")
    ap.add_argument("--corpus", default="corpora/demo")
    ap.add_argument("--out", default="runs/retention")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--limit", type=int, default=160, help="utterances per test set")
    ap.add_argument("--only", default="", help="comma list of strategies (derived rows follow theirs)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "img" / "retention_pareto.png"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.out)
    names = [n for n in args.only.split(",") if n] or list(STRATEGIES)
    zs = zero_shot(args.config, args.corpus, out, args.limit)
    rows = {}
    for name in names:
        rows[name] = score(train_run(name, args.config, args.corpus, out, args.steps), args.corpus, args.limit)
        for derived, source in DERIVED.items():
            if source == name:
                rows[derived] = score(interpolate_run(out / name, out / derived), args.corpus, args.limit)
        print(table(rows, zs), flush=True)
    md = table(rows, zs)
    bench_out = ROOT / "bench" / "out"
    bench_out.mkdir(parents=True, exist_ok=True)
    (bench_out / "retention.md").write_text(md + "\n")
    (bench_out / "retention.json").write_text(json.dumps({"rows": rows, "zero_shot": zs}, indent=2) + "\n")
    points = {n: (r["in_domain"]["wer"], r["retention"]["wer"], r.get("eer")) for n, r in rows.items()}
    points[f"zero-shot {zs['model']}"] = (zs["in_domain"]["wer"], zs["retention"]["wer"], None)
    plot_pareto(points, args.plot, xlabel="in-domain WER (speech_test)", ylabel="retention WER (natural English)")
    print(md)


if __name__ == "__main__":
    main()
