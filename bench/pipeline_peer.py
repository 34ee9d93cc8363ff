"""Who said what on conversations: one polyhead pass against the stack users run today.

    OMP_NUM_THREADS=2 .venv/bin/python bench/pipeline_peer.py --run runs/demo/multitask \\
        --corpus corpora/demo --set conversations_test --threads 2

polyhead: `diarize.transcribe` on a trained run (one encoder pass per 30 s chunk gives the
VAD segments, the transcript with word times and the speaker embeddings).

peer, whisperX style, on the same Whisper weights the run was fine-tuned from (the
CTranslate2 files `polyhead models install` keeps in ct2/):
  1. VAD          silero-vad speech segments (at most 30 s each, as faster-whisper asks for)
  2. ASR          faster-whisper's batched pipeline on those segments merged into chunks of at
                  most 30 s, word timestamps on, its defaults otherwise (beam 5, temperature
                  fallback)
  3. embeddings   resemblyzer on every piece of a VAD segment, cut as polyhead cuts its own
                  segments (diarize.split_segment: at word pauses, at most 1.5 s), each word
                  in exactly one piece
  4. clustering   polyhead's own (diarize.cluster), then diarize.merge_segments
so the two differ in the models, not in segmentation rules, clustering or scoring.

Both are scored by attributed.py: DER with a 0.25 s collar and cpWER, pooled over recordings.
Timing: one system at a time, in this process, with torch and CTranslate2 held to --threads;
model loading and one warm-up call on the first seconds of the first recording are left out.
Writes bench/out/pipeline_peer_<corpus>_<set>.{json,md}; rows of an earlier run with the same
settings are kept, so `--system peer` and `--system polyhead` can run as separate processes.
Peers missing: `bash bench/install_peers.sh`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from polyhead.audio import SAMPLE_RATE, load_audio
from polyhead.config import read_config_json
from polyhead.data.corpus import available_sets, load_set
from polyhead.metrics import DER_COLLAR_S
from polyhead.evaluation.zeroshot import faster_whisper_model
from polyhead.inference import load
from polyhead.inference.diarize import DEFAULT_CLUSTER_THRESHOLD, cluster, merge_segments, split_segment, transcribe
from polyhead.inference.pipeline import GREEDY, Decoding
from polyhead.runs import CONFIG_FILE, checkpoint_folder
from polyhead.model.pretrained import CT2_SUBDIR, PretrainedError, resolve

from attributed import pool, score_recording  # bench/: the script's folder
from peer_models import INSTALL_HINT, resemblyzer_embedder, silero_segmenter

# polyhead-tokens: the same model's decoder writing speaker tokens (a run trained with the
# <|speakers|> decoder task, configs/decoder_tasks.yaml) instead of clustering embeddings
SYSTEMS = ("polyhead", "polyhead-tokens", "peer")
STAGES = ("read", "vad", "asr", "embeddings", "clustering")  # the peer's, in order
WHISPER_WINDOW_S = 30.0  # Whisper's encoder window: the longest chunk faster-whisper takes whole
DEFAULT_WHISPER = "whisper-base"  # the peer's weights when the run does not name a catalogue Whisper
DEFAULT_BATCH = 8  # faster-whisper's BatchedInferencePipeline default
WARMUP_S = 5.0
OUT_DIR = Path(__file__).parent / "out"


# ------------------------------------------------------------------------- helpers

def whisper_chunks(segments: list[tuple[float, float]], max_s: float = WHISPER_WINDOW_S) -> list[tuple[float, float]]:
    """Consecutive speech segments merged into chunks spanning at most max_s (whisperX's
    merge_chunks): one Whisper window holds several turns instead of one window each. A
    segment longer than max_s stays a chunk of its own."""
    chunks: list[tuple[float, float]] = []
    for start, end in segments:
        if chunks and end - chunks[-1][0] <= max_s:
            chunks[-1] = (chunks[-1][0], end)
        else:
            chunks.append((start, end))
    return chunks


def assign_words(pieces: list[dict], words: list[dict]) -> list[dict]:
    """Every word into exactly one piece: the one holding its midpoint, else the nearest.
    The ASR ran on whole chunks, so a word can fall just outside every VAD segment; dropping
    it would count against the peer's cpWER for a timing detail (whisperX's fill_nearest)."""
    for p in pieces:
        p["words"] = []
    if not pieces:
        return pieces
    starts = np.array([p["start"] for p in pieces])
    ends = np.array([p["end"] for p in pieces])
    for w in words:
        mid = (w["start"] + w["end"]) / 2
        gap = np.maximum(np.maximum(starts - mid, mid - ends), 0.0)
        pieces[int(np.argmin(gap))]["words"].append(w)
    return pieces


@contextmanager
def clock(stages: dict, name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] += time.perf_counter() - start


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------- systems

class PeerStack:
    """faster-whisper + silero-vad + resemblyzer + polyhead's clustering; one call per file."""

    def __init__(self, ct2: Path, threads: int, language: str | None, batch_size: int):
        try:
            from faster_whisper import BatchedInferencePipeline

            # max_speech_duration_s: faster-whisper transcribes only the first 30 s of a longer clip
            self.vad = silero_segmenter(max_speech_duration_s=WHISPER_WINDOW_S)
            self.embed = resemblyzer_embedder()
        except ImportError as e:
            raise SystemExit(f"the peer pipeline needs {e.name or e}, which is not installed: {INSTALL_HINT}") from None
        self.asr = BatchedInferencePipeline(faster_whisper_model(ct2, threads))
        self.language, self.batch_size = language, batch_size

    def words(self, samples: np.ndarray, chunks: list[tuple[float, float]]) -> list[dict]:
        if not chunks:
            return []
        segments, _ = self.asr.transcribe(samples, language=self.language, word_timestamps=True,
                                          batch_size=self.batch_size,
                                          clip_timestamps=[{"start": a, "end": b} for a, b in chunks])
        # the segments are a lazy generator: consuming it here is what runs the model
        return [{"word": w.word.strip(), "start": round(w.start, 2), "end": round(w.end, 2)}
                for s in segments for w in (s.words or []) if w.word.strip()]

    def __call__(self, path, num_speakers: int | None, threshold: float) -> tuple[list[dict], dict]:
        stages = dict.fromkeys(STAGES, 0.0)
        with clock(stages, "read"):
            samples = load_audio(path)
        with clock(stages, "vad"):
            speech = self.vad(samples)
        with clock(stages, "asr"):
            words = self.words(samples, whisper_chunks(speech))
        pieces = assign_words([p for a, b in speech for p in split_segment({"start": a, "end": b}, words)], words)
        if not pieces:
            return [], stages
        with clock(stages, "embeddings"):
            embs = np.stack([np.asarray(self.embed(samples[int(p["start"] * SAMPLE_RATE):int(p["end"] * SAMPLE_RATE)]))
                             for p in pieces])
        with clock(stages, "clustering"):
            labels = cluster(embs, num_speakers, threshold)
        segments = [{"start": round(p["start"], 2), "end": round(p["end"], 2), "speaker": f"SPEAKER_{k:02d}",
                     "text": " ".join(w["word"] for w in p["words"]), "words": p["words"]}
                    for p, k in zip(pieces, labels)]
        return merge_segments(segments), stages


