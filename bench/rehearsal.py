"""The scale rehearsal (issue 12, item 5): does memory per rank stay flat as the corpus grows?

No 100 h corpus can be synthesised on 2 cores in a session, so the demo corpus is laid out
as the real corpora are, repeated until it reaches the size asked for: ``speech_train``
becomes a LibriSpeech tree (``<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac`` and
``*.trans.txt``; each copy's speakers and chapters get new ids) and ``speaker_train`` a
VoxCeleb tree (``wav/<id>/<video>/<NNNNN>.wav``). The audio files are symbolic links to the
demo's WAV files (libsndfile reads a file by its header, not its name), so 100 h costs a few
MB of disk; the manifests, the readers, the samplers and the loader see 100 h of distinct
utterances. Each size is read through ``polyhead data import`` (the LibriSpeech and VoxCeleb
readers), then trained for ``--steps`` steps by 2 ranks under torchrun (gloo, 1 thread
each) with streamed manifests, loader workers and the feature cache decided by size: a
2-layer conformer with CTC and speaker heads, which is enough to drive the data path. Each
rank's peak RSS (and its loader worker's) comes from the run's ``train_summary.json``.

    .venv/bin/python bench/rehearsal.py --hours 10 100 --steps 200 --out runs/rehearsal
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SPEECH_SHARE = 0.8  # of the hours: LibriSpeech-style speech; the rest VoxCeleb-style speakers
RECIPE = ["encoder.layers=2", "~tasks.lid", "~tasks.vad", "tasks.asr.dev_set=null", "tasks.speaker.dev_set=null",
          "tasks.speaker.train_sets=[speaker_train]", "tasks.asr.max_duration=20", "tasks.speaker.max_duration=24",
          "train.weighting={name: static, options: {weights: {asr: 1.0, speaker: 0.2}}}",
          "train.time_budget_s=null", "train.eval_every=1000000", "train.log_every=50",
          "train.lazy_manifests=true", "train.loader_workers=1", "train.cache_features=auto"]


def _id(text: str) -> str:
    """A LibriSpeech/VoxCeleb id part: letters and digits only (the readers split on '-')."""
    return re.sub(r"[^0-9A-Za-z]", "", text)


def layout(corpus: Path, root: Path, hours: float) -> dict:
    """LibriSpeech and VoxCeleb trees of symlinks under ``root`` holding ``hours`` in all."""
    from polyhead.data.corpus import load_set

    made = {}
    for name, share, kind in (("speech_train", SPEECH_SHARE, "librispeech"),
                              ("speaker_train", 1 - SPEECH_SHARE, "voxceleb")):
        cuts = list(load_set(corpus, name))
        have = sum(c.duration for c in cuts) / 3600
        copies = max(1, math.ceil(hours * share / have))
        base = root / ("LibriSpeech/train" if kind == "librispeech" else "vox/wav")
        n = 0
        for k in range(copies):
            by_chapter: dict[tuple[str, str], list] = {}
            for c in cuts:
                by_chapter.setdefault((f"{k}{_id(c.supervisions[0].speaker)}", f"{k}{_id(str(c.recording.id))[:12]}"), []).append(c)
            for i, ((spk, chapter), group) in enumerate(sorted(by_chapter.items())):
                folder = base / spk / (chapter if kind == "librispeech" else f"v{i:05d}")
                folder.mkdir(parents=True, exist_ok=True)
                lines = []
                for j, c in enumerate(group):
                    src = Path(c.recording.sources[0].source)
                    src = (src if src.is_absolute() else corpus / src).resolve()
                    if kind == "librispeech":
                        utt = f"{spk}-{chapter}-{j:04d}"
                        link = folder / f"{utt}.flac"
                        lines.append(f"{utt} {c.supervisions[0].text.upper()}")
                    else:
                        link = folder / f"{j:05d}.wav"
                    if not link.is_symlink():
                        link.symlink_to(src)
                    n += 1
                if lines:
                    (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
        made[name] = {"format": kind, "path": str(base if kind == "librispeech" else base.parent),
                      "files": n, "hours": round(have * copies, 1), "copies": copies}
    return made


def run(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="corpora/demo")
    ap.add_argument("--hours", type=float, nargs="+", default=[10.0, 100.0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--out", default="runs/rehearsal")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args()
    out, bin_dir = Path(args.out), Path(sys.executable).parent
    results = []
    for hours in args.hours:
        where = out / f"{hours:g}h"
        tree, corpus, run_dir = where / "tree", where / "corpus", where / "run"
        t0 = time.time()
        made = layout(Path(args.corpus), tree, hours)
        laid = time.time() - t0
        imported = 0.0
        for name, m in made.items():
            if not (corpus / "manifests" / f"{name}_cuts.jsonl.gz").exists():
                imported += run([str(bin_dir / "polyhead"), "data", "import", f"{m['format']}:{m['path']}",
                                 "--corpus", str(corpus), "--name", name])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        cmd = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", str(args.ranks), "-m", "polyhead.cli",
               "train", "--config", "scratch", "--run-dir", str(run_dir), f"corpus={corpus}",
               f"train.steps={args.steps}", *RECIPE]
        trained = run(cmd, env)
        summary = json.loads((run_dir / "train_summary.json").read_text())
        row = {"hours": hours, "sets": made, "layout_s": round(laid), "import_s": round(imported),
               "train_s": round(trained), "steps": summary["steps"], "ranks": args.ranks,
               "peak_rss_mb": summary["peak_rss_mb"]}
        print(json.dumps(row), flush=True)
        results.append(row)
    print("\n| corpus | files | steps | wall s | peak RSS per rank (MB) | loader worker (MB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        files = sum(m["files"] for m in r["sets"].values())
        ranks = ", ".join(str(p["process"]) for p in r["peak_rss_mb"])
        workers = ", ".join(str(p["loader_workers"]) for p in r["peak_rss_mb"])
        print(f"| {r['hours']:g} h | {files} | {r['steps']} | {r['train_s']} | {ranks} | {workers} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
