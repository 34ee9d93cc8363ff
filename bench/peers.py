"""Pretrained peers on the same test sets `polyhead evaluate` uses, scored by the same code.

    OMP_NUM_THREADS=1 .venv/bin/python bench/peers.py corpora/demo --run runs/demo_bn
    .venv/bin/python bench/peers.py corpora/bench --system pocketsphinx --limit 0   # every utterance

Peers (install with `bash bench/install_peers.sh`; a missing one gives a "not installed" row):
    speaker   resemblyzer     EER, minDCF(0.01, 0.05) on the trial lists (cosine scores)
    ASR       pocketsphinx    WER / CER with polyhead's text normalisation
    VAD       silero-vad      speech-frame F1 on 10 ms frames, default threshold
              webrtcvad       the same; aggressiveness mode chosen on vad_dev
`--run RUN` adds polyhead's rows, computed by polyhead.evaluation's own functions.

Scoring is polyhead's: trial scores go through tasks.speaker.evaluate_trials, transcripts through
metrics.error_rates, speech frames through metrics.segments_to_frames / frame_f1, and
references come from the same manifests and trial lists. ASR runs on a fixed seeded subset
(`--limit`, the same utterances for every system) because pocketsphinx runs at about a
quarter of real time on this CPU. Prints markdown tables and writes bench/out/peers_<corpus>.json;
rows of earlier runs with the same subset settings are kept, so systems can be added one by one.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

from polyhead.audio import SAMPLE_RATE, to_model_audio
from polyhead.data.corpus import available_sets, load_set, read_info, read_trials, trials_path
from polyhead import metrics
from polyhead.data.labels import text_of
from polyhead.tasks.frame import evaluate_vad
from polyhead.tasks.speaker import evaluate_speaker, evaluate_trials
from polyhead.tasks.speech import evaluate_asr

from peer_models import resemblyzer_embedder, silero_segmenter  # bench/: the script's folder

SPEAKER_SETS = ("speaker_test", "ood_test")  # sets with a trial list
ASR_SETS = ("speech_test", "ood_test")
VAD_SETS = ("conversations_test", "vad_test")
VAD_DEV_SET = "vad_dev"  # where webrtcvad's mode is chosen, never a test set
FRAMES_PER_SECOND = 100  # evaluate_vad scores 10 ms frames
# 200 bench utterances are 650 s of audio: about 3 minutes of pocketsphinx on an idle CPU
DEFAULT_ASR_LIMIT = 200
DEFAULT_SEED = 0
WEBRTC_FRAME_S = 0.010  # webrtcvad accepts 10, 20 or 30 ms; 10 ms lines up with our frames
WEBRTC_MODES = (0, 1, 2, 3)  # its aggressiveness settings
INT16_SCALE = 32767
# pocketsphinx marks fillers and alternative pronunciations ("<sil>", "[NOISE]", "read(2)");
# they are not words of the transcript.
SPHINX_MARKUP = re.compile(r"<[^>]*>|\[[^\]]*\]|\(\d+\)")
OUT_DIR = Path(__file__).parent / "out"

TASK_SETS = {"speaker": SPEAKER_SETS, "asr": ASR_SETS, "vad": VAD_SETS}
TASK_OF = {"resemblyzer": "speaker", "pocketsphinx": "asr", "silero-vad": "vad", "webrtcvad": "vad"}
PEERS = tuple(TASK_OF)


# --------------------------------------------------------------------------- peers
# Each factory imports its package (ImportError: "not installed") and returns a function of
# 16 kHz float samples; the ones bench/pipeline_peer.py shares live in peer_models.py.

def pocketsphinx_transcriber():
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=SAMPLE_RATE)  # the en-us acoustic model, LM and dictionary it ships

    def transcribe(samples: np.ndarray) -> str:
        decoder.start_utt()
        decoder.process_raw(to_int16_bytes(samples), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return SPHINX_MARKUP.sub(" ", hyp.hypstr) if hyp else ""
    return transcribe


def silero_detector():
    segments = silero_segmenter()
    return lambda samples: metrics.segments_to_frames(segments(samples), len(samples) / SAMPLE_RATE)


def webrtc_detector(mode: int):
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    step = int(WEBRTC_FRAME_S * SAMPLE_RATE)

    def detect(samples: np.ndarray) -> np.ndarray:
        pcm = to_int16_bytes(samples)
        n = len(samples) // step  # a trailing partial frame is left out, i.e. non-speech
        return np.array([vad.is_speech(pcm[2 * i * step: 2 * (i + 1) * step], SAMPLE_RATE)
                         for i in range(n)], dtype=bool)
    return detect


def to_int16_bytes(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * INT16_SCALE).astype(np.int16).tobytes()


# ------------------------------------------------------------------------- scoring

def samples_of(cut) -> np.ndarray:
    return to_model_audio(cut.load_audio().mean(axis=0), cut.sampling_rate, name=cut.id)


def asr_subset(corpus, set_name: str, limit: int | None, seed: int) -> tuple[list, int]:
    """(the cuts every system transcribes, how many had a transcript): a seeded sample kept
    in manifest order, so each system and each run gets the same utterances."""
    cuts = [c for c in load_set(corpus, set_name) if text_of(c)]
    if not limit or limit >= len(cuts):
        return cuts, len(cuts)
    keep = sorted(random.Random(seed).sample(range(len(cuts)), limit))
    return [cuts[i] for i in keep], len(cuts)


def timed(fn, cuts) -> tuple[dict, dict]:
    """fn's result and how long it took against how much audio it heard."""
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    audio = sum(c.duration for c in cuts)
    return result, {"wall_s": round(wall, 1), "audio_s": round(audio, 1), "rtf": round(wall / audio, 4)}


