"""The papers' tables on the bench corpus: evaluates every finished run of the bench sweeps
(`bash bench/tables.sh` trains and scores them) on the test sets and prints one table per paper table,
plus a WER-vs-EER Pareto plot, DET curves and training-loss curves.

    .venv/bin/python bench/tables.py                      # all tables, evaluating what is new
    .venv/bin/python bench/tables.py --speech-limit 600   # first 600 speech_test utterances
    .venv/bin/python bench/tables.py --score runs/bench/paper1_table1/stl_speech  # one run

Test metrics are cached in each run folder (test_metrics.json, with the limit they used), so
rerunning only evaluates new runs. Output: bench/out/tables.{md,json}, docs/img/bench_*.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from polyhead.data.corpus import load_set  # noqa: E402
from polyhead import metrics  # noqa: E402
from polyhead.tasks.speaker import evaluate_speaker  # noqa: E402
from polyhead.tasks.speech import evaluate_asr  # noqa: E402
from polyhead.model import MultiTaskModel  # noqa: E402

SWEEPS = ROOT / "runs" / "bench"
T1 = "paper1_table1"
# Each table: title -> [(row label, run folder under runs/bench), ...]. Rows shared between
# tables point at the same run; relative columns compare with the single-task runs below.
TABLES = {
    "Paper 1, Table 1: single-task vs shared, loss weighting, speaker crop": [
        ("single-task speech", f"{T1}/stl_speech"),
        ("single-task speaker, 3 s crops", f"{T1}/stl_speaker_3s"),
        ("single-task speaker, 9 s crops", f"{T1}/stl_speaker_9s"),
        ("shared, static 0.5, 3 s", f"{T1}/mtl_3s_static_0.5"),
        ("shared, static 0.88, 3 s", f"{T1}/mtl_3s_static_0.88"),
        ("shared, dynamic, 3 s", f"{T1}/mtl_3s_dynamic"),
        ("shared, static 0.5, 9 s", f"{T1}/mtl_9s_static_0.5"),
        ("shared, static 0.88, 9 s", f"{T1}/mtl_9s_static_0.88"),
        ("shared, dynamic, 9 s", f"{T1}/mtl_9s_dynamic"),
    ],
    "Paper 1, Table 2: speaker pooling of the shared model (9 s crops, dynamic)": [
        ("mean", f"{T1}/mtl_9s_dynamic"),
        ("first + cls", "paper1_table2/first_cls"),
        ("CTC-pool: blank frames", "paper1_table2/ctc_blanks"),
        ("CTC-pool: non-blank frames", "paper1_table2/ctc_nonblanks"),
        ("explicit split, 96 of 384 dims to speaker", "paper1_table2/split_96"),
        ("explicit split, 192 of 384", "paper1_table2/split_192"),
        ("explicit split, 288 of 384", "paper1_table2/split_288"),
    ],
    "Paper 1, Table 3: branched encoder, first k of 4 layers shared (9 s crops, dynamic)": [
        ("k = 0 (front end only)", "paper1_table3/base__shared_layers=0"),
        ("k = 1", "paper1_table3/base__shared_layers=1"),
        ("k = 2", "paper1_table3/base__shared_layers=2"),
        ("k = 3", "paper1_table3/base__shared_layers=3"),
        ("k = 4 (fully shared)", f"{T1}/mtl_9s_dynamic"),
    ],
    "Paper 2, Tables 1-2: step, crop, speaker head and its layer (dynamic)": [
        ("joint step (speech_train, full utterances)", "paper2_tables/joint"),
        ("disjoint, mean, last layer, 2 s", "paper2_tables/disjoint_2s"),
        ("disjoint, mean, last layer, 10 s", "paper2_tables/disjoint_10s"),
        ("disjoint, mean, middle layer, 2 s", "paper2_tables/mean_mid_2s"),
        ("disjoint, first + cls, middle layer, 2 s", "paper2_tables/first_mid_2s"),
        ("disjoint, ECAPA, middle layer, 2 s", "paper2_tables/ecapa_mid_2s"),
        ("disjoint, ECAPA, last layer, 2 s", "paper2_tables/ecapa_last_2s"),
        ("disjoint, ECAPA, middle layer, 10 s", "paper2_tables/ecapa_mid_10s"),
    ],
    "Beyond the papers: gradient aggregation and weighting on the disjoint step (3 s crops)": [
        ("dynamic, summed gradients", f"{T1}/mtl_3s_dynamic"),
        ("dynamic + PCGrad", "surgery/pcgrad"),
        ("dynamic + CAGrad", "surgery/cagrad"),
        ("dynamic + UPGrad", "surgery/upgrad"),
        ("uncertainty weighting", "surgery/uncertainty"),
    ],
}
STL_SPEECH, STL_SPEAKER = f"{T1}/stl_speech", f"{T1}/stl_speaker_3s"
DET_ROWS = [f"{T1}/stl_speaker_3s", f"{T1}/stl_speaker_9s", f"{T1}/mtl_3s_dynamic", f"{T1}/mtl_9s_dynamic"]


def evaluate(run: Path, corpus: str, speech_limit: int | None) -> dict:
    """Test metrics of the run's best checkpoint, cached in the run folder."""
    cache = run / "test_metrics.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("speech_limit") == speech_limit:
            return cached
    model = MultiTaskModel.load(run / "best")
    res: dict = {"speech_limit": speech_limit}
    for task in model.tasks_with(target="text"):
        for set_name, prefix in (("speech_test", ""), ("ood_test", "ood_")):
            r = evaluate_asr(model, load_set(corpus, set_name), task, speech_limit if not prefix else None)
            res[prefix + "wer"], res[prefix + "cer"] = r["wer"], r["cer"]
    for task in model.tasks_with(head_type="speaker"):
        for set_name, prefix in (("speaker_test", ""), ("ood_test", "ood_")):
            r = evaluate_speaker(model, corpus, set_name, task)
            res[prefix + "eer"], res[prefix + "min_dcf"] = r["eer"], r["min_dcf_0.01"]
            if not prefix:
                np.savez_compressed(run / "speaker_test_scores.npz", scores=r["scores"], labels=r["labels"])
    summary = json.loads((run / "train_summary.json").read_text())
    res["parameters"] = summary["parameters"]["total"]
    res["s_per_step"] = summary["train_seconds"] / max(summary["steps"], 1)
    res["stopped"] = summary.get("stopped")
    cache.write_text(json.dumps(res, indent=2) + "\n")
    return res


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def rel(v, ref) -> str:
    return "-" if v is None or not ref else f"{100 * (v - ref) / ref:+.1f}%"


