"""AS-norm (inference/snorm.py) on synthetic embeddings: what it cancels exactly, what it only
reduces, its agreement with the formula written out, and its cohort file."""

from __future__ import annotations

import numpy as np
import pytest

from polyhead import metrics
from polyhead.runs import COHORT_FILE
from polyhead.scoring import ScoreNorm, as_norm_scores, false_accept_rate, speaker_means, top_k_stats, unit_rows

DIM = 32


def _speakers(rng, n: int, hub: np.ndarray, beta: float) -> np.ndarray:
    """Unit speaker directions, orthogonal to ``hub``, leaning ``beta`` towards it (real
    embeddings share a mean direction)."""
    v = rng.standard_normal((n, DIM))
    v -= np.outer(v @ hub, hub)
    return np.sqrt(1 - beta ** 2) * unit_rows(v) + beta * hub


def _utterances(rng, speakers: np.ndarray, per: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """``per`` noisy unit embeddings of each speaker, and their speaker index."""
    who = np.repeat(np.arange(len(speakers)), per)
    return unit_rows(speakers[who] + noise * rng.standard_normal((len(who), DIM)) / np.sqrt(DIM)), who


def _all_pairs(enrol_who, test_who):
    i, j = np.meshgrid(np.arange(len(enrol_who)), np.arange(len(test_who)), indexing="ij")
    i, j = i.ravel(), j.ravel()
    return i, j, (enrol_who[i] == test_who[j]).astype(int)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    hub = np.zeros(DIM)
    hub[0] = 1.0
    cohort = unit_rows(_speakers(rng, 200, hub, 0.6))
    spk = _speakers(rng, 30, hub, 0.6)
    enrol, ew = _utterances(rng, spk, 3, 1.0)  # raw EER about 14%
    test, tw = _utterances(rng, spk, 3, 1.0)
    return rng, hub, cohort, enrol, ew, test, tw


def test_matches_the_formula_written_out(world):
    rng, _, cohort, enrol, _, test, _ = world
    norm = ScoreNorm(cohort, top_k=20)
    raw, normed = norm.pair_scores(enrol[:5], test[:5])
    for k in range(5):
        s = float(enrol[k] @ test[k])
        ce, ct = np.sort(cohort @ enrol[k])[::-1][:20], np.sort(cohort @ test[k])[::-1][:20]
        expect = 0.5 * ((s - ce.mean()) / ce.std() + (s - ct.mean()) / ct.std())
        assert raw[k] == pytest.approx(s) and normed[k] == pytest.approx(expect)
    assert norm.score(enrol[0], test[0]) == pytest.approx((raw[0], normed[0]))
    # top_k beyond the cohort uses all of it; a constant row does not divide by zero
    mu, sd = top_k_stats(np.ones((2, 4)), 10)
    assert np.allclose(mu, 1.0) and np.all(sd > 0)


def test_a_shift_of_every_score_is_cancelled_exactly(world):
    """A channel that moves every score up, the cohort's included (here: each embedding,
    cohort and trials alike, gets the same extra component: s -> (s + c^2) / (1 + c^2)):
    raw scores rise and the dev threshold accepts impostors; s-normed scores do not move,
    so the same threshold gives the same decisions."""
    _, _, cohort, enrol, ew, test, tw = world
    i, j, labels = _all_pairs(ew, tw)
    norm = ScoreNorm(cohort, top_k=20)
    raw, normed = norm.pair_scores(enrol[i], test[j])
    _, thr_raw = metrics.eer(raw, labels)
    _, thr_norm = metrics.eer(normed, labels)

    def shifted(x):
        return unit_rows(np.hstack([x, np.full((len(x), 1), 1.2)]))

    norm2 = ScoreNorm(shifted(cohort), top_k=20)
    raw2, normed2 = norm2.pair_scores(shifted(enrol)[i], shifted(test)[j])
    assert raw2.min() > raw.min() + 0.2  # every score moved up
    assert false_accept_rate(raw2, labels, thr_raw) > 0.9 > 0.2 > false_accept_rate(raw, labels, thr_raw)
    assert np.allclose(normed2, normed, atol=1e-9)
    assert np.array_equal(normed2 >= thr_norm, normed >= thr_norm)
    # the score-level statement: any a*s + b (a > 0) on the trial and both cohort rows
    s, ce, ct = 0.3, cohort @ enrol[0], cohort @ test[0]
    base = as_norm_scores([s], ce, ct, top_k=20)
    assert as_norm_scores([2.5 * s + 0.4], 2.5 * ce + 0.4, 2.5 * ct + 0.4, top_k=20) == pytest.approx(base)


def test_a_shift_of_the_test_side_is_reduced(world):
    """A new channel on the test side only (its embeddings lean further towards the shared
    direction; enrolment and cohort as before): raw scores of every trial rise and the dev
    threshold accepts far more impostors; at the s-norm dev threshold far fewer, and the
    EER is no worse. Reduced, not removed: the enrolment side's statistics do not see the
    channel."""
    _, hub, cohort, enrol, ew, test, tw = world
    i, j, labels = _all_pairs(ew, tw)
    norm = ScoreNorm(cohort, top_k=20)
    raw, normed = norm.pair_scores(enrol[i], test[j])
    _, thr_raw = metrics.eer(raw, labels)
    _, thr_norm = metrics.eer(normed, labels)
    far_raw_dev, far_norm_dev = false_accept_rate(raw, labels, thr_raw), false_accept_rate(normed, labels, thr_norm)

    moved = unit_rows(test + 0.5 * hub)
    raw2, normed2 = norm.pair_scores(enrol[i], moved[j])
    far_raw, far_norm = false_accept_rate(raw2, labels, thr_raw), false_accept_rate(normed2, labels, thr_norm)
    assert far_raw > 0.3 and far_raw > 2 * far_raw_dev  # one raw threshold no longer means the same
    assert far_norm < far_raw / 2 and far_norm - far_norm_dev < (far_raw - far_raw_dev) / 2
    assert metrics.eer(normed2, labels)[0] <= metrics.eer(raw2, labels)[0] + 0.01


def test_trial_scores_over_ids_and_speaker_means():
    from polyhead.data.corpus import Trial

    rng = np.random.default_rng(1)
    emb = {f"u{k}": rng.standard_normal(DIM) for k in range(6)}
    names, cohort = speaker_means(emb, {f"u{k}": f"s{k % 3}" for k in range(6)})
    assert names == ["s0", "s1", "s2"] and cohort.shape == (3, DIM)
    assert np.allclose(cohort[0], unit_rows(unit_rows(emb["u0"]) + unit_rows(emb["u3"]))[0], atol=1e-6)
    norm = ScoreNorm(cohort, top_k=2)
    trials = [Trial(True, "u0", "u1"), Trial(False, "u2", "u5")]
    raw, normed = norm.trial_scores(emb, trials)
    r2, n2 = norm.pair_scores(np.stack([emb["u0"], emb["u2"]]), np.stack([emb["u1"], emb["u5"]]))
    assert np.allclose(raw, r2) and np.allclose(normed, n2)
    with pytest.raises(ValueError, match="at least 2"):
        ScoreNorm(cohort[:1])


def test_cohort_file_round_trip(tmp_path, world):
    _, _, cohort, *_ = world
    norm = ScoreNorm(cohort, top_k=7, threshold=1.25, speakers=tuple(f"s{k}" for k in range(len(cohort))))
    assert norm.save(tmp_path).name == COHORT_FILE
    assert ScoreNorm.load(tmp_path, {}) is None  # no calibrated threshold: not used
    back = ScoreNorm.load(tmp_path, {"verify_threshold_snorm": 1.25})
    assert back.top_k == 7 and back.threshold == 1.25 and back.speakers == norm.speakers
    assert np.allclose(back.cohort, cohort, atol=1e-6)
    assert ScoreNorm.load(tmp_path / "nowhere", {"verify_threshold_snorm": 1.0}) is None


def test_evaluate_calibrates_a_cohort_and_inference_uses_it(tiny_run, tmp_path):
    """`polyhead evaluate` (the tiny_run fixture) saves the training speakers' cohort beside
    calibration.json with the s-norm threshold; loading the run picks both up; `verify` and
    `identify` report the raw and the normalised score and decide on the normalised one;
    the test sets report s-normed EERs and false accepts at the calibrated thresholds."""
    import json

    from polyhead.cli import main
    from polyhead.data.corpus import label, load_set
    from polyhead.inference import load, speaker
    from polyhead.inference.registry import SpeakerRegistry

    folder, run = tiny_run
    cal = json.loads((run / "calibration.json").read_text())
    train_speakers = {label(c, "speaker") for c in load_set(folder, "speaker_train")}
    assert cal["cohort"] == COHORT_FILE and (run / COHORT_FILE).is_file()
    assert cal["cohort_set"] == "speaker_train" and cal["cohort_speakers"] == len(train_speakers)
    model = load(run)
    assert model.snorm is not None and model.snorm.threshold == pytest.approx(cal["verify_threshold_snorm"])
    assert set(model.snorm.speakers) == train_speakers
    wavs = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))
    res = speaker.verify(model, wavs[0], wavs[1])
    assert res["decided_on"] == "snorm" and {"score", "score_snorm", "threshold", "threshold_snorm"} <= set(res)
    e0, e1 = speaker.embed(model, wavs[0]), speaker.embed(model, wavs[1])
    assert res["score_snorm"] == pytest.approx(model.snorm.score(e0, e1)[1], abs=1e-4)
    assert res["same_speaker"] is (res["score_snorm"] >= model.snorm.threshold)
    assert model.verify(wavs[0], wavs[1]) == res  # the Python API answers the same
    registry = SpeakerRegistry(tmp_path / "reg.sqlite")
    registry.enroll("a", [e0])
    registry.enroll("b", [e1])
    found = speaker.identify(model, registry, e0, top_k=2)
    assert found["decided_on"] == "snorm" and len(found["candidates"]) == 2
    assert found["score_snorm"] == max(c["score_snorm"] for c in found["candidates"])
    assert found["speaker"] == (found["candidates"][0]["speaker"] if found["score_snorm"] >= model.snorm.threshold
                                else "unknown")
    assert main(["identify", str(wavs[0]), "--model", str(run), "--registry", str(tmp_path / "reg.sqlite")]) == 0
    model.snorm = None  # no cohort: raw scores at the raw threshold, as before
    raw = speaker.verify(model, wavs[0], wavs[1])
    assert raw["decided_on"] == "raw" and "score_snorm" not in raw
    assert raw["same_speaker"] is (raw["score"] >= model.threshold)
    assert speaker.identify(model, registry, e0)["decided_on"] == "raw"
    scored = json.loads((run / "metrics.json").read_text())["results"]["speaker_test"]["speaker"]
    assert {"eer_snorm", "far", "far_snorm"} <= set(scored)