def trial_list(corpus, set_name: str):
    cuts = load_set(corpus, set_name)
    trials = read_trials(trials_path(corpus, set_name), known_ids={c.id for c in cuts})
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    return [c for c in cuts if c.id in needed], trials


def peer_speaker(embed, corpus, set_name: str) -> dict:
    cuts, trials = trial_list(corpus, set_name)

    def score():
        emb = {}
        for cut in cuts:
            e = np.asarray(embed(samples_of(cut)), dtype=float)
            emb[cut.id] = e / (np.linalg.norm(e) + 1e-9)  # evaluate_trials scores dot products
        return evaluate_trials(emb, trials)
    res, cost = timed(score, cuts)
    return {**without_arrays(res), **cost}


def peer_asr(transcribe, cuts) -> dict:
    def score():
        hyps = [transcribe(samples_of(c)) for c in cuts]
        return metrics.error_rates([text_of(c) for c in cuts], hyps)
    res, cost = timed(score, cuts)
    return {**res, "utterances": len(cuts), **cost}


def reference_frames(cut) -> np.ndarray:
    """Speech frames of a long recording, built exactly as evaluate_vad builds them: the
    union of its supervisions, on round(duration * 100) frames."""
    n = int(round(cut.duration * FRAMES_PER_SECOND))
    return metrics.segments_to_frames([(s.start, s.end) for s in cut.supervisions], cut.duration)[:n]


def fit(frames: np.ndarray, n: int) -> np.ndarray:
    """A detector's mask on exactly n frames; frames it did not decide count as non-speech."""
    out = np.zeros(n, dtype=bool)
    out[: min(n, len(frames))] = frames[:n]
    return out


def vad_f1(detect, cuts) -> dict:
    refs = [reference_frames(c) for c in cuts]
    hyps = [fit(detect(samples_of(c)), len(r)) for c, r in zip(cuts, refs)]
    return metrics.frame_f1(np.concatenate(refs), np.concatenate(hyps))


def peer_vad(detect, cuts) -> dict:
    res, cost = timed(lambda: vad_f1(detect, cuts), cuts)
    return {**res, **cost}


def all_speech_f1(corpus) -> dict:
    """F1 of calling every frame speech, per VAD set: the floor a detector has to beat
    (recordings are mostly speech, so it is high)."""
    res = {}
    for s in vad_sets(corpus):
        refs = np.concatenate([reference_frames(c) for c in load_set(corpus, s)])
        res[s] = metrics.frame_f1(refs, np.ones_like(refs))
    return res


