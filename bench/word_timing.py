"""Word timestamps against times known by construction, polyhead beside faster-whisper.

    .venv/bin/python bench/word_timing.py --run runs/demo --n 40

No corpus here records word times, so this bench makes utterances whose word times are known:
natural sentences (the held-out `test` split of the fortunes, never trained on), each word
spoken alone by espeak-ng, its own leading and trailing silence trimmed, joined with short
pauses. Half of them start after a long silence (3-8 s), the case users report as the first
word's start placed too early. The prosody is less natural than a sentence read whole; the
times are exact.

polyhead: the run's `analyze` (word times from CTC forced alignment of the decoder's
transcript). faster-whisper: the same pretrained weights the run started from, its
`word_timestamps=True` (cross-attention alignment), beam 5, its defaults otherwise. Words are
matched in order on their CTC form; only exact matches are timed. Errors are absolute.
Output: a markdown table on stdout and bench/out/word_timing.json.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

from polyhead.audio import SAMPLE_RATE  # noqa: E402
from polyhead.data.synth.natural import split_sentences  # noqa: E402
from polyhead.text import normalize_text  # noqa: E402

VOICE = "en-us"
TRIM_DB = -40.0  # a word's own silence: frames this far below its loudest
FRAME = 160  # 10 ms at 16 kHz
PAUSE_S = (0.06, 0.25)  # between words
LEAD_S = 0.3  # before the first word, the short case
LONG_LEAD_S = (3.0, 8.0)  # the long-silence case
TOLERANCE_S = 0.2  # a word's start "right" within this
MAX_WORDS = 18


def speak(word: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", VOICE, "--stdout", word], check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return soxr.resample(audio, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else audio


def trim(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // FRAME
    energy = 10 * np.log10(np.mean(audio[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy > energy.max() + TRIM_DB)
    return audio[loud[0] * FRAME:(loud[-1] + 1) * FRAME] if len(loud) else audio


def build(sentence: str, long_lead: bool, rng: random.Random) -> tuple[np.ndarray, list[dict]]:
    lead = rng.uniform(*LONG_LEAD_S) if long_lead else LEAD_S
    parts, words, t = [np.zeros(int(lead * SAMPLE_RATE), np.float32)], [], lead
    for word in sentence.split():
        spoken = normalize_text(word)
        if not spoken:
            continue
        audio = trim(speak(word))
        words.append({"word": spoken, "start": t, "end": t + len(audio) / SAMPLE_RATE})
        pause = rng.uniform(*PAUSE_S)
        parts += [audio, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        t += len(audio) / SAMPLE_RATE + pause
    return np.concatenate(parts), words


def matched_errors(reference: list[dict], hypothesis: list[dict]) -> list[tuple[float, float, int]]:
    """(start error, end error, reference index) for the words both sides have, matched in order."""
    ref = [w["word"] for w in reference]
    hyp = [normalize_text(w["word"]) for w in hypothesis]
    out = []
    for block in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            r, h = reference[block.a + k], hypothesis[block.b + k]
            out.append((h["start"] - r["start"], h["end"] - r["end"], block.a + k))
    return out


def polyhead_words(model, audio: np.ndarray) -> list[dict]:
    result = model.analyze(audio, SAMPLE_RATE)
    return [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in result.get("words", [])]


def faster_whisper_words(model, audio: np.ndarray) -> list[dict]:
    segments, _ = model.transcribe(audio, language="en", word_timestamps=True, vad_filter=False)
    return [{"word": w.word.strip(), "start": w.start, "end": w.end} for s in segments for w in s.words or []]


def summary(name: str, items: list[dict]) -> dict:
    starts = [abs(e[0]) for it in items for e in it["errors"]]
    ends = [abs(e[1]) for it in items for e in it["errors"]]
    firsts = [abs(e[0]) for it in items if it["long_lead"] for e in it["errors"] if e[2] == 0]
    total = sum(len(it["reference"]) for it in items)
    return {"system": name, "words": total, "timed": len(starts),
            "start_median": float(np.median(starts)) if starts else None,
            "start_p95": float(np.percentile(starts, 95)) if starts else None,
            "end_median": float(np.median(ends)) if ends else None,
            "end_p95": float(np.percentile(ends, 95)) if ends else None,
            "start_within": float(np.mean([s <= TOLERANCE_S for s in starts])) if starts else None,
            "first_after_silence_median": float(np.median(firsts)) if firsts else None,
            "first_after_silence_n": len(firsts)}


def main(argv=None) -> None:
    import torch
    from faster_whisper import WhisperModel

    import polyhead
    from polyhead.config import read_config_json
    from polyhead.model.pretrained import CT2_SUBDIR, resolve

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    pool = [s for s in split_sentences()["test"] if 4 <= len(s.split()) <= MAX_WORDS]
    sentences = rng.sample(pool, min(args.n, len(pool)))

    pretrained = read_config_json(Path(args.run) / "config.json").encoder.pretrained
    systems = {"polyhead (run)": (polyhead.load(args.run), polyhead_words),
               f"faster-whisper ({pretrained}, zero-shot)":
               (WhisperModel(str(resolve(pretrained) / CT2_SUBDIR), device="cpu", compute_type="float32",
                             cpu_threads=args.threads), faster_whisper_words)}
    items = {name: [] for name in systems}
    for k, sentence in enumerate(sentences):
        long_lead = k % 2 == 1
        audio, reference = build(sentence, long_lead, rng)
        for name, (model, words_of) in systems.items():
            hyp = words_of(model, audio)
            items[name].append({"sentence": sentence, "long_lead": long_lead, "reference": reference,
                                "hypothesis": hyp, "errors": matched_errors(reference, hyp)})
    rows = [summary(name, its) for name, its in items.items()]

    def ms(v):
        return "-" if v is None else f"{1000 * v:.0f} ms"

    lines = ["| system | words timed | start error: median / p95 | end error: median / p95 | starts within 200 ms "
             "| first word after 3-8 s silence: median start error (n) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        within = "-" if r["start_within"] is None else f"{100 * r['start_within']:.1f}%"
        lines.append(f"| {r['system']} | {r['timed']} / {r['words']} | {ms(r['start_median'])} / {ms(r['start_p95'])} | "
                     f"{ms(r['end_median'])} / {ms(r['end_p95'])} | {within} | "
                     f"{ms(r['first_after_silence_median'])} ({r['first_after_silence_n']}) |")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "word_timing.json").write_text(json.dumps({"rows": rows, "items": items}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