def render(title: str, rows: list[tuple[str, str]], results: dict) -> str:
    stl_wer, stl_cer = (results.get(STL_SPEECH, {}).get(k) for k in ("wer", "cer"))
    stl_eer = results.get(STL_SPEAKER, {}).get("eer")
    lines = [f"#### {title}", "",
             "| model | WER | CER | vs STL WER / CER | EER | minDCF 0.01 | vs STL EER | OOD WER | OOD EER | params |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, key in rows:
        r = results.get(key)
        if r is None:
            lines.append(f"| {label} | not run | | | | | | | | |")
            continue
        dcf = "-" if r.get("min_dcf") is None else f"{r['min_dcf']:.3f}"
        vs_speech = f"{rel(r.get('wer'), stl_wer)} / {rel(r.get('cer'), stl_cer)}" if r.get("wer") is not None else "-"
        lines.append(f"| {label} | {pct(r.get('wer'))} | {pct(r.get('cer'))} | {vs_speech} | "
                     f"{pct(r.get('eer'))} | {dcf} | {rel(r.get('eer'), stl_eer)} | {pct(r.get('ood_wer'))} | "
                     f"{pct(r.get('ood_eer'))} | {r['parameters'] / 1e6:.2f} M |")
    return "\n".join(lines)


def figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def plot_pareto(results: dict, path: Path) -> None:
    pts = {k: (100 * r["wer"], 100 * r["eer"]) for k, r in results.items()
           if r.get("wer") is not None and r.get("eer") is not None}
    if not pts:
        return
    fig = figure((8, 6))
    ax = fig.add_subplot()
    front = sorted(k for k, (w, e) in pts.items()
                   if not any(w2 <= w and e2 <= e and (w2, e2) != (w, e) for w2, e2 in pts.values()))
    for k, (w, e) in pts.items():
        ax.scatter(w, e, color="C3" if k in front else "C0", s=30)
        ax.annotate(k.split("/")[-1], (w, e), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if STL_SPEECH in results and STL_SPEAKER in results:
        ax.axvline(100 * results[STL_SPEECH]["wer"], ls="--", color="grey", lw=0.8, label="single-task WER")
        ax.axhline(100 * results[STL_SPEAKER]["eer"], ls=":", color="grey", lw=0.8, label="single-task EER (3 s)")
    ax.set_xlabel("speech_test WER (%)")
    ax.set_ylabel("speaker_test EER (%)")
    ax.set_title("shared models on the bench corpus (red: Pareto front)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


def plot_losses(runs: list[str], path: Path) -> None:
    fig = figure((10, 4))
    axes = {"asr": fig.add_subplot(1, 2, 1), "speaker": fig.add_subplot(1, 2, 2)}
    for key in runs:
        log = SWEEPS / key / "train_log.jsonl"
        if not log.is_file():
            continue
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for task, ax in axes.items():
            pts = [(r["step"], r[f"loss/{task}"]) for r in rows if f"loss/{task}" in r]
            if pts:
                ax.plot(*zip(*pts), label=key.split("/")[-1])
    for task, ax in axes.items():
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{task} training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT / "corpora" / "demo"))  # configs/bench/base.yaml's
    ap.add_argument("--speech-limit", type=int, default=None, help="first N speech_test utterances")
    ap.add_argument("--img", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--score", metavar="RUN", help="only score this finished run (cached), no tables")
    ap.add_argument("--queue", action="store_true", help="print every run the tables need, in table order")
    args = ap.parse_args()
    if args.queue:  # bench/tables.sh trains what this prints: the tables are the one list of runs
        print("\n".join(dict.fromkeys(key for rows in TABLES.values() for _, key in rows)))
        return
    if args.score:  # bench/tables.sh scores each run as it finishes, while the next one trains
        res = evaluate(Path(args.score), args.corpus, args.speech_limit)
        print(json.dumps({k: v for k, v in res.items() if k != "speech_limit"}))
        return

    keys = sorted({key for rows in TABLES.values() for _, key in rows})
    results = {}
    for key in keys:
        run = SWEEPS / key
        if (run / "train_summary.json").is_file() and (run / "best").is_dir():
            results[key] = evaluate(run, args.corpus, args.speech_limit)
            print(f"evaluated {key}", file=sys.stderr)
    text = [render(title, rows, results) for title, rows in TABLES.items()]
    md = "\n\n".join(text) + "\n"
    print(md)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(md)
    (out / "tables.json").write_text(json.dumps(results, indent=2) + "\n")
    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    plot_pareto(results, img / "bench_pareto.png")
    det = {}
    for key in DET_ROWS:
        f = SWEEPS / key / "speaker_test_scores.npz"
        if f.is_file():
            d = np.load(f)
            det[f"{key.split('/')[-1]} (EER {100 * results[key]['eer']:.1f}%)"] = (d["scores"], d["labels"])
    if det:
        metrics.plot_det(det, img / "bench_det.png")
    plot_losses([k for _, k in next(iter(TABLES.values()))], img / "bench_losses.png")


if __name__ == "__main__":
    main()