class PolyheadSystem:
    """`diarize.transcribe` on a run: what `polyhead transcribe --speakers` runs."""

    def __init__(self, run: str, language: str | None, method: str = "clustering"):
        self.ph, self.method = load(run), method
        if not self.ph.model.tasks_with(head_type="speaker"):
            raise SystemExit(f"{run}: this model has no speaker head, so it cannot say who spoke")
        # a CTC-only speech head takes no decoding options (check_decoding refuses them)
        self.decoding = Decoding(language=language) if self.ph.decoder() is not None and language else GREEDY

    def __call__(self, path, num_speakers: int | None, threshold: float) -> tuple[list[dict], dict]:
        res = transcribe(self.ph, path, num_speakers=num_speakers, threshold=threshold, decoding=self.decoding,
                         method=self.method)
        return res["segments"], {}


def peer_weights(args) -> Path:
    """The CTranslate2 folder the peer runs: --whisper, else the Whisper the run was
    fine-tuned from (the same weights), else whisper-base."""
    name = args.whisper
    if name is None and args.run:
        encoder = read_config_json(checkpoint_folder(args.run) / CONFIG_FILE).encoder
        name = getattr(encoder, "pretrained", None) if encoder.name == "whisper" else None
    name = name or DEFAULT_WHISPER
    if (Path(name) / "model.bin").is_file():
        return Path(name)
    try:
        folder = resolve(name, install_missing=False)
    except PretrainedError as e:
        raise SystemExit(f"peer weights: {e}") from None
    if not (folder / CT2_SUBDIR / "model.bin").is_file():
        raise SystemExit(f"{folder} has no CTranslate2 original in {CT2_SUBDIR}/ (a folder from `polyhead "
                         f"models install` has one); pass --whisper CT2_FOLDER")
    return folder / CT2_SUBDIR


