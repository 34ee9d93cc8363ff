"""Metrics on small cases whose expected values are worked out by hand in each test."""

import math

import numpy as np
import pytest

from polyhead.metrics import (
    accuracy,
    cp_wer,
    der,
    det_curve,
    eer,
    error_rates,
    frame_f1,
    min_dcf,
    normalize_text,
    plot_det,
    segments_to_frames,
)


# ----------------------------------------------------------------------------- text

def test_normalize_text_matches_librispeech_style():
    text = "  Hello, World!  It's 'quoted' rock-n-roll. DON\u2019T_stop "
    assert normalize_text(text) == "hello world it's quoted rock n roll don't stop"


def test_error_rates_normalise_both_sides_and_pool_counts():
    refs = ["HELLO WORLD", "THE CAT SAT"]
    hyps = ["Hello, world!", "a cat sat down"]
    out = error_rates(refs, hyps)
    # Words: "the"->"a" (1 S), "down" (1 I), over 2 + 3 = 5 reference words.
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 0, 1)
    assert out["ref_words"] == 5
    assert out["wer"] == pytest.approx(2 / 5)
    # Characters (spaces count): "hello world" exact; "the"->"a" is 1 S + 2 D,
    # " down" is 5 I; 11 + 11 = 22 reference characters.
    assert out["ref_chars"] == 22
    assert out["cer"] == pytest.approx(8 / 22)


def test_cer_single_substitution():
    assert error_rates(["abc"], ["abd"])["cer"] == pytest.approx(1 / 3)


def test_error_rates_with_empty_references():
    # An empty reference contributes its hypothesis words as insertions.
    out = error_rates(["", "a b"], ["x", "a b"])
    assert out["insertions"] == 1 and out["ref_words"] == 2
    assert out["wer"] == pytest.approx(0.5)
    assert error_rates([""], [""])["wer"] == 0.0
    assert error_rates([""], ["..."])["wer"] == 0.0  # punctuation only normalises to nothing
    assert math.isinf(error_rates([""], ["x"])["wer"])
    assert error_rates([], [])["wer"] == 0.0


# ------------------------------------------------------------------- verification

def test_eer_perfectly_separable_is_zero():
    rate, threshold = eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])
    assert rate == 0.0
    assert threshold == pytest.approx(0.8)


def test_eer_interpolates_between_roc_points():
    # Descending: .9 T, .7 N, .6 T, .4 T, .2 N (3 targets, 2 non-targets).
    # Accept >= .7: FPR 1/2, FNR 2/3; accept >= .6: FPR 1/2, FNR 1/3.
    # FNR - FPR goes +1/6 -> -1/6, crossing half-way: EER 1/2 at threshold .65.
    rate, threshold = eer([0.9, 0.6, 0.4, 0.7, 0.2], [1, 1, 1, 0, 0])
    assert rate == pytest.approx(0.5)
    assert threshold == pytest.approx(0.65)


def test_min_dcf_for_both_target_priors():
    # One target at .8; 40 non-targets, one of them above it at .9.
    scores = [0.8, 0.9, *np.linspace(0.0, 0.5, 39)]
    labels = [1] + [0] * 40
    # Best operating points: reject all (Pmiss 1, Pfa 0) or accept >= .8 (Pmiss 0, Pfa 1/40).
    # p=0.05: accept >= .8 costs (1/40 * 0.95) / 0.05 = 0.475 < 1 (reject all).
    cost, threshold = min_dcf(scores, labels, p_target=0.05)
    assert cost == pytest.approx((1 / 40 * 0.95) / 0.05)
    assert threshold == pytest.approx(0.8)
    # p=0.01: accept >= .8 costs (1/40 * 0.99) / 0.01 = 2.475 > 1, so rejecting all wins.
    cost, threshold = min_dcf(scores, labels, p_target=0.01)
    assert cost == pytest.approx(1.0)
    assert math.isinf(threshold)


def test_verification_needs_both_classes():
    with pytest.raises(ValueError):
        eer([0.1, 0.2], [1, 1])


