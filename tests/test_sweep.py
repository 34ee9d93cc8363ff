"""Sweeps: diverged runs (training stopped on divergence, or every dev metric at chance level)
are marked as diverged and never selected, whatever their criterion says."""

from __future__ import annotations

import json

import pytest
import yaml

from polyhead.sweep import is_diverged, run_sweep


@pytest.mark.parametrize("summary,dev,diverged", [
    ({"stopped": "diverged"}, {}, True),
    ({"stopped": "steps"}, {"dev": {"asr": {"wer": 1.0, "cer": 0.9}, "spk": {"eer": 0.5}}}, True),
    ({"stopped": "steps"}, {"dev": {"asr": {"wer": 1.02}}}, True),  # speech only: WER over 100%
    ({"stopped": "steps"}, {"dev": {"spk": {"eer": 0.49}}}, True),  # speaker only: chance EER
    ({"stopped": "steps"}, {"dev": {"asr": {"wer": float("nan")}, "spk": {"eer": 0.1}}}, True),
    ({"stopped": "steps"}, {"dev": {"asr": {"wer": 1.0}, "spk": {"eer": 0.2}}}, False),  # speaker learnt
    ({"stopped": "steps"}, {"dev": {"asr": {"wer": 0.4}, "spk": {"eer": 0.5}}}, False),  # speech learnt
    ({"stopped": "early stop"}, {"dev": {"asr": {"wer": 0.3}, "spk": {"eer": 0.1}}}, False),
    ({"stopped": "steps"}, {}, False),  # nothing measured: nothing to call diverged
])
def test_is_diverged(summary, dev, diverged):
    assert is_diverged(summary, dev) is diverged


def test_sweep_marks_diverged_runs_instead_of_comparing_them(tiny_corpus, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(dict(
        corpus=str(tiny_corpus[0]),
        encoder=dict(name="conformer", dim=32, layers=1, heads=2, ff_mult=2),
        tasks=dict(asr=dict(head=dict(type="ctc"), target="text", train_sets=["speech_train"])),
        train=dict(steps=4, eval_every=2, max_duration=8.0, time_budget_s=None))))
    spec = tmp_path / "grid.sweep.yaml"
    spec.write_text(yaml.safe_dump(dict(base=str(base), variants=dict(
        ok=[], too_hot=["train.lr=1.0e+30", "train.max_bad_steps=1"], at_chance=[], nan=[]))))
    out = tmp_path / "sweep"
    # Two runs finished earlier (a sweep resumes): criteria better than any real run's, but
    # one sits at chance level on every metric and the other never had a finite criterion.
    for name, history in (("at_chance", [{"step": 4, "criterion": -100.0,
                                          "dev": {"d": {"asr": {"wer": 1.0}, "spk": {"eer": 0.5}}}}]),
                          ("nan", [{"step": 4, "criterion": float("nan"), "dev": {}}])):
        (out / name).mkdir(parents=True)
        (out / name / "train_summary.json").write_text(json.dumps({"stopped": "steps", "history": history}))

    result = run_sweep(spec, out)
    runs = result["runs"]
    assert {k: v["diverged"] for k, v in runs.items()} == {
        "ok": False, "too_hot": True, "at_chance": True, "nan": True}
    assert result["best"] == "ok"
    assert "lower train.lr" in runs["too_hot"]["error"]
    assert json.loads((out / "too_hot" / "train_summary.json").read_text())["stopped"] == "diverged"
    assert json.loads((out / "sweep.json").read_text())["best"] == "ok"
    # a resumed sweep reads the diverged run's summary and still marks it
    assert run_sweep(spec, out)["runs"]["too_hot"]["diverged"]