def build(system: str, args):
    if system.startswith("polyhead"):
        method = "tokens" if system == "polyhead-tokens" else "clustering"
        return PolyheadSystem(args.run, args.language, method), f"{args.run}, diarize.transcribe (method {method})"
    ct2 = peer_weights(args)
    note = (f"faster-whisper {version('faster-whisper')} (batched, beam 5, word timestamps) on {ct2}; "
            f"silero-vad {version('silero-vad')}; resemblyzer {version('resemblyzer')}; diarize.cluster")
    return PeerStack(ct2, args.threads, args.language, args.batch_size), note


# ------------------------------------------------------------------------------- runs

def audio_path(cut) -> str:
    return cut.recording.sources[0].source


def speaker_count(cut, mode: str) -> int | None:
    return len({s.speaker for s in cut.supervisions}) if mode == "known" else None


def warm_up(runner, cut, args) -> None:
    """One untimed call on the first seconds of a recording: one-time costs (allocations,
    JIT, thread pools) are not charged to the first timed file."""
    samples = load_audio(audio_path(cut), duration=WARMUP_S)
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        sf.write(f.name, samples, SAMPLE_RATE)
        runner(f.name, speaker_count(cut, args.speakers), args.threshold)


def run_system(system: str, cuts: list, args) -> dict:
    start = time.perf_counter()
    runner, note = build(system, args)
    load_s = time.perf_counter() - start
    warm_up(runner, cuts[0], args)
    files, stages = [], dict.fromkeys(STAGES, 0.0)
    for cut in cuts:
        start = time.perf_counter()
        segments, file_stages = runner(audio_path(cut), speaker_count(cut, args.speakers), args.threshold)
        wall = time.perf_counter() - start
        for k, v in file_stages.items():
            stages[k] += v
        files.append({"recording": cut.id, "audio_s": round(cut.duration, 2), "wall_s": round(wall, 3),
                      "rtf": round(wall / cut.duration, 4), "stages_s": {k: round(v, 3) for k, v in file_stages.items()},
                      **score_recording(cut, segments, collar=DER_COLLAR_S)})
        print(f"{system} {cut.id}: {wall:.1f} s, DER {100 * files[-1]['der']:.1f}%, "
              f"cpWER {100 * files[-1]['cpwer']:.1f}%", file=sys.stderr, flush=True)
    wall, audio = sum(f["wall_s"] for f in files), sum(f["audio_s"] for f in files)
    row = {"note": note, "load_s": round(load_s, 1), "wall_s": round(wall, 2), "audio_s": round(audio, 2),
           "s_per_file": round(wall / len(files), 2), "rtf": round(wall / audio, 4),
           **pool(files), "files": files}
    if system == "peer":
        row["stages_s"] = {k: round(v, 2) for k, v in stages.items()}
        row["stages_s"]["other"] = round(wall - sum(stages.values()), 2)  # splitting pieces, merging
    return row


# ----------------------------------------------------------------------------- report

def pct(v) -> str:
    return f"{100 * v:.1f}%"