def test_a_channel_cohort_from_recordings_replaces_the_runs(tiny_run, tmp_path, capsys):
    """`polyhead cohort` embeds recordings of other people (one entry each) into a cohort
    folder; `verify --cohort` normalises against it at the run's AS-norm threshold; too few
    recordings, or a run never calibrated, are refused by name."""
    import json

    from polyhead.cli import main
    from polyhead.inference import load, speaker

    folder, run = tiny_run
    others = sorted((folder / "audio" / "speaker_train").rglob("*.wav"))
    assert len(others) >= speaker.MIN_COHORT
    out = tmp_path / "channel"
    assert main(["cohort", str(folder / "audio" / "speaker_train"), "--model", str(run), "--out", str(out)]) == 0
    made = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert made["recordings"] == len(others) and (out / COHORT_FILE).is_file()
    model = load(run)
    threshold = model.snorm.threshold
    speaker.use_cohort(model, out)
    assert len(model.snorm.cohort) == len(others) and model.snorm.threshold == threshold
    assert model.snorm.top_k == speaker.CHANNEL_COHORT_TOP_K
    wavs = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))
    assert main(["verify", str(wavs[0]), str(wavs[1]), "--model", str(run), "--cohort", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    e0, e1 = speaker.embed(model, wavs[0]), speaker.embed(model, wavs[1])
    assert res["score_snorm"] == pytest.approx(model.snorm.score(e0, e1)[1], abs=1e-4)
    with pytest.raises(ValueError, match="at least"):
        speaker.channel_cohort(model, others[:3])
    with pytest.raises(FileNotFoundError, match="no cohort file"):
        speaker.use_cohort(model, tmp_path)
    model.snorm = None
    with pytest.raises(ValueError, match="polyhead evaluate"):
        speaker.channel_cohort(model, others)
