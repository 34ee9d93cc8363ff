"""The `polyhead` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("polyhead")


def _synth(args) -> None:
    from .data.synth.build import synthesize

    summary = synthesize(args.out, args.preset, seed=args.seed, workers=args.workers)
    from .data.stats import format_stats

    print(format_stats(summary["sets"]))
    print(f"\n{args.out}: {sum(s['hours'] for s in summary['sets'].values()):.2f} h in {summary['seconds']} s")


def _stats(args) -> None:
    from .data.stats import corpus_stats, format_stats

    stats = corpus_stats(args.corpus)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))


def _train(args) -> None:
    from .config import load_config
    from .training.trainer import train

    config = load_config(args.config, args.overrides)
    summary = train(config, args.run, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))


def _evaluate(args) -> None:
    from .evaluation.report import evaluate_run

    results = evaluate_run(args.run, corpus=args.corpus, sets=args.sets, checkpoint=args.checkpoint)
    print(results["table"])


def _probe(args) -> None:
    from .evaluation.probe import layer_probe

    res = layer_probe(args.run, corpus=args.corpus, set_name=args.set, plot=args.plot)
    print(json.dumps(res, indent=2))


def _sweep(args) -> None:
    from .sweep import run_sweep

    res = run_sweep(args.spec, args.out, args.overrides, backend=args.backend, trials=args.trials)
    for name, r in res["runs"].items():
        flag = " DIVERGED" if r["diverged"] else (" <- best" if name == res["best"] else "")
        print(f"{name:60s} criterion {r['criterion']:.4f}{flag}")


def _import(args) -> None:
    from .data.corpus import MANIFEST_DIR, write_trials
    from .data.readers import read_corpus

    cuts = read_corpus(args.source, on_error=args.on_error)
    trials = None
    if isinstance(cuts, tuple):
        cuts, trials = cuts
    out = Path(args.corpus)
    (out / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    cuts.to_file(out / MANIFEST_DIR / f"{args.name}_cuts.jsonl.gz")
    if trials:
        write_trials(out / "trials" / f"{args.name}.txt", trials)
    print(f"{args.name}: {len(cuts)} utterances -> {out}")


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(corpus=args.corpus, run=args.run, compare=not args.no_compare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polyhead", description="One speech model, many answers.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the embedded corpus offline with TTS engines")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "bench"])
    p.add_argument("--out", default=None, help="output folder (default corpora/<preset>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_synth)

    p = sub.add_parser("data", help="corpus tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("stats", help="hours, speakers, sessions, languages, intents, words per set")
    q.add_argument("corpus")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_stats)

    q = dsub.add_parser("import", help="read a corpus you have (librispeech:, voxceleb:, nemo:, kaldi:, lhotse:)")
    q.add_argument("source", help="FORMAT:PATH, e.g. librispeech:/data/LibriSpeech/train-clean-100")
    q.add_argument("--corpus", required=True, help="polyhead corpus folder to add the set to")
    q.add_argument("--name", required=True, help="set name, e.g. speech_train")
    q.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    q.set_defaults(func=_import)

    p = sub.add_parser("sweep", help="run a grid of configs and pick the best by the criterion")
    p.add_argument("spec", help="sweep YAML (base config + grid and/or variants)")
    p.add_argument("--out", required=True)
    p.add_argument("--backend", default="local", choices=["local", "optuna"])
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("train", help="train a model from a config")
    p.add_argument("--config", default="demo", help="YAML file or bundled config name")
    p.add_argument("--run", required=True, help="run folder (checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue from <run>/last")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a run on the corpus test sets")
    p.add_argument("run")
    p.add_argument("--corpus", default=None)
    p.add_argument("--sets", nargs="*", default=None)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("probe", help="layer-wise speaker EER (paper 2, Figure 1)")
    p.add_argument("run")
    p.add_argument("--corpus", default=None)
    p.add_argument("--set", default="speaker_test")
    p.add_argument("--plot", default=None, help="PNG path")
    p.set_defaults(func=_probe)

    p = sub.add_parser("demo", help="synthesise, train, evaluate and compare on the demo corpus")
    p.add_argument("--corpus", default="corpora/demo")
    p.add_argument("--run", default="runs/demo")
    p.add_argument("--no-compare", action="store_true", help="skip the single-task baselines")
    p.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "command", None) == "synth" and args.out is None:
        args.out = f"corpora/{args.preset}"
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        # Expected user errors get one clear line, not a traceback.
        print(f"polyhead: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