def report(out: dict) -> str:
    s = out["settings"]
    results = out["results"]
    lines = [f"Corpus {s['corpus']}, set {s['set']}: {s['recordings']} recordings, {s['audio_s']:.1f} s of "
             f"audio; speaker count {s['speakers']}; {s['threads']} threads (torch and CTranslate2), one system "
             f"at a time. DER: {DER_COLLAR_S} s collar, overlap scored, pooled over recordings; cpWER pooled "
             "(all word errors / all reference words). Wall time excludes model loading and one warm-up call.",
             "", "| system | DER | miss | false alarm | confusion | cpWER | wall s | s per file | RTF | load s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in SYSTEMS:
        if name in results:
            r = results[name]
            lines.append(f"| {name} | {pct(r['der'])} | {pct(r['miss'])} | {pct(r['false_alarm'])} | "
                         f"{pct(r['confusion'])} | {pct(r['cpwer'])} | {r['wall_s']:.1f} | {r['s_per_file']:.2f} | "
                         f"{r['rtf']:.3f} | {r['load_s']:.1f} |")
    for name in ("polyhead", "polyhead-tokens"):
        if name in results and "peer" in results:
            lines += ["", f"{name} wall time / peer wall time: {results[name]['wall_s'] / results['peer']['wall_s']:.2f}"]
    if "peer" in results:
        peer = results["peer"]
        lines += ["", "Peer pipeline by stage:", "", "| stage | s | share | RTF |", "|---|---|---|---|"]
        for stage, sec in peer["stages_s"].items():
            lines.append(f"| {stage} | {sec:.2f} | {pct(sec / peer['wall_s'])} | {sec / peer['audio_s']:.4f} |")
    names = [n for n in SYSTEMS if n in results]
    lines += ["", "Per recording:", "",
              "| recording | audio s | " + " | ".join(f"{n} wall s | {n} DER | {n} cpWER" for n in names) + " |",
              "|---|---|" + "---|---|---|" * len(names)]
    for i, f in enumerate(results[names[0]]["files"]):
        cells = []
        for n in names:
            g = results[n]["files"][i]
            cells.append(f"{g['wall_s']:.2f} | {pct(g['der'])} | {pct(g['cpwer'])}")
        lines.append(f"| {f['recording']} | {f['audio_s']:.1f} | " + " | ".join(cells) + " |")
    lines += [""] + [f"{n}: {results[n]['note']}" for n in names]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a trained polyhead run or checkpoint folder (needed for --system polyhead)")
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--set", default="conversations_test")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="the first N recordings (0: all)")
    parser.add_argument("--system", nargs="+", choices=SYSTEMS,
                        help="default: both with --run, the peer alone without")
    parser.add_argument("--speakers", choices=("known", "estimated"), default="known",
                        help="speaker count per recording: from the reference, or estimated by clustering")
    parser.add_argument("--threshold", type=float, default=DEFAULT_CLUSTER_THRESHOLD,
                        help="cosine distance threshold when the count is estimated (both systems)")
    parser.add_argument("--language", default="en", help="forced on both decoders ('' to let them choose)")
    parser.add_argument("--whisper", help="the peer's weights: a CTranslate2 folder or catalogue name "
                                          "(default: what the run was fine-tuned from)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="faster-whisper's batch of chunks")
    parser.add_argument("--out", type=Path, help="default: bench/out/pipeline_peer_<corpus>_<set>.json")
    args = parser.parse_args()
    args.language = args.language or None
    systems = args.system or (["polyhead", "peer"] if args.run else ["peer"])
    if any(s.startswith("polyhead") for s in systems) and not args.run:
        parser.error("--system polyhead needs --run")
    if args.set not in available_sets(args.corpus):
        parser.error(f"{args.corpus} has no set {args.set!r} (sets: {', '.join(sorted(available_sets(args.corpus)))})")
    cuts = list(load_set(args.corpus, args.set))
    cuts = cuts[:args.limit] if args.limit else cuts
    torch.set_num_threads(args.threads)

    settings = {"corpus": args.corpus, "set": args.set, "recordings": len(cuts),
                "audio_s": round(sum(c.duration for c in cuts), 2), "speakers": args.speakers,
                "threshold": args.threshold, "threads": args.threads, "language": args.language,
                "batch_size": args.batch_size, "machine": f"{platform.processor() or platform.machine()}",
                # rows of another model or other peer weights are not comparable with these
                "run": str(Path(args.run).resolve()) if args.run else None, "whisper": str(peer_weights(args))}
    out_path = args.out or OUT_DIR / f"pipeline_peer_{Path(args.corpus).name}_{args.set}.json"
    # Keep an earlier run's rows only when they were measured the same way on the same files.
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if out.get("settings") != settings:
        out = {"settings": settings}
    results = out.setdefault("results", {})
    for system in systems:
        results[system] = run_system(system, cuts, args)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    table = report(out)
    out_path.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {out_path} and {out_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
