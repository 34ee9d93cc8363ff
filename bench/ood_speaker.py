"""Speaker verification and voice activity on what the generator never made (issue 24).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ood_speaker.py --run runs/demo/multitask --corpus corpora/demo
    .venv/bin/python bench/ood_speaker.py --run RUN --corpus CORPUS --limit 20 --vad-limit 1   # a smoke test

Speaker conditions, each a trial list scored by every system:
    speaker_test               in-domain reference: held-out speakers of the training engines
    ood_test                   voices of engines never trained on (flite, festival, piper), with
                               the corpus's speaker profiles and session channels
    ood_test telephone         both sides through ``channel.telephone`` (band-pass, 8 kHz,
                               mu-law, line noise; seeded per utterance)
    ood_test clean/telephone   enrolment as synthesised, test by telephone
Systems: polyhead's speaker head, raw cosine and AS-norm against the run's cohort of training
speakers (``polyhead evaluate`` saves it; scoring.py); resemblyzer (cosine); and both with
AS-norm against an own-set cohort (the other speakers of the trial list's own set, heard
through the same channel: what a cohort collected on the target channel gives). Every
system's threshold is its EER threshold on speaker_dev: polyhead's from the run's
calibration.json, resemblyzer's picked here the same way. Columns: EER; FA@thr, the share of
different-speaker trials accepted at that threshold (what "one threshold means the same on a
new channel" is about); miss@thr, the share of same-speaker trials rejected; and FA / miss at
the strict operating point (the dev threshold that accepts 1% of its impostors).

Voice activity, 10 ms frames: frame F1 on the VAD test recordings (references from the
manifests, as evaluate_vad builds them), polyhead's head at its calibrated threshold against
silero-vad at its default; and inputs with no speech at all (20 s each: digital zeros, white
noise at -50 dBFS, a 440 Hz tone, chords): the share of frames each system calls speech, and
for polyhead the seconds of speech segments ``analyze`` returns (the silence floor and the
VAD head's gate) and whether it wrote any text. Both should be 0.

Writes a markdown report (default bench/out/ood_speaker_<corpus>.md) and the numbers as JSON
beside it. resemblyzer and silero-vad: ``bash bench/install_peers.sh``; a missing one is
reported as not installed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from polyhead.audio import SAMPLE_RATE
from polyhead.data.corpus import available_sets, load_set, read_trials, trials_path
from polyhead.data.synth import channel as chan
from polyhead import metrics
from polyhead.scoring import false_accept_rate

from peers import FRAMES_PER_SECOND, fit, reference_frames, samples_of  # bench/: the script's folder

OUT_DIR = Path(__file__).parent / "out"
DEV_SET = "speaker_dev"
CONDITIONS = (  # (name, trial set, enrolment channel, test channel)
    ("speaker_test", "speaker_test", "clean", "clean"),
    ("ood_test", "ood_test", "clean", "clean"),
    ("ood_test telephone", "ood_test", "telephone", "telephone"),
    ("ood_test clean/telephone", "ood_test", "clean", "telephone"),
)
VAD_SET = "vad_test"
NEGATIVE_SECONDS = 20
# the operating point of a verification service that must keep impostors out: the dev
# threshold that accepts 1% of its impostors, and what it accepts on the other lists
OPERATING_FAR = 0.01


# ------------------------------------------------------------------------ inputs

def pick_trials(corpus, set_name: str, limit: int | None, seed: int) -> tuple[list, dict]:
    """(a seeded subset of the set's trials, its cuts by id): ``limit`` trials at most, half
    of them targets where the list has enough, in list order."""
    cuts = {c.id: c for c in load_set(corpus, set_name)}
    trials = read_trials(trials_path(corpus, set_name), known_ids=set(cuts))
    if limit and limit < len(trials):
        rng = random.Random(seed)
        targets = [i for i, t in enumerate(trials) if t.target]
        others = [i for i, t in enumerate(trials) if not t.target]
        k = min(len(targets), limit // 2)
        keep = rng.sample(targets, k) + rng.sample(others, min(len(others), limit - k))
        trials = [trials[i] for i in sorted(keep)]
    return trials, cuts


def audio_of(cut, how: str) -> np.ndarray:
    x = samples_of(cut)
    if how == "telephone":  # seeded by the utterance: every system hears the same call
        x = chan.telephone(x, np.random.default_rng(zlib.crc32(cut.id.encode())))
    return x


def negatives() -> dict[str, np.ndarray]:
    """Inputs with no speech, NEGATIVE_SECONDS each."""
    n = NEGATIVE_SECONDS * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(n)
    chords = np.zeros(n)
    for k, start in enumerate(range(0, n, SAMPLE_RATE // 2)):  # a chord every 0.5 s, plucked
        u = t[: min(SAMPLE_RATE // 2, n - start)]
        root = 48 + (5 * k) % 24
        for note in (root, root + 4, root + 7):
            f0 = 440.0 * 2 ** ((note - 69) / 12)
            for h in (1, 2, 3):
                chords[start:start + len(u)] += np.sin(2 * np.pi * h * f0 * u) * np.exp(-u / 0.3) / h
    return {"digital zeros": np.zeros(n, np.float32),
            "white noise -50 dBFS": (noise / noise.std() * 10 ** (-50 / 20)).astype(np.float32),
            "440 Hz tone -12 dBFS": (np.sin(2 * np.pi * 440 * t) * 10 ** (-12 / 20)).astype(np.float32),
            "chords -12 dBFS": chan.normalise_peak(chords.astype(np.float32), -12.0)}


# ----------------------------------------------------------------------- systems

class Polyhead:
    """The run's speaker head (through ``inference.speaker.embed``, as `polyhead verify`),
    its calibrated thresholds and cohort, and its VAD head."""

    def __init__(self, run: str):
        import polyhead

        self.ph = polyhead.load(run)
        self.snorm = self.ph.snorm
        tasks = self.ph.model.tasks_with(head_type="speaker")
        self.speaker = tasks[0] if tasks else None
        vad = self.ph.model.tasks_with(target="vad")
        self.vad = vad[0] if vad else None

    def embed(self, samples: np.ndarray) -> np.ndarray:
        from polyhead.inference import speaker

        return speaker.embed(self.ph, samples)

    def vad_logits(self, samples: np.ndarray) -> np.ndarray:
        """The VAD head's logits (its calibrated threshold subtracted) on 10 ms frames."""
        import torch

        limit = self.ph.max_seconds * SAMPLE_RATE
        step = int(limit) if np.isfinite(limit) else len(samples)
        pieces = [samples[a:a + step] for a in range(0, len(samples), step)]
        out = []
        with torch.no_grad():
            for x in pieces:
                inputs, lengths = self.ph.model_inputs(x)
                logits = self.ph.model(inputs, lengths, [self.vad])[self.vad]["logits"][0].float().numpy()
                n = int(round(len(x) / SAMPLE_RATE * FRAMES_PER_SECOND))
                fps = self.ph.model.encoder.frames_per_second
                idx = np.minimum((np.arange(n) * fps / FRAMES_PER_SECOND).astype(int), len(logits) - 1)
                out.append(logits[idx])
        return np.concatenate(out)


def load_peer(name: str):
    """(function, None) or (None, "not installed (module)")."""
    try:
        if name == "resemblyzer":
            from peer_models import resemblyzer_embedder

            return resemblyzer_embedder(), None
        from peers import silero_detector

        return silero_detector(), None
    except ImportError as e:
        return None, f"not installed ({e.name or e})"


# ----------------------------------------------------------------------- scoring

class Embeddings:
    """Unit embeddings by (cut id, channel), each computed once per system."""

    def __init__(self, embed):
        self.embed, self.cache = embed, {}

    def __call__(self, cut, how: str) -> np.ndarray:
        key = (cut.id, how)
        if key not in self.cache:
            e = np.asarray(self.embed(audio_of(cut, how)), dtype=np.float64)
            self.cache[key] = e / (np.linalg.norm(e) + 1e-12)
        return self.cache[key]


def score_trials(emb: Embeddings, trials, cuts, enrol_how: str, test_how: str, snorm=None):
    """(raw scores, normalised scores or None, labels)."""
    e = np.stack([emb(cuts[t.enrol], enrol_how) for t in trials])
    x = np.stack([emb(cuts[t.test], test_how) for t in trials])
    labels = np.array([int(t.target) for t in trials])
    raw = np.einsum("ij,ij->i", e, x)
    normed = snorm.pair_scores(e, x)[1] if snorm is not None else None
    return raw, normed, labels


def own_set_snorm(emb: Embeddings, trials, cuts, enrol_how: str, test_how: str, top_k: int) -> np.ndarray:
    """AS-norm scores of ``trials`` against a cohort drawn from the list's own set and channel:
    every utterance of the set (each side's cohort heard through that side's channel) except
    those of the trial's two speakers. The cohort then shares the trials' voices' domain and
    channel, which a cohort of training speakers does not; no trial speaker is in its own cohort."""
    from polyhead.scoring import as_norm, top_k_stats

    ids = sorted(cuts)
    speaker = np.array([cuts[i].supervisions[0].speaker for i in ids])
    pools = {how: np.stack([emb(cuts[i], how) for i in ids]) for how in {enrol_how, test_how}}
    out = []
    for t in trials:
        e, x = emb(cuts[t.enrol], enrol_how), emb(cuts[t.test], test_how)
        keep = ~np.isin(speaker, [cuts[t.enrol].supervisions[0].speaker, cuts[t.test].supervisions[0].speaker])
        stats_e = top_k_stats((pools[enrol_how][keep] @ e)[None], top_k)
        stats_t = top_k_stats((pools[test_how][keep] @ x)[None], top_k)
        out.append(float(as_norm(np.array([e @ x]), stats_e, stats_t)[0]))
    return np.array(out)


def threshold_at_far(scores, labels, far: float) -> float:
    """The lowest threshold that accepts at most ``far`` of the non-target trials of a dev list."""
    impostors = np.sort(np.asarray(scores, dtype=float)[np.asarray(labels) == 0])
    allowed = int(np.floor(far * len(impostors)))
    return float(np.nextafter(impostors[len(impostors) - allowed - 1], np.inf))


def verdict(scores, labels, threshold: float | None, strict: float | None = None) -> dict:
    """EER; FA and miss at the EER threshold of the dev list (``threshold``) and at its
    threshold for OPERATING_FAR false accepts (``strict``)."""
    res = {"trials": int(len(labels)), "targets": int(labels.sum())}
    if labels.min() == labels.max():
        return {**res, "eer": None, "note": "needs targets and non-targets"}
    res["eer"] = metrics.eer(scores, labels)[0]
    for key, thr in (("", threshold), ("_strict", strict)):
        if thr is not None:
            res["far" + key] = false_accept_rate(scores, labels, thr)
            res["miss" + key] = float((np.asarray(scores)[labels == 1] < thr).mean())
    return res


def speaker_bench(args, poly: Polyhead | None) -> dict:
    """{system: {condition: verdict}}, and each system's dev threshold."""
    have = set(available_sets(args.corpus))
    sets = {s for _, s, _, _ in CONDITIONS if s in have and trials_path(args.corpus, s).is_file()}
    if DEV_SET in have and trials_path(args.corpus, DEV_SET).is_file():
        sets.add(DEV_SET)
    picked = {s: pick_trials(args.corpus, s, args.limit, args.seed) for s in sets}
    systems: dict[str, dict] = {}
    if poly is not None and poly.speaker is not None:
        emb = Embeddings(poly.embed)
        systems["polyhead raw"] = {"emb": emb, "threshold": poly.ph.threshold, "snorm": None,
                                   "note": "threshold from the run's calibration.json"}
        if poly.snorm is not None:
            systems["polyhead AS-norm"] = {"emb": emb, "threshold": poly.snorm.threshold, "snorm": poly.snorm,
                                           "note": f"cohort {len(poly.snorm.cohort)} training speakers, "
                                                   f"top {poly.snorm.top_k}"}
    if not args.no_peers:
        fn, status = load_peer("resemblyzer")
        systems["resemblyzer"] = {"status": status} if fn is None else {"emb": Embeddings(fn), "threshold": None,
                                                                         "snorm": None, "note": ""}
    out = {}
    for name, sys_ in systems.items():
        if "status" in sys_:
            out[name] = {"status": sys_["status"]}
            continue
        start = time.perf_counter()
        threshold = sys_["threshold"]
        if threshold is None and DEV_SET in picked:  # the peer's dev EER threshold, as polyhead's
            raw, _, labels = score_trials(sys_["emb"], *picked[DEV_SET], "clean", "clean")
            threshold = metrics.eer(raw, labels)[1]
            sys_["note"] = f"threshold {threshold:.3f}: EER point of {DEV_SET} ({len(labels)} trials)"
        strict = None
        if DEV_SET in picked:
            raw, normed, labels = score_trials(sys_["emb"], *picked[DEV_SET], "clean", "clean", sys_["snorm"])
            strict = threshold_at_far(normed if sys_["snorm"] is not None else raw, labels, OPERATING_FAR)
        rows = {}
        for cond, set_name, enrol_how, test_how in CONDITIONS:
            if set_name not in picked:
                continue
            raw, normed, labels = score_trials(sys_["emb"], *picked[set_name], enrol_how, test_how, sys_["snorm"])
            rows[cond] = verdict(normed if sys_["snorm"] is not None else raw, labels, threshold, strict)
        out[name] = {"conditions": rows, "threshold": threshold, "strict_threshold": strict, "note": sys_["note"],
                     "seconds": round(time.perf_counter() - start, 1)}
        print(f"speaker {name}: {out[name]['seconds']} s", file=sys.stderr, flush=True)
        if sys_["snorm"] is None and DEV_SET in picked:  # the same embeddings, AS-norm on an own-set cohort
            out[f"{name.removesuffix(' raw')} AS-norm, own-set cohort"] = own_set_rows(sys_["emb"], picked, args.top_k)
    return out


def own_set_rows(emb: Embeddings, picked: dict, top_k: int) -> dict:
    """Verdicts of ``own_set_snorm`` on every condition, at the EER threshold of speaker_dev
    normalised the same way (its cohort: speaker_dev's other speakers)."""
    start = time.perf_counter()
    trials, cuts = picked[DEV_SET]
    labels = np.array([int(t.target) for t in trials])
    dev = own_set_snorm(emb, trials, cuts, "clean", "clean", top_k)
    threshold, strict = metrics.eer(dev, labels)[1], threshold_at_far(dev, labels, OPERATING_FAR)
    rows = {}
    for cond, set_name, enrol_how, test_how in CONDITIONS:
        if set_name in picked:
            trials, cuts = picked[set_name]
            labels = np.array([int(t.target) for t in trials])
            rows[cond] = verdict(own_set_snorm(emb, trials, cuts, enrol_how, test_how, top_k), labels, threshold, strict)
    return {"conditions": rows, "threshold": threshold, "strict_threshold": strict,
            "seconds": round(time.perf_counter() - start, 1),
            "note": f"cohort: the list's own set and channel minus the trial's speakers, top {top_k}; "
                    f"threshold {threshold:.2f}: EER point of {DEV_SET} normalised the same way"}


def vad_bench(args, poly: Polyhead | None) -> dict:
    """{"f1": {system: frame F1 result}, "negatives": {input: {system: share of frames}}}."""
    have = VAD_SET in available_sets(args.corpus)
    cuts = list(load_set(args.corpus, VAD_SET))[: args.vad_limit or None] if have else []
    refs = [reference_frames(c) for c in cuts]
    samples = [samples_of(c) for c in cuts]
    detectors = {}
    if poly is not None and poly.vad is not None:
        detectors["polyhead"] = lambda x: poly.vad_logits(x) > 0
    status = {}
    if not args.no_peers:
        fn, why = load_peer("silero-vad")
        if fn is None:
            status["silero-vad"] = why
        else:
            detectors["silero-vad"] = fn
    f1, neg = {}, {}
    for name, detect in detectors.items():
        if cuts:
            hyps = [fit(detect(x), len(r)) for x, r in zip(samples, refs)]
            f1[name] = {**metrics.frame_f1(np.concatenate(refs), np.concatenate(hyps)), "recordings": len(cuts)}
    for label, x in negatives().items():
        row = {}
        for name, detect in detectors.items():
            n = int(round(len(x) / SAMPLE_RATE * FRAMES_PER_SECOND))
            row[name] = float(fit(detect(x), n).mean())
        if poly is not None:
            res = poly.ph.analyze(x, SAMPLE_RATE)
            row["polyhead analyze: speech s"] = round(sum(s["end"] - s["start"] for s in res.get("segments", [])), 2)
            row["polyhead analyze: text"] = res.get("text", "")
        neg[label] = row
    return {"f1": f1, "negatives": neg, "status": status, "set": VAD_SET}


# ------------------------------------------------------------------------ report

def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def report(out: dict) -> str:
    conds = [c for c, *_ in CONDITIONS if any(c in r.get("conditions", {}) for r in out["speaker"].values())]
    lines = ["# Speaker and VAD on voices the generator never made\n",
             (f"Run `{out['run']}`" if out["run"] else "Peers only (no --run)")
             + f", corpus `{out['corpus']}`; trials per list: "
             f"{out['limit'] or 'all'} (seed {out['seed']}).\n",
             "## Speaker verification\n",
             "EER / FA@thr (different-speaker trials accepted at the speaker_dev threshold) / miss@thr.\n"]
    head = ["system"] + conds + ["note"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, row in out["speaker"].items():
        if "status" in row:
            lines.append(f"| {name} | {row['status']} |" + " |" * (len(head) - 2))
            continue
        cells = []
        for c in conds:
            r = row["conditions"].get(c)
            cells.append("-" if r is None else f"{pct(r.get('eer'))} / {pct(r.get('far'))} / {pct(r.get('miss'))}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['note']} |")
    lines += [f"\nAt the dev threshold that accepts {100 * OPERATING_FAR:g}% of speaker_dev's impostors: "
              "FA / miss on each list.\n", "| " + " | ".join(head[:-1]) + " |", "|---" * (len(head) - 1) + "|"]
    for name, row in out["speaker"].items():
        if "status" not in row:
            cells = [("-" if (r := row["conditions"].get(c)) is None
                      else f"{pct(r.get('far_strict'))} / {pct(r.get('miss_strict'))}") for c in conds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    trials = {c: r["trials"] for row in out["speaker"].values() for c, r in row.get("conditions", {}).items()}
    lines.append("\nTrials: " + ", ".join(f"{c} {n}" for c, n in trials.items()) + "\n")
    vad = out["vad"]
    lines += ["## Voice activity\n", f"Frame F1 on {vad['set']} (10 ms frames):\n",
              "| system | F1 | precision | recall | recordings |", "|---|---|---|---|---|"]
    for name, r in vad["f1"].items():
        lines.append(f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['recordings']} |")
    for name, why in vad["status"].items():
        lines.append(f"| {name} | {why} | | | |")
    if vad["negatives"]:
        cols = list(next(iter(vad["negatives"].values())))
        lines += [f"\nNo speech at all ({NEGATIVE_SECONDS} s each): share of frames called speech"
                  + (", and what polyhead's `analyze` returns" if any("analyze" in c for c in cols) else "") + ":\n",
                  "| input | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for label, row in vad["negatives"].items():
            cells = [f"{v} s" if c.endswith("speech s") else repr(v) if c.endswith("text") else pct(v)
                     for c, v in row.items()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a polyhead run folder (evaluated: calibration.json, cohort.safetensors)")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--limit", type=int, default=0, help="trials per list, speaker_dev included (0: all)")
    parser.add_argument("--vad-limit", type=int, default=0, help=f"{VAD_SET} recordings (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peers", action="store_true", help="polyhead only")
    parser.add_argument("--top-k", type=int, default=20, help="cohort scores per side for the own-set cohort")
    parser.add_argument("--out", type=Path, help="markdown report (default bench/out/ood_speaker_<corpus>.md)")
    args = parser.parse_args()
    if not args.run and args.no_peers:
        parser.error("nothing to run: give --run, or leave out --no-peers")
    poly = Polyhead(args.run) if args.run else None
    out = {"run": args.run, "corpus": args.corpus, "limit": args.limit, "seed": args.seed,
           "speaker": speaker_bench(args, poly), "vad": vad_bench(args, poly)}
    path = args.out or OUT_DIR / f"ood_speaker_{Path(args.corpus).name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = report(out)
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(text)
    print(f"written: {path} (and {path.with_suffix('.json').name})")


if __name__ == "__main__":
    main()
