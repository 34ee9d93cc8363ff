"""Metrics for every head: WER/CER, BLEU/chrF, EER/minDCF and DET curves, VAD frame F1, accuracy,
slot F1, DER, cpWER.

Conventions (see docs/reference formats, "Metrics"):
- Text goes through Whisper's normaliser (`polyhead.text.scoring_form`) on both sides before
  WER/CER/cpWER.
- Verification scores are "higher = more likely the same speaker"; labels are 1 (target) / 0.
- minDCF is normalised by min(c_miss*p_target, c_fa*(1-p_target)); report p_target 0.01 and 0.05.
- DER uses a +-0.25 s forgiveness collar and counts overlapping speech (pyannote.metrics).
"""

from __future__ import annotations

import math
from pathlib import Path

import jiwer
import numpy as np

from .text import SCORING_NORMALISER, normalize_text, scoring_form  # noqa: F401 (re-exported)
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm
from sklearn.metrics import roc_curve

# VoxSRC scores minDCF at 0.05; several toolkits default to 0.01. Report both.
P_TARGET_VOXSRC = 0.05
P_TARGET_DEFAULT = 0.01
DER_COLLAR_S = 0.25  # the usual NIST md-eval forgiveness collar, each side of a boundary
DEFAULT_FRAME_SHIFT_S = 0.010  # same 10 ms hop as the feature frames (polyhead.features)

# Probabilities shown on DET axes; the axes themselves are in standard-normal deviates.
DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
DET_LIMITS = (0.0005, 0.5)
DET_CLIP = 1e-6  # keeps norm.ppf finite at rates of exactly 0 or 1



# ----------------------------------------------------------------------------- text

def _rate(errors: float, reference: float) -> float:
    # With nothing to recognise, any output is unboundedly wrong; no output is perfect.
    if reference == 0:
        return 0.0 if errors == 0 else math.inf
    return errors / reference


def error_rates(refs: list[str], hyps: list[str], language: str = "en") -> dict:
    """Corpus-level WER and CER (fractions, errors pooled over the whole set, not averaged).

    Both sides are normalised with Whisper's normaliser (`scoring_form`). CER counts the spaces between words as
    characters (jiwer's convention). Empty references are allowed: their hypothesis words are
    insertions; a set with no reference words at all has rate 0.0 if nothing was hypothesised,
    else inf.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs = [scoring_form(r, language) for r in refs]
    hyps = [scoring_form(h, language) for h in hyps]
    if not refs:
        refs, hyps = [""], [""]  # jiwer needs at least one pair; scores as zero errors
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    ref_words = words.hits + words.substitutions + words.deletions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    return {
        "wer": _rate(word_errors, ref_words),
        "cer": _rate(char_errors, ref_chars),
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "ref_words": ref_words,
        "ref_chars": ref_chars,
    }


_PUNCTUATION = ".,?!;:"


def _written_tokens(text: str) -> list[tuple[str, str, bool]]:
    """(bare lower-case word, the punctuation mark after it or "", starts upper-case)."""
    out = []
    for raw in text.split():
        bare = normalize_text(raw).replace(" ", "")
        if not bare:
            continue
        tail = raw.rstrip("\"')")[-1:]
        out.append((bare, tail if tail in _PUNCTUATION else "", raw.lstrip("\"'(")[:1].isupper()))
    return out


def written_form(refs: list[str], hyps: list[str]) -> dict:
    """How well transcripts keep the written form, on the words both sides share (jiwer's
    alignment of the bare words): punctuation F1 (a mark after a word is right when the
    reference has the same mark there) and the share of shared words whose capitalisation
    matches the reference's."""
    tp = fp = fn = case_ok = shared = 0
    for ref, hyp in zip(refs, hyps):
        r, h = _written_tokens(ref), _written_tokens(hyp)
        if not r or not h:
            fn += sum(1 for _, p, _ in r if p)
            fp += sum(1 for _, p, _ in h if p)
            continue
        out = jiwer.process_words(" ".join(w for w, _, _ in r), " ".join(w for w, _, _ in h))
        matched_r, matched_h = set(), set()
        for chunk in out.alignments[0]:
            if chunk.type in ("equal", "substitute"):
                for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                    i, j = chunk.ref_start_idx + k, chunk.hyp_start_idx + k
                    matched_r.add(i), matched_h.add(j)
                    pr, ph = r[i][1], h[j][1]
                    tp += bool(pr) and pr == ph
                    fp += bool(ph) and ph != pr
                    fn += bool(pr) and ph != pr
                    if chunk.type == "equal":
                        shared += 1
                        case_ok += r[i][2] == h[j][2]
        fn += sum(1 for i, (_, p, _) in enumerate(r) if p and i not in matched_r)
        fp += sum(1 for j, (_, p, _) in enumerate(h) if p and j not in matched_h)
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return {"punctuation_f1": f1, "case_accuracy": case_ok / shared if shared else None}


