"""Evaluate a run folder and print the table researchers compare: one row per model,
in-distribution and out-of-distribution columns side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..decoding import DecodingOptions
from ..model import MultiTaskModel
from ..runs import COHORT_FILE, METRICS_FILE, checkpoint_folder, write_calibration
from ..tasks import task_kinds
from .evaluate import evaluate_model

# (column title, set, metric) in the order tables show them
COLUMNS = [
    ("WER", "speech_test", "wer"), ("CER", "speech_test", "cer"), ("OOD WER", "ood_test", "wer"),
    ("OOD CER", "ood_test", "cer"),
    ("retention WER", "retention_test", "wer"), ("retention WER (tel)", "retention_tel_test", "wer"),
    ("punct F1 (retention)", "retention_test", "punctuation_f1"),
    ("EER", "speaker_test", "eer"), ("minDCF.01", "speaker_test", "min_dcf_0.01"),
    ("OOD EER", "ood_test", "eer"),
    # AS-norm against the training speakers' cohort; false accepts at the dev-calibrated threshold
    ("EER (s-norm)", "speaker_test", "eer_snorm"), ("OOD EER (s-norm)", "ood_test", "eer_snorm"),
    ("OOD FA@thr", "ood_test", "far"), ("OOD FA@thr (s-norm)", "ood_test", "far_snorm"),
    ("MFCC EER", "speaker_test", "mfcc_baseline_eer"),
    ("LID acc", "speaker_test", "accuracy@language"), ("intent acc", "speech_test", "accuracy@intent"),
    ("VAD F1", "vad_test", "f1"),
    # the decoder's task tokens, beside the heads above
    ("LID acc (token)", "speaker_test", "language_accuracy"), ("intent acc (slu)", "speech_test", "intent_accuracy"),
    ("slot F1 (slu)", "speech_test", "slot_f1"), ("cpWER (tokens)", "conversations_test", "cpwer"),
    ("DER (tokens)", "conversations_test", "der"),
    # a multilingual decoder: foreign speech (each in its own language), its <|translate|>
    # English (sacrebleu's 0-100 scores), and English with foreign nouns
    ("WER (de fr es it nl)", "translate_test", "wer"), ("LID acc (token, translate_test)", "translate_test",
                                                          "language_accuracy"),
    ("BLEU", "translate_test", "bleu"), ("chrF", "translate_test", "chrf"),
    ("code-switch WER", "codeswitch_test", "wer"),
]
SCORES_0_100 = ("BLEU", "chrF")  # printed as they are, not as percentages


def flatten(results: dict, model: MultiTaskModel) -> dict[str, float]:
    """{column title: value} from nested evaluate_model results."""
    row = {}
    for title, set_name, metric in COLUMNS:
        metric, _, target = metric.partition("@")
        for task, values in results.get(set_name, {}).items():
            if target and (task not in model.config.tasks or model.config.tasks[task].target != target):
                continue
            if metric in values and values[metric] is not None:
                row[title] = values[metric]
                break
    return row


def format_table(rows: dict[str, dict[str, float]]) -> str:
    cols = [c for c, _, _ in COLUMNS if any(c in r for r in rows.values())]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = [("-" if c not in r else f"{r[c]:.1f}" if c in SCORES_0_100
                  else f"{100 * r[c]:.1f}%" if "acc" not in c and "F1" not in c and "DCF" not in c
                  else f"{r[c]:.3f}") for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COHORT_SET = "speaker_train"  # the s-norm cohort: the training speakers
COHORT_UTTERANCES = 3  # per cohort speaker (one per session first)
COHORT_MAX_SPEAKERS = 1000


def speaker_cohort(model: MultiTaskModel, corpus, task: str, top_k: int | None = None):
    """(the AS-norm cohort, the set it came from): an ``scoring.ScoreNorm`` not yet
    calibrated, one unit mean embedding per training speaker of COHORT_SET (or the task's
    first training set that the corpus has), from up to COHORT_UTTERANCES of its
    utterances, one per session first; at most COHORT_MAX_SPEAKERS speakers, evenly spread
    over the sorted names. The cohort is None where the corpus has no such set or fewer
    than two speakers."""
    from ..data.corpus import available_sets, label, load_set
    from ..scoring import DEFAULT_TOP_K, ScoreNorm, speaker_means
    from ..tasks.speaker import embeddings

    have = set(available_sets(corpus))
    candidates = [COHORT_SET] + list(model.config.tasks[task].train_sets or [])
    set_name = next((n for n in candidates if n in have), None)
    if set_name is None:
        return None, None
    by_speaker: dict[str, list] = {}
    for cut in sorted(load_set(corpus, set_name), key=lambda c: c.id):
        if (spk := label(cut, "speaker")) is not None:
            by_speaker.setdefault(spk, []).append(cut)
    speakers = sorted(by_speaker)
    if len(speakers) > COHORT_MAX_SPEAKERS:
        speakers = [speakers[i] for i in np.linspace(0, len(speakers) - 1, COHORT_MAX_SPEAKERS).round().astype(int)]
    if len(speakers) < 2:
        return None, set_name
    chosen, speaker_of = [], {}
    for spk in speakers:
        first, sessions = [], set()
        for cut in by_speaker[spk]:  # the first utterance of each session, then the rest
            if (session := label(cut, "session")) not in sessions:
                sessions.add(session)
                first.append(cut)
        picked = (first + [c for c in by_speaker[spk] if c not in first])[:COHORT_UTTERANCES]
        chosen += picked
        speaker_of.update({c.id: spk for c in picked})
    names, cohort = speaker_means(embeddings(model, chosen, task), speaker_of)
    return ScoreNorm(cohort, top_k or DEFAULT_TOP_K, speakers=tuple(names)), set_name


def calibrate(model: MultiTaskModel, corpus, run: Path) -> dict:
    """Decision thresholds picked on dev sets, saved in the run's calibration.json (and set
    on the model): the verification threshold at the dev trials' equal error rate, and the
    VAD head's logit threshold of best frame F1 on the VAD dev set. With a speaker head and
    training speakers, also the AS-norm cohort (``speaker_cohort``, saved as
    cohort.safetensors beside calibration.json) and ``verify_threshold_snorm``, the dev
    trials' EER threshold on normalised scores: inference then decides on those."""
    from ..data.corpus import available_sets, load_set, trials_path
    from ..tasks.frame import vad_threshold
    from ..tasks.speaker import evaluate_speaker

    cal: dict = {}
    kinds = task_kinds(model.config)
    tasks = [k.name for k in kinds if k.embeds]
    saved_cohort = False
    if tasks and trials_path(corpus, "speaker_dev").is_file():
        norm, cohort_set = speaker_cohort(model, corpus, tasks[0])
        res = evaluate_speaker(model, corpus, "speaker_dev", tasks[0], snorm=norm)
        if res["eer"] is not None:
            cal.update(verify_threshold=float(res["threshold"]), dev_eer=float(res["eer"]), set="speaker_dev")
            if norm is not None and np.isfinite(res["threshold_snorm"]):
                norm.threshold = float(res["threshold_snorm"])
                norm.save(run)
                saved_cohort = True
                cal.update(verify_threshold_snorm=norm.threshold, dev_eer_snorm=float(res["eer_snorm"]),
                           cohort=COHORT_FILE, cohort_set=cohort_set, cohort_speakers=len(norm.cohort),
                           snorm_top_k=norm.top_k)
    if not saved_cohort:
        (run / COHORT_FILE).unlink(missing_ok=True)  # a cohort of an earlier calibration is stale
    for task in [k.name for k in kinds if k.detects_speech]:
        dev = model.config.tasks[task].dev_set or "vad_dev"
        if dev in available_sets(corpus):
            model.heads[task].threshold = 0.0
            threshold, f1 = vad_threshold(model, load_set(corpus, dev), task)
            model.heads[task].threshold = threshold
            cal.update(vad_threshold=threshold, vad_dev_f1=f1, vad_set=dev)
    if cal:
        write_calibration(run, cal)
    return cal