def choose_webrtc_mode(corpus) -> tuple[int, dict]:
    """webrtcvad has no threshold, only four modes: take the best F1 on the dev recordings
    (mode 0, its default, where the corpus has none)."""
    if VAD_DEV_SET not in available_sets(corpus):
        return 0, {}
    cuts = list(load_set(corpus, VAD_DEV_SET))
    dev = {mode: round(vad_f1(webrtc_detector(mode), cuts)["f1"], 4) for mode in WEBRTC_MODES}
    return max(dev, key=dev.get), dev


FACTORIES = {"resemblyzer": resemblyzer_embedder, "pocketsphinx": pocketsphinx_transcriber,
             "silero-vad": silero_detector}  # webrtcvad needs its mode chosen first


def without_arrays(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("scores", "labels", "examples")}


# ---------------------------------------------------------------------------- runs

def run_peer(name: str, corpus, asr_cuts: dict) -> dict:
    """{"sets": {set: metrics}} for one peer, or {"status": "not installed (module)"}."""
    note = ""
    try:  # only building the peer imports its package; errors while scoring are real errors
        if name == "webrtcvad":
            mode, dev_f1 = choose_webrtc_mode(corpus)
            system = webrtc_detector(mode)
            note = (f"mode {mode}, best on {VAD_DEV_SET} (F1 by mode {dev_f1})" if dev_f1
                    else "mode 0 (no dev set to choose on)")
        else:
            system = FACTORIES[name]()
    except ImportError as e:
        return {"status": f"not installed ({e.name or e})"}
    task = TASK_OF[name]
    if task == "speaker":
        sets = {s: peer_speaker(system, corpus, s) for s in speaker_sets(corpus)}
    elif task == "asr":
        sets = {s: peer_asr(system, cuts) for s, cuts in asr_cuts.items()}
    else:
        sets = {s: peer_vad(system, list(load_set(corpus, s))) for s in vad_sets(corpus)}
    return {"sets": sets, "note": note}


def run_polyhead(args, asr_cuts: dict) -> dict:
    """polyhead's rows for every task its model has, by polyhead.evaluation's own functions."""
    import polyhead

    model = polyhead.load(args.run).model
    trained_on = Path(model.config.corpus).resolve()
    note = f"{args.run}, trained on {model.config.corpus}"
    if trained_on != Path(args.corpus).resolve():
        note += f": not trained on {args.corpus}"
    rows = {}
    for task in model.tasks_with(head_type="speaker")[:1]:
        sets = {}
        for s in speaker_sets(args.corpus):
            res, cost = timed(lambda: evaluate_speaker(model, args.corpus, s, task),
                              trial_list(args.corpus, s)[0])
            sets[s] = {**without_arrays(res), **cost}
        rows["speaker"] = {"sets": sets, "note": note}
    for task in model.tasks_with(target="text")[:1]:
        sets = {}
        for s, cuts in asr_cuts.items():
            res, cost = timed(lambda: evaluate_asr(model, cuts, task), cuts)
            sets[s] = {**without_arrays(res), "utterances": len(cuts), **cost}
        rows["asr"] = {"sets": sets, "note": note}
    for task in model.tasks_with(target="vad")[:1]:
        sets = {}
        for s in vad_sets(args.corpus):
            cuts = list(load_set(args.corpus, s))
            res, cost = timed(lambda: evaluate_vad(model, cuts, task), cuts)
            sets[s] = {**res, **cost}
        rows["vad"] = {"sets": sets, "note": note}
    return rows


def speaker_sets(corpus) -> list[str]:
    return [s for s in SPEAKER_SETS if trials_path(corpus, s).is_file()]


def vad_sets(corpus) -> list[str]:
    return [s for s in VAD_SETS if s in available_sets(corpus)]


# -------------------------------------------------------------------------- tables

def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


# (column title, metric, format) per task; each set of the task gets these columns
COLUMNS = {
    "speaker": [("EER", "eer", pct), ("minDCF.01", "min_dcf_0.01", num), ("minDCF.05", "min_dcf_0.05", num)],
    "asr": [("WER", "wer", pct), ("CER", "cer", pct)],
    "vad": [("F1", "f1", num), ("precision", "precision", num), ("recall", "recall", num)],
}
TITLES = {"speaker": "Speaker verification (trial lists, cosine scores)",
          "asr": "Speech recognition (polyhead's text normalisation)",
          "vad": "Voice activity (speech-frame F1, 10 ms frames)"}