def translation_scores(refs: list[str], hyps: list[str | None]) -> dict:
    """Corpus BLEU and chrF (0-100) of translations against one reference each, sacrebleu's
    defaults on the written form (no normalisation: case and punctuation count). Signatures
    (sacrebleu 2.x): BLEU ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp``, chrF
    ``nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no`` (chrF2, not chrF++); both come back
    under ``signature`` with the version. A missing (None) or empty hypothesis scores as
    an empty string; an empty set has no score (None)."""
    import sacrebleu

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return {"bleu": None, "chrf": None, "n": 0, "signature": None}
    hyps = [" ".join((h or "").split()) for h in hyps]
    refs = [" ".join((r or "").split()) for r in refs]
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {"bleu": b.score, "chrf": c.score, "n": len(refs),
            "signature": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}}


# ------------------------------------------------------------------- verification

def _roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, fnr, thresholds) at every distinct score; thresholds[0] is +inf (reject all)."""
    labels = np.asarray(labels).astype(int)
    if not (labels == 1).any() or not (labels == 0).any():
        raise ValueError("need both target (1) and non-target (0) trials")
    # Keep every point: dropping collinear ones would move the interpolated EER threshold.
    fpr, tpr, thresholds = roc_curve(labels, np.asarray(scores, dtype=float),
                                     drop_intermediate=False)
    return fpr, 1.0 - tpr, thresholds


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and the score threshold where it occurs (accept if score >= threshold).

    The crossing of FPR and FNR is linearly interpolated between the two ROC points around it.
    """
    fpr, fnr, thresholds = _roc(scores, labels)
    gap = fnr - fpr  # starts at 1 (reject all), falls monotonically to -1 (accept all)
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])  # fraction of the way from point i-1 to point i
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    if np.isinf(thresholds[i - 1]):  # cannot interpolate towards "reject all"
        return float(rate), float(thresholds[i])
    return float(rate), float(thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1]))


def min_dcf(scores, labels, p_target: float = P_TARGET_DEFAULT,
            c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, float]:
    """Minimum normalised detection cost and its threshold (+inf means "reject every trial").

    Cdet = c_miss*Pmiss*p_target + c_fa*Pfa*(1-p_target), divided by
    min(c_miss*p_target, c_fa*(1-p_target)) so that a system that always answers the same
    way scores 1.0.
    """
    fpr, fnr, thresholds = _roc(scores, labels)
    cost = c_miss * fnr * p_target + c_fa * fpr * (1.0 - p_target)
    cost /= min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(cost))
    return float(cost[i]), float(thresholds[i])


def det_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, fnr) at every distinct threshold, fpr rising and fnr falling, for plotting."""
    fpr, fnr, _ = _roc(scores, labels)
    return fpr, fnr


def plot_det(curves: dict[str, tuple], path: str | Path) -> Path:
    """Write a PNG of DET curves, one per name -> (scores, labels), on normal-deviate axes."""
    # Figure + Agg canvas directly: no pyplot, so no global backend is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (scores, labels) in curves.items():
        fpr, fnr = det_curve(scores, labels)
        rate, _ = eer(scores, labels)
        ax.plot(norm.ppf(np.clip(fpr, DET_CLIP, 1 - DET_CLIP)),
                norm.ppf(np.clip(fnr, DET_CLIP, 1 - DET_CLIP)),
                label=f"{name} (EER {100 * rate:.2f}%)")
    ticks = norm.ppf(DET_TICKS)
    tick_labels = [f"{100 * p:g}" for p in DET_TICKS]
    limits = norm.ppf(DET_LIMITS)
    for axis_ticks, axis_labels, axis_lim in ((ax.set_xticks, ax.set_xticklabels, ax.set_xlim),
                                              (ax.set_yticks, ax.set_yticklabels, ax.set_ylim)):
        axis_ticks(ticks)
        axis_labels(tick_labels)
        axis_lim(*limits)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


# ------------------------------------------------------------ VAD / classification

def segments_to_frames(segments: list[tuple[float, float]], duration: float,
                       frame_shift: float = DEFAULT_FRAME_SHIFT_S) -> np.ndarray:
    """Boolean speech mask: frame i is speech when its centre (i+0.5)*frame_shift is in a segment.

    Centres sit half a frame away from every multiple of the shift, so float error in
    boundaries like 0.3 s cannot flip a frame.
    """
    n_frames = max(0, math.ceil(duration / frame_shift - 0.5))
    frames = np.zeros(n_frames, dtype=bool)
    for start, end in segments:
        first = max(0, math.ceil(start / frame_shift - 0.5))
        stop = min(n_frames, math.ceil(end / frame_shift - 0.5))  # exclusive
        frames[first:stop] = True
    return frames


def frame_f1(ref: np.ndarray, hyp: np.ndarray) -> dict:
    """Precision, recall and F1 of speech frames (True = speech).

    Where a denominator is zero the value is 0.0, except that with no speech on either side
    all three are 1.0 (nothing to find, nothing wrongly found).
    """
    ref = np.asarray(ref, dtype=bool)
    hyp = np.asarray(hyp, dtype=bool)
    if ref.shape != hyp.shape:
        raise ValueError(f"reference has {ref.shape} frames, hypothesis {hyp.shape}")
    if not ref.any() and not hyp.any():
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    true_pos = int(np.sum(ref & hyp))
    precision = true_pos / int(hyp.sum()) if hyp.any() else 0.0
    recall = true_pos / int(ref.sum()) if ref.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def accuracy(refs, hyps) -> float:
    """Fraction of items where the hypothesis equals the reference."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("accuracy of an empty set is undefined")
    return sum(r == h for r, h in zip(refs, hyps)) / len(refs)