def evaluate_run(run: str | Path, corpus: str | None = None, sets=None, checkpoint: str = "best",
                 limit: int | None = None, beam_size: int | None = None,
                 decoding: DecodingOptions | None = None) -> dict:
    """``decoding``: how decoder heads write transcripts (default theirs: greedy, or the
    configured beam; ``beam_size`` alone: that beam)."""
    run = Path(run)
    folder = checkpoint_folder(run, checkpoint)
    model = MultiTaskModel.load(folder)
    if decoding is None and beam_size:
        decoding = DecodingOptions(beam_size=beam_size)
    corpus = corpus or model.config.corpus
    cal = calibrate(model, corpus, run)  # first: the test sets are scored at the dev sets' thresholds
    from ..scoring import ScoreNorm

    results = evaluate_model(model, corpus, sets, limit=limit, snorm=ScoreNorm.load(run, cal),
                             verify_threshold=cal.get("verify_threshold"), decoding=decoding)
    row = flatten(results, model)
    out = {"run": str(run), "checkpoint": str(folder), "corpus": str(corpus), "results": results,
           "row": row, "table": format_table({run.name: row})}
    (run / METRICS_FILE).write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


def pareto_points(runs: list[str | Path]) -> dict[str, tuple]:
    """{run name: (in-domain WER, retention WER, EER or None)} from each run's evaluation
    (``polyhead evaluate`` writes it); a run not evaluated, or evaluated without the speech or
    retention sets, is named in the error."""
    points = {}
    for run in map(Path, runs):
        path = run / METRICS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{run}: no {METRICS_FILE}; run `polyhead evaluate {run}` first")
        row = json.loads(path.read_text())["row"]
        missing = [c for c in ("WER", "retention WER") if c not in row]
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)} (evaluate it on speech_test and retention_test)")
        name = run.name if run.name not in points else str(run)
        points[name] = (row["WER"], row["retention WER"], row.get("EER"))
    return points


def plot_pareto(points: dict[str, tuple], path: str | Path, xlabel: str = "in-domain WER",
                ylabel: str = "retention WER") -> Path:
    """One point per model: (in-domain WER, retention WER, EER or None). Lower-left is better
    on both; the EER is written beside each point (the third mark). The zero-shot point's
    retention WER is drawn as a line: points above it forgot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, (x, y, eer) in points.items():
        zero = name.startswith("zero-shot")
        ax.scatter([100 * x], [100 * y], marker="*" if zero else "o", s=120 if zero else 50,
                   color="black" if zero else None, zorder=3)
        label = name + (f"  (EER {100 * eer:.1f}%)" if eer is not None else "")
        ax.annotate(label, (100 * x, 100 * y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if zero:
            ax.axhline(100 * y, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel(xlabel + " (%)")
    ax.set_ylabel(ylabel + " (%)")
    ax.set_title("Forgetting: in-domain against retention WER (lower-left is better)")
    ax.grid(True, alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