def table(task: str, rows: dict, sets: list[str]) -> str:
    cols = COLUMNS[task]
    head = ["system"] + [f"{s} {title}" for s in sets for title, _, _ in cols] + ["RTF", "note"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for system, row in rows.items():
        if "status" in row:
            lines.append(f"| {system} | {row['status']} |" + " |" * (len(head) - 2))
            continue
        cells = [fmt(row["sets"].get(s, {}).get(key)) for s in sets for _, key, fmt in cols]
        rtfs = [r["rtf"] for r in row["sets"].values() if "rtf" in r]
        rtf = f"{max(rtfs):.3f}" if rtfs else "-"
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {rtf} | {row.get('note', '')} |")
    return "\n".join(lines)


def report(out: dict) -> str:
    parts = [f"Corpus {out['corpus']}. RTF: wall seconds per audio second, the slowest set, "
             "model loading left out."]
    for task in ("speaker", "asr", "vad"):
        rows = out["results"].get(task)
        if not rows:
            continue
        scored = {s for r in rows.values() for s in r.get("sets", {})}
        sets = [s for s in TASK_SETS[task] if s in scored] or list(TASK_SETS[task])
        parts.append(f"\n{TITLES[task]}\n")
        if task == "speaker":
            base = {s: out["mfcc_baseline_eer"].get(s) for s in sets}
            rows = {**rows, "MFCC baseline (untrained)": {
                "sets": {s: {"eer": v} for s, v in base.items()}, "note": "from corpus.json"}}
        if task == "vad":
            rows = {**rows, "every frame speech": {"sets": out["all_speech"], "note": "the trivial floor"}}
        if task == "asr":
            parts.append("Utterances: " + ", ".join(
                f"{s} {n} of {out['asr_subset']['available'][s]}" for s, n in out["asr_subset"]["used"].items())
                + f" (seeded subset, seed {out['asr_subset']['seed']}, the same for every system)\n")
        parts.append(table(task, rows, sets))
    return "\n".join(parts)


# ---------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("--system", nargs="+", choices=PEERS + ("polyhead",),
                        help="default: every peer, and polyhead when --run is given")
    parser.add_argument("--run", help="a polyhead run or checkpoint folder")
    parser.add_argument("--limit", type=int, default=DEFAULT_ASR_LIMIT,
                        help=f"utterances per ASR set (0: all; default {DEFAULT_ASR_LIMIT})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the ASR subset")
    parser.add_argument("--out", type=Path, help="default: bench/out/peers_<corpus name>.json")
    args = parser.parse_args()
    systems = args.system or list(PEERS) + (["polyhead"] if args.run else [])
    if "polyhead" in systems and not args.run:
        parser.error("--system polyhead needs --run")
    out_path = args.out or OUT_DIR / f"peers_{Path(args.corpus).name}.json"

    have = set(available_sets(args.corpus))
    picked = {s: asr_subset(args.corpus, s, args.limit, args.seed) for s in ASR_SETS if s in have}
    asr_cuts = {s: cuts for s, (cuts, _) in picked.items()}
    subset = {"limit": args.limit, "seed": args.seed, "used": {s: len(c) for s, c in asr_cuts.items()},
              "available": {s: n for s, (_, n) in picked.items()}}

    # Keep earlier rows only when they were scored on the same utterances.
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if out.get("asr_subset") != subset or out.get("corpus") != args.corpus:
        out = {}
    info_sets = read_info(args.corpus).get("sets", {})
    out.update({"corpus": args.corpus, "asr_subset": subset,
                "mfcc_baseline_eer": {s: info_sets.get(s, {}).get("mfcc_baseline_eer") for s in SPEAKER_SETS},
                "all_speech": all_speech_f1(args.corpus)})
    results = out.setdefault("results", {})

    for system in systems:
        start = time.perf_counter()
        if system == "polyhead":
            for task, row in run_polyhead(args, asr_cuts).items():
                results.setdefault(task, {})["polyhead"] = row
        else:
            results.setdefault(TASK_OF[system], {})[system] = run_peer(system, args.corpus, asr_cuts)
        print(f"{system}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(report(out))
    print(f"\nwritten: {out_path}")


if __name__ == "__main__":
    main()