def slot_f1(refs: list[dict[str, str]], hyps: list[dict[str, str]]) -> float | None:
    """Micro F1 of (slot, value) pairs over a set, values matched exactly (whitespace
    collapsed); None when neither side has a slot."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = lambda slots: {(k, " ".join(str(v).split())) for k, v in (slots or {}).items()}  # noqa: E731
    hits = sum(len(pairs(r) & pairs(h)) for r, h in zip(refs, hyps))
    total = sum(len(pairs(r)) + len(pairs(h)) for r, h in zip(refs, hyps))
    return 2 * hits / total if total else None


# ------------------------------------------------------------------- diarization

def der(ref: list[tuple[float, float, str]], hyp: list[tuple[float, float, str]],
        collar: float = DER_COLLAR_S) -> dict:
    """Diarization error rate of (start, end, speaker) turns, via pyannote.metrics.

    +-collar seconds around every reference boundary are not scored; overlapping speech is
    scored (each simultaneous speaker counts); hypothesis speakers are mapped one-to-one onto
    reference speakers to maximise overlap (Hungarian). The scored region is the span from the
    earliest to the latest turn of either side. All values are fractions of the scored
    reference speech time (`ref_speech`, seconds): der = miss + false_alarm + confusion.
    """
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns) -> Annotation:
        ann = Annotation()
        for track, (start, end, speaker) in enumerate(turns):
            if end > start:
                ann[Segment(start, end), track] = speaker  # own track: same-speaker overlaps
        return ann

    reference, hypothesis = annotation(ref), annotation(hyp)
    extent = reference.get_timeline().extent() | hypothesis.get_timeline().extent()
    if not extent:
        return {"der": 0.0, "miss": 0.0, "false_alarm": 0.0, "confusion": 0.0, "ref_speech": 0.0}
    # pyannote's collar is the full width centred on the boundary, hence 2 * collar.
    metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)
    detail = metric(reference, hypothesis, uem=Timeline([extent]), detailed=True)
    total = detail["total"]
    parts = {"miss": detail["missed detection"], "false_alarm": detail["false alarm"],
             "confusion": detail["confusion"]}
    rates = {key: _rate(value, total) for key, value in parts.items()}
    return {"der": _rate(sum(parts.values()), total), **rates, "ref_speech": total}


def cp_wer(ref_by_speaker: dict[str, str], hyp_by_speaker: dict[str, str]) -> float:
    """Concatenated minimum-permutation WER (CHiME-6 cpWER).

    Each value is one speaker's words concatenated in time order. Hypothesis speakers are
    assigned one-to-one to reference speakers minimising total word errors (Hungarian); an
    unmatched reference speaker counts as all deletions, an unmatched hypothesis speaker as
    all insertions. Text is normalised with Whisper's normaliser (`scoring_form`).
    """
    refs = [scoring_form(t) for t in ref_by_speaker.values()]
    hyps = [scoring_form(t) for t in hyp_by_speaker.values()]
    ref_lengths = [len(r.split()) for r in refs]
    hyp_lengths = [len(h.split()) for h in hyps]
    # Square cost matrix: real pairs, then dummy partners that cost a whole side of words.
    size = len(refs) + len(hyps)
    cost = np.zeros((size, size))
    for i, ref_text in enumerate(refs):
        for j, hyp_text in enumerate(hyps):
            cost[i, j] = _word_errors(ref_text, hyp_text)
        cost[i, len(hyps):] = ref_lengths[i]  # left unmatched: every word deleted
    for j in range(len(hyps)):
        cost[len(refs):, j] = hyp_lengths[j]  # left unmatched: every word inserted
    rows, cols = linear_sum_assignment(cost)
    return _rate(int(cost[rows, cols].sum()), sum(ref_lengths))


def _word_errors(ref_text: str, hyp_text: str) -> int:
    out = jiwer.process_words(ref_text, hyp_text)
    return out.substitutions + out.deletions + out.insertions
