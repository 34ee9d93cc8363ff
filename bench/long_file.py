"""An hour of audio through `polyhead transcribe --speakers`: bounded memory, nothing lost at
chunk edges (issue 13, Build 1 and Bad input).

    OMP_NUM_THREADS=2 .venv/bin/python bench/long_file.py --run runs/demo/multitask --minutes 10 60

For each length, the conversations of --set (with their reference transcripts) are laid end
to end, repeated, with 1 s of silence between recordings, into one 16 kHz WAV of whole
recordings up to the length asked for; the CLI
transcribes it by speaker in a fresh process timed by /usr/bin/time (wall time and peak
resident memory of the whole process). Reported: real-time factor, peak RSS, how many words
came out against the reference word count (a chunk edge that loses or doubles words shows
here), whether segment times are increasing and inside the file, and the longest stretch of
reference speech with no word written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from polyhead.audio import SAMPLE_RATE
from polyhead.data.corpus import load_set
from polyhead.metrics import normalize_text

ROOT = Path(__file__).resolve().parents[1]
GAP_S = 1.0


def build(corpus: str, set_name: str, minutes: float, path: Path) -> dict:
    """Write the long file; returns its reference: words and speech intervals."""
    cuts = list(load_set(corpus, set_name))
    target = int(minutes * 60 * SAMPLE_RATE)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    words, speech, written = 0, [], 0
    with sf.SoundFile(str(path), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16") as out:
        while written < target:
            for cut in cuts:
                audio = cut.load_audio()[0].astype(np.float32)
                if written and written + len(audio) + len(gap) > target:
                    return {"seconds": written / SAMPLE_RATE, "reference_words": words, "speech": speech}
                offset = written / SAMPLE_RATE
                for s in cut.supervisions:  # whole recordings only: the reference is exact
                    words += len(normalize_text(s.text or "").split())
                    speech.append((offset + s.start, offset + s.end))
                piece = np.concatenate([audio, gap])
                out.write(piece)
                written += len(piece)
    return {"seconds": written / SAMPLE_RATE, "reference_words": words, "speech": speech}


def measure(run: str, path: Path, threads: int) -> dict:
    result = path.with_suffix(".json")
    cmd = ["/usr/bin/time", "-v", str(ROOT / ".venv/bin/polyhead"), "transcribe", str(path), "--model", run,
           "--speakers", "--format", "json", "--output", str(result)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"transcribe failed:\n{done.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return {"wall_s": seconds, "peak_rss_mb": rss_kb / 1024, "output": json.loads(result.read_text())}


def longest_silent_speech(speech: list[tuple[float, float]], words: list[dict]) -> float:
    """The longest reference turn stretch (seconds) in which no written word starts."""
    starts = np.sort(np.array([w["start"] for w in words])) if words else np.zeros(0)
    worst = 0.0
    for a, b in speech:
        inside = starts[(starts >= a) & (starts <= b)]
        edges = np.concatenate([[a], inside, [b]])
        worst = max(worst, float(np.diff(edges).max()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--corpus", default="corpora/demo")
    p.add_argument("--set", default="conversations_test")
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 60])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "bench/out/long_file.json"))
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in a.minutes:
            path = Path(tmp) / f"long_{minutes:g}min.wav"
            ref = build(a.corpus, a.set, minutes, path)
            got = measure(a.run, path, a.threads)
            segs = got["output"]["segments"]
            words = [w for s in segs for w in s["words"]]
            starts = [s["start"] for s in segs]
            row = {"minutes": minutes, "seconds": ref["seconds"], "wall_s": round(got["wall_s"], 1),
                   "rtf": round(got["wall_s"] / ref["seconds"], 4), "peak_rss_mb": round(got["peak_rss_mb"]),
                   "segments": len(segs), "words": len(words), "reference_words": ref["reference_words"],
                   "speakers": len(got["output"]["speakers"]),
                   "times_increasing": starts == sorted(starts),
                   "inside_file": all(0 <= s["start"] <= s["end"] <= ref["seconds"] + 0.01 for s in segs),
                   "longest_speech_without_words_s": round(longest_silent_speech(ref["speech"], words), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"run": a.run, "corpus": a.corpus, "set": a.set, "threads": a.threads,
                                        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
