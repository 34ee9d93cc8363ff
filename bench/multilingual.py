"""Translation and multilingual speech: per-language WER, language identification and
translation into English (BLEU/chrF), zero-shot Whisper beside polyhead, on the same cuts.

    .venv/bin/python bench/multilingual.py --corpus corpora/demo
    .venv/bin/python bench/multilingual.py --run runs/demo --pretrained whisper-base --limit 50

Sets: translate_test (single utterances in de/fr/es/it/nl; the reference translation is the
cut's custom "translation") and codeswitch_test (English with foreign nouns; its "translation"
is the all-English sentence), whichever the corpus has. Systems:

- zero-shot: faster-whisper on the CTranslate2 files of ``--zero-shot`` (default whisper-base,
  the multilingual catalogue model): transcripts with the cut's language given, and with the
  language left to Whisper (its detected language token: LID accuracy), and ``task="translate"``
  with the source language given;
- ``--run RUN_DIR`` (any number): a trained polyhead model's speech head, scored the same way
  (tasks.speech.evaluate_multilingual; translation needs a multilingual decoder, and is
  reported as skipped, with the reason, where the model has none);
- ``--pretrained NAME``: polyhead running the untouched Whisper weights (``polyhead.load(NAME)``).

Every search is greedy at temperature 0 without timestamps or previous-text conditioning
(``--beam`` for transcripts). WER uses Whisper's normaliser for the cut's language (English
for en, the basic one otherwise). Output: a markdown table on stdout and bench/out/multilingual.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from polyhead.data.corpus import available_sets, load_set  # noqa: E402
from polyhead.data.labels import raw_text_of  # noqa: E402

SETS = ["translate_test", "codeswitch_test"]


def zero_shot_system(name: str, threads: int):
    from polyhead.evaluation.zeroshot import evaluate_zero_shot_multilingual, faster_whisper_model
    from polyhead.model.pretrained import CT2_SUBDIR, resolve

    model = faster_whisper_model(resolve(name) / CT2_SUBDIR, threads=threads)
    return lambda cuts, beam, detect: evaluate_zero_shot_multilingual(model, cuts, beam_size=beam, detect=detect)


def polyhead_system(path: str):
    """A run, checkpoint or catalogue name through ``polyhead.load``; its speech head."""
    import polyhead
    from polyhead.model import MultiTaskModel
    from polyhead.tasks.speech import evaluate_multilingual

    ph = polyhead.load(path)
    if not isinstance(ph.model, MultiTaskModel):
        raise SystemExit(f"{path}: an exported (ONNX) model; give the run or checkpoint folder")
    speech = ph.speech_task()
    if speech is None:
        raise SystemExit(f"{path}: the model has no speech head")
    return lambda cuts, beam, detect: evaluate_multilingual(ph.model, cuts, speech.name, beam_size=beam)


def rows_of(set_name: str, system: str, r: dict) -> list[dict]:
    """One table row per language, and one for the whole set (LID and BLEU pooled; no pooled
    WER: the languages are normalised differently)."""
    tr = r.get("translate") or {}
    lid = r.get("language_accuracy_by_language") or {}
    rows = [{"set": set_name, "system": system, "language": lang, "n": w["n"], "wer": w["wer"],
             "lid": lid.get(lang), "bleu": (tr.get("by_language") or {}).get(lang, {}).get("bleu"),
             "chrf": (tr.get("by_language") or {}).get(lang, {}).get("chrf")}
            for lang, w in r["wer_by_language"].items()]
    rows.append({"set": set_name, "system": system, "language": "all", "n": r["n"], "wer": None,
                 "lid": r.get("language_accuracy"), "bleu": tr.get("bleu"), "chrf": tr.get("chrf"),
                 "translate_skipped": tr.get("skipped")})
    return rows


def table(rows: list[dict]) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    num = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| set | system | language | n | WER % | LID % | BLEU | chrF |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['system']} | {r['language']} | {r['n']} | {pct(r['wer'])} | "
                     f"{pct(r['lid'])} | {num(r['bleu'])} | {num(r['chrf'])} |")
    skipped = sorted({f"{r['system']}: {r['translate_skipped']}" for r in rows if r.get("translate_skipped")})
    return "\n".join(lines + [""] + [f"translation skipped, {s}" for s in skipped])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="corpora/demo")
    ap.add_argument("--sets", nargs="+", default=SETS, help="scored where the corpus has them")
    ap.add_argument("--limit", type=int, default=None, help="utterances per set (the first N with a transcript)")
    ap.add_argument("--beam", type=int, default=1, help="beam size of the transcripts (translations: greedy)")
    ap.add_argument("--zero-shot", default="whisper-base", help="catalogue model for faster-whisper; '' for none")
    ap.add_argument("--no-detect", action="store_true", help="zero-shot: skip the language-detection pass")
    ap.add_argument("--run", nargs="*", default=[], help="trained polyhead runs or checkpoints")
    ap.add_argument("--pretrained", nargs="*", default=[], help="catalogue names: polyhead on untouched Whisper")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "multilingual.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    present = set(available_sets(args.corpus))
    sets = [s for s in args.sets if s in present]
    if not sets:
        raise SystemExit(f"{args.corpus}: none of {args.sets} (it has {', '.join(sorted(present)) or 'no sets'})")
    systems = {}
    if args.zero_shot:
        systems[f"zero-shot {args.zero_shot} (faster-whisper)"] = zero_shot_system(args.zero_shot, args.threads)
    for name in args.pretrained:
        systems[f"polyhead on {name} (untouched)"] = polyhead_system(name)
    for run in args.run:
        systems[f"polyhead {run}"] = polyhead_system(run)
    results, rows = {}, []
    for set_name in sets:
        cuts = [c for c in load_set(args.corpus, set_name) if raw_text_of(c)][: args.limit]
        for system, evaluate in systems.items():
            t = time.time()
            r = evaluate(cuts, args.beam, not args.no_detect)
            r["seconds"] = round(time.time() - t, 1)
            results.setdefault(set_name, {})[system] = r
            rows += rows_of(set_name, system, r)
            print(f"== {set_name} {system}: {len(cuts)} cuts in {r['seconds']} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"corpus": args.corpus, "beam": args.beam, "limit": args.limit, "rows": rows,
                               "results": results}, indent=2, default=str) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
