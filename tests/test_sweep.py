"""Sweeps: diverged runs (training stopped on divergence, or every dev metric at chance level)
are marked as diverged and never selected, whatever their criterion says."""

from __future__ import annotations

import json

import pytest
import yaml

from polyhead.sweep import is_diverged, run_sweep


def tiny_base(tmp_path, corpus, steps: int):
    """A one-layer speech-only base config on the tiny corpus, evaluated every 2 steps."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(dict(
        corpus=str(corpus),
        encoder=dict(name="conformer", dim=32, layers=1, heads=2, ff_mult=2),
        tasks=dict(asr=dict(head=dict(type="ctc"), target="text", train_sets=["speech_train"])),
        train=dict(steps=steps, eval_every=2, max_duration=8.0, time_budget_s=None))))
    return base


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
    base = tiny_base(tmp_path, tiny_corpus[0], steps=4)
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


def test_two_sweep_processes_share_the_runs(tiny_corpus, tmp_path):
    """Each run is locked while one process trains it: a second process skips it, trains the
    others, and at the end waits for it and reads its result instead of training it again."""
    import fcntl
    import threading
    import time

    base = tiny_base(tmp_path, tiny_corpus[0], steps=2)
    spec = tmp_path / "grid.sweep.yaml"
    spec.write_text(yaml.safe_dump(dict(base=str(base), grid={"train.lr": [1.0e-3, 2.0e-3]})))
    out = tmp_path / "sweep"
    out.mkdir()
    theirs = "base__lr=0.002"
    with open(out / f".{theirs}.lock", "a") as other:  # "the other process" holds this run
        fcntl.flock(other, fcntl.LOCK_EX)
        result = {}
        worker = threading.Thread(target=lambda: result.update(run_sweep(spec, out)))
        worker.start()
        mine = out / "base__lr=0.001" / "train_summary.json"
        deadline = time.monotonic() + 120
        while not mine.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mine.is_file()
        time.sleep(1.0)
        assert worker.is_alive()  # waiting for the run it does not own
        (out / theirs).mkdir()
        history = [{"step": 2, "criterion": 0.5, "dev": {"d": {"asr": {"wer": 0.9}}}}]
        (out / theirs / "train_summary.json").write_text(json.dumps({"stopped": "steps", "history": history}))
        fcntl.flock(other, fcntl.LOCK_UN)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert list(result["runs"]) == ["base__lr=0.001", theirs]  # spec order, whoever ran them
    assert result["runs"][theirs]["criterion"] == 0.5
    assert not (out / theirs / "last").exists()  # never trained here
    assert (out / "base__lr=0.001" / "last").is_dir()


def test_single_task_baselines_are_not_picked_over_shared_models(tmp_path):
    """A speech-only run's criterion is 1/4 WER with no EER term: never comparable with a shared
    model's 1/4 WER + 3/4 EER, so the sweep picks among the runs that measure both."""
    spec = tmp_path / "t.sweep.yaml"
    spec.write_text(yaml.safe_dump(dict(base="unused", variants=dict(stl=[], mtl=[]))))
    out = tmp_path / "sweep"
    for name, criterion, dev in (("stl", 0.2, {"d": {"asr": {"wer": 0.8}}}),
                                 ("mtl", 0.45, {"d": {"asr": {"wer": 0.9}}, "s": {"spk": {"eer": 0.3}}})):
        (out / name).mkdir(parents=True)
        history = [{"step": 2, "criterion": criterion, "dev": dev}]
        (out / name / "train_summary.json").write_text(json.dumps({"stopped": "steps", "history": history}))
    assert run_sweep(spec, out)["best"] == "mtl"


def test_only_trains_the_named_runs(tiny_corpus, tmp_path):
    base = tiny_base(tmp_path, tiny_corpus[0], steps=2)
    spec = tmp_path / "two.sweep.yaml"
    spec.write_text(yaml.safe_dump(dict(base=str(base), variants=dict(a=[], b=["train.lr=2.0e-3"]))))
    out = tmp_path / "sweep"
    assert list(run_sweep(spec, out, only=["b"])["runs"]) == ["b"]
    assert (out / "b" / "train_summary.json").is_file() and not (out / "a").exists()
    with pytest.raises(ValueError, match="no run named c"):
        run_sweep(spec, out, only=["c"])
