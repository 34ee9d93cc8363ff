"""Joint CTC/attention decoding against attention-only beam search and CTC rescoring, on a
trained run whose Whisper decoder has its CTC branch (the demo model: ``ctc_weight`` 0.3).

    .venv/bin/python bench/joint_decoding.py                                  # runs/demo/multitask on corpora/demo
    .venv/bin/python bench/joint_decoding.py --limit 100 --ctc-weights 0.1 0.3 0.5
    .venv/bin/python bench/joint_decoding.py --run /tmp/tiny_run --corpus /tmp/tiny_corpus --limit 2

Per set (``--limit`` utterances each): greedy; beam ``--beam`` on attention alone; the same
beam with the finished hypotheses rescored by CTC at the run's weight; and joint CTC/attention
beam search at each weight of ``--ctc-weights`` (CTC's prefix probability in every step's
score). WER is ``polyhead evaluate``'s (tasks.speech.asr_result: Whisper's
normaliser); speed is wall seconds per utterance on this machine's threads (run it alone).
Output: a markdown table on stdout and JSON at ``--out``.
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

from polyhead.data.corpus import load_set  # noqa: E402
from polyhead.decoding import CTC_JOINT, CTC_RESCORE, DecodingOptions  # noqa: E402
from polyhead.tasks.speech import asr_result, transcribe_cuts  # noqa: E402
from polyhead.model import MultiTaskModel  # noqa: E402
from polyhead.data.labels import raw_text_of  # noqa: E402

DEFAULT_SETS = ["speech_test", "retention_test", "retention_tel_test"]
DEFAULT_CTC_WEIGHTS = [0.1, 0.3, 0.5]
DEFAULT_BEAM = 5


def load_run(run: Path, checkpoint: str) -> MultiTaskModel:
    """The run's checkpoint as ``polyhead evaluate`` loads it (run/<checkpoint>, else the folder)."""
    folder = run / checkpoint if (run / checkpoint).is_dir() else run
    return MultiTaskModel.load(folder).eval()


def searches(head, beam: int, ctc_weights: list[float]) -> dict[str, DecodingOptions]:
    """The decodings compared: greedy, attention-only beam, beam + CTC rescoring at the run's
    weight, joint beam at each weight (the CTC rows only where the decoder has its CTC branch)."""
    out = {"greedy": DecodingOptions(),
           f"beam {beam}": DecodingOptions(beam_size=beam, ctc_weight=0.0)}
    if head.has_ctc:
        out[f"beam {beam} + CTC rescoring ({head.ctc_weight:g})"] = DecodingOptions(beam_size=beam,
                                                                                     ctc_mode=CTC_RESCORE)
        for w in ctc_weights:
            out[f"joint beam {beam}, λ={w:g}"] = DecodingOptions(beam_size=beam, ctc_weight=w, ctc_mode=CTC_JOINT)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo/multitask")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument("--corpus", default=None, help="default: the run's own corpus (the demo: corpora/demo)")
    ap.add_argument("--sets", nargs="+", default=DEFAULT_SETS)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--beam", type=int, default=DEFAULT_BEAM)
    ap.add_argument("--ctc-weights", type=float, nargs="+", default=DEFAULT_CTC_WEIGHTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "joint_decoding.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_run(Path(args.run), args.checkpoint)
    task = next((t for t in model.tasks_with(target="text") if hasattr(model.heads[t], "steps")), None)
    if task is None:
        raise SystemExit(f"{args.run}: no Whisper decoder head to compare decodings on")
    head = model.heads[task]
    corpus = args.corpus or model.config.corpus or "corpora/demo"
    rows = []
    for set_name in args.sets:
        cuts = [c for c in load_set(corpus, set_name) if raw_text_of(c)][: args.limit]
        if not cuts:
            print(f"{set_name}: no transcribed utterances, skipped", flush=True)
            continue
        refs = [raw_text_of(c) for c in cuts]
        for name, options in searches(head, args.beam, args.ctc_weights).items():
            start = time.perf_counter()
            hyps = dict((c.id, h) for c, h in transcribe_cuts(model, cuts, task, decoding=options))
            wall = time.perf_counter() - start
            r = asr_result(refs, [hyps[c.id] for c in cuts])
            rows.append({"set": set_name, "n": len(cuts), "search": name, "wer": r["wer"], "cer": r.get("cer"),
                         "seconds_per_utterance": wall / len(cuts), "options": vars(options),
                         "examples": r["examples"]})
            print(f"{set_name} {name}: WER {100 * r['wer']:.1f}% {wall / len(cuts):.3f} s/utt", flush=True)
    lines = ["| set | search | WER | s / utterance |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} ({r['n']}) | {r['search']} | {100 * r['wer']:.1f}% | "
                     f"{r['seconds_per_utterance']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"run": args.run, "checkpoint": args.checkpoint, "corpus": str(corpus), "limit": args.limit,
            "beam": args.beam, "ctc_weights": args.ctc_weights, "trained_ctc_weight": head.ctc_weight,
            "threads": args.threads}
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
