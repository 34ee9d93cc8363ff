"""Parity: polyhead running the untouched pretrained Whisper against faster-whisper on the same
weights and the same utterances, greedy and beam 5, both scored with Whisper's normaliser.

    .venv/bin/python bench/parity.py --sets retention_test speech_test --limit 120

polyhead side: ``polyhead.load("<name>")``'s model (the pretrained decoder alone, every input in
Whisper's 30 s window), decoded by evaluation's batched loop. faster-whisper side: the CT2 files
the catalogue installed with the weights, float32 and int8, with the same search (temperature 0
only, no fallback, no timestamps, no previous-text conditioning, no VAD filter). Speed is the
wall time over the audio duration on this machine's threads (run it alone).
polyhead's beam search runs as faster-whisper's does (``--search whisper``, the default:
patience 1, ranked by log-probability over length, blank suppressed) or with polyhead's own
defaults (``--search polyhead``).
Output: a markdown table on stdout and bench/out/parity_<search>.json.
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

from polyhead.audio import to_model_audio  # noqa: E402
from polyhead.config import Config, EncoderConfig, HeadConfig, TaskConfig  # noqa: E402
from polyhead.data.corpus import load_set  # noqa: E402
from polyhead.decoding import DecodingOptions  # noqa: E402
from polyhead.tasks.speech import asr_result, transcribe_cuts  # noqa: E402
from polyhead.model import MultiTaskModel  # noqa: E402
from polyhead.data.labels import raw_text_of  # noqa: E402


def polyhead_whisper(name: str) -> MultiTaskModel:
    config = Config(encoder=EncoderConfig(name="whisper", pretrained=name, pad_to_window=True),
                    tasks={"asr": TaskConfig(head=HeadConfig(type="whisper_decoder", options={"ctc_weight": 0.0}),
                                             target="text", train_sets=[])})
    return MultiTaskModel(config).eval()


# faster-whisper's beam search (CTranslate2's, Whisper's defaults): it stops once beam_size x
# patience hypotheses have ended and ranks them by log-probability over length; no blank or
# end of text as the first token
WHISPER_SEARCH = {"patience": 1.0, "length_penalty": None, "suppress_blank": True}


def polyhead_options(beam: int, search: str) -> DecodingOptions:
    """Greedy, or beam search as faster-whisper runs it (``whisper``) or polyhead's defaults
    (``polyhead``: stop once the best ended hypothesis beats every live one, summed log-probability)."""
    if beam == 1 or search == "polyhead":
        return DecodingOptions(beam_size=beam, suppress_blank=search == "whisper")
    return DecodingOptions(beam_size=beam, **WHISPER_SEARCH)


def run_polyhead(model, cuts, beam: int, search: str = "whisper") -> tuple[list[str], float]:
    t = time.time()
    hyps = dict((c.id, h) for c, h in transcribe_cuts(model, cuts, "asr", decoding=polyhead_options(beam, search)))
    return [hyps[c.id] for c in cuts], time.time() - t


def run_faster_whisper(model, cuts, beam: int) -> tuple[list[str], float]:
    hyps, t = [], time.time()
    for c in cuts:
        audio = c.load_audio()
        samples = to_model_audio(audio.T if audio.ndim == 2 else audio, c.sampling_rate, name=c.id)
        segments, _ = model.transcribe(samples, language="en", beam_size=beam, temperature=0.0,
                                       without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
        hyps.append(" ".join(s.text.strip() for s in segments))
    return hyps, time.time() - t


def main(argv=None) -> None:
    from faster_whisper import WhisperModel

    from polyhead.model.pretrained import CT2_SUBDIR, resolve

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--corpus", default="corpora/demo")
    ap.add_argument("--sets", nargs="+", default=["retention_test", "speech_test"])
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--search", choices=("whisper", "polyhead"), default="whisper",
                    help="polyhead's beam search: as faster-whisper's (patience 1, log-probability over "
                         "length, blank suppressed) or polyhead's own defaults")
    ap.add_argument("--systems", nargs="+", default=["polyhead", "faster-whisper fp32", "faster-whisper int8"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ct2 = str(resolve(args.model) / CT2_SUBDIR)
    makers = {"polyhead": lambda: polyhead_whisper(args.model),
              "faster-whisper fp32": lambda: WhisperModel(ct2, device="cpu", compute_type="float32",
                                                          cpu_threads=args.threads),
              "faster-whisper int8": lambda: WhisperModel(ct2, device="cpu", compute_type="int8",
                                                          cpu_threads=args.threads)}
    systems = {name: makers[name]() for name in args.systems}
    rows = []
    for set_name in args.sets:
        cuts = [c for c in load_set(args.corpus, set_name) if raw_text_of(c)][: args.limit]
        refs = [raw_text_of(c) for c in cuts]
        seconds = sum(c.duration for c in cuts)
        for beam in args.beams:
            for name, system in systems.items():
                if name == "polyhead":
                    hyps, wall = run_polyhead(system, cuts, beam, args.search)
                else:
                    hyps, wall = run_faster_whisper(system, cuts, beam)
                r = asr_result(refs, hyps)
                rows.append({"set": set_name, "n": len(cuts), "beam": beam, "system": name, "wer": r["wer"],
                             "punctuation_f1": r["punctuation_f1"], "rtf": wall / seconds, "examples": r["examples"]})
                print(f"{set_name} beam {beam} {name}: WER {100 * r['wer']:.1f}% RTF {wall / seconds:.3f}", flush=True)
    lines = ["| set | search | system | WER | punctuation F1 | real-time factor |", "|---|---|---|---|---|---|"]
    for r in rows:
        search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        lines.append(f"| {r['set']} ({r['n']}) | {search} | {r['system']} | {100 * r['wer']:.1f}% | "
                     f"{r['punctuation_f1']:.2f} | {r['rtf']:.3f} |")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"parity_{args.search}.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