def test_det_curve_shapes_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(50), np.zeros(50)]
    scores = rng.normal(labels, 1.0)
    fpr, fnr = det_curve(scores, labels)
    assert fpr.shape == fnr.shape and fpr.ndim == 1
    assert fpr[0] == 0.0 and fpr[-1] == 1.0 and fnr[0] == 1.0 and fnr[-1] == 0.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(fnr) <= 0)
    path = plot_det({"raw": (scores, labels), "shifted": (scores + labels, labels)},
                    tmp_path / "det.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------ VAD / classification

def test_segments_to_frames_uses_frame_centres():
    frames = segments_to_frames([(0.3, 0.5)], duration=1.0)
    assert frames.shape == (100,) and frames.dtype == bool
    assert np.flatnonzero(frames).tolist() == list(range(30, 50))


def test_frame_f1():
    ref = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    hyp = np.array([0, 1, 1, 0, 1, 0], dtype=bool)
    out = frame_f1(ref, hyp)  # TP 2, FP 1, FN 2
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(1 / 2)
    assert out["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    silent = np.zeros(4, dtype=bool)
    assert frame_f1(silent, silent)["f1"] == 1.0


def test_accuracy():
    assert accuracy(["en", "de", "fr", "en"], ["en", "de", "en", "en"]) == pytest.approx(0.75)


# ------------------------------------------------------------------- diarization

# A speaks 0-4, B 3-8 (1 s overlap). Hypothesis: X 0-4.5, Y 5-8, Z 9-10 (Z has no reference).
DER_REF = [(0.0, 4.0, "A"), (3.0, 8.0, "B")]
DER_HYP = [(0.0, 4.5, "X"), (5.0, 8.0, "Y"), (9.0, 10.0, "Z")]


def test_der_without_collar():
    # Mapping X->A, Y->B. Reference speech 4 + 5 = 9 s.
    # Miss: B in 3-4 (X covers only one of two speakers) 1 s + 4.5-5 0.5 s = 1.5 s.
    # Confusion: 4-4.5, B labelled X (= A) 0.5 s. False alarm: Z 1 s.
    out = der(DER_REF, DER_HYP, collar=0.0)
    assert out["miss"] == pytest.approx(1.5 / 9)
    assert out["confusion"] == pytest.approx(0.5 / 9)
    assert out["false_alarm"] == pytest.approx(1.0 / 9)
    assert out["der"] == pytest.approx(3.0 / 9)


def test_der_with_collar():
    # +-0.25 s around 0, 3, 4, 8 are not scored. Scored reference speech:
    # A 0.25-2.75 + 3.25-3.75 = 3 s; B 3.25-3.75 + 4.25-7.75 = 4 s; 7 s in all.
    # Miss: B in 3.25-3.75 0.5 s + 4.5-5 0.5 s = 1 s. Confusion 4.25-4.5 = 0.25 s. FA: Z 1 s.
    out = der(DER_REF, DER_HYP)  # default collar 0.25
    assert out["ref_speech"] == pytest.approx(7.0)
    assert out["miss"] == pytest.approx(1.0 / 7)
    assert out["confusion"] == pytest.approx(0.25 / 7)
    assert out["false_alarm"] == pytest.approx(1.0 / 7)
    assert out["der"] == pytest.approx(2.25 / 7)


def test_der_ignores_speaker_names():
    perfect = [(s, e, f"spk{i}") for i, (s, e, _) in enumerate(DER_REF)]
    assert der(DER_REF, perfect)["der"] == 0.0


def test_cp_wer_with_swapped_labels_is_zero():
    ref = {"A": "Hello there.", "B": "General Kenobi!"}
    hyp = {"spk1": "general kenobi", "spk0": "hello there"}
    assert cp_wer(ref, hyp) == 0.0


def test_cp_wer_unmatched_speakers():
    ref = {"A": "hello there", "B": "general kenobi"}
    # An extra hypothesis speaker: its 2 words are insertions, over 4 reference words.
    assert cp_wer(ref, {"x": "general kenobi", "y": "hello there", "z": "noise words"}) == 0.5
    # A missing hypothesis speaker: the other speaker's 2 words are deletions.
    assert cp_wer(ref, {"x": "hello there"}) == 0.5
