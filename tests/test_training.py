"""Training on the tiny synthetic corpus: overfitting, exact resume, every weighting and
aggregator, non-finite steps, crash-safe checkpoints, the schedule and the data pipeline."""

from __future__ import annotations

import errno
import gzip
import json
import math
import shutil

import pytest
import torch
from lhotse import CutSet

from polyhead.config import Config
from polyhead.data.corpus import ManifestError, load_set
from polyhead.tasks.base import predict
from polyhead.tasks.speech import TextTargets, evaluate_asr
from polyhead.model import MultiTaskModel
from polyhead.objectives import AGGREGATORS, WEIGHTINGS
from polyhead.training import checkpoint as ckpt
from polyhead.data.batching import BatchStream, Collator, FeatureCache, padding_fraction, temperature_weights
from polyhead.training.cuts import build_vocab, training_cuts
from polyhead.training.schedule import tri_stage
from polyhead.training.trainer import Trainer, TrainingDiverged

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")


@pytest.fixture(scope="module")
def corpus(tiny_corpus, tmp_path_factory):
    """A writable copy of the tiny corpus, plus an 8-utterance `overfit` set: two utterances
    from each of four speech_train speakers."""
    src, _ = tiny_corpus
    out = tmp_path_factory.mktemp("train_corpus") / "corpus"
    shutil.copytree(src, out)
    by_speaker: dict[str, list] = {}
    for cut in CutSet.from_file(out / "manifests" / "speech_train_cuts.jsonl.gz"):
        by_speaker.setdefault(cut.supervisions[0].speaker, []).append(cut)
    assert len(by_speaker) >= 4
    chosen = [c for spk in sorted(by_speaker)[:4] for c in by_speaker[spk][:2]]
    CutSet.from_cuts(chosen).to_file(out / "manifests" / "overfit_cuts.jsonl.gz")
    return out


TASKS = {
    "asr": dict(head=dict(type="ctc"), target="text", train_sets=["speech_train"]),
    "speaker": dict(head=dict(type="speaker", options=dict(pooling="mean", emb_dim=16)),
                    target="speaker", train_sets=["speaker_train"], crop=1.0),
    "lid": dict(head=dict(type="classifier", options=dict(hidden=16)), target="language",
                train_sets=["speaker_train"], crop=1.0),
}


def small_config(corpus, tasks=("asr", "speaker"), weighting="static", aggregator="sum",
                 dropout=0.1, weighting_options=None, **train) -> Config:
    """A tiny conformer: every step costs a few tens of milliseconds."""
    train = dict(dict(step="disjoint", steps=100, lr=1e-3, max_duration=8.0, eval_every=10**6,
                      weighting=dict(name=weighting, options=weighting_options or {}),
                      aggregator=dict(name=aggregator)), **train)
    return Config.model_validate(dict(
        corpus=str(corpus),
        encoder=dict(name="conformer", dim=32, layers=2, heads=2, ff_mult=2, dropout=dropout),
        tasks={t: TASKS[t] for t in tasks}, train=train))


def parameters(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def losses_of(rec: dict) -> dict[str, float]:
    return {k: v for k, v in rec.items() if k.startswith("loss/")}


# --- overfitting ---------------------------------------------------------------------------------

def test_overfit_eight_utterances(corpus, tmp_path):
    """The joint step learns 8 utterances by heart: near-perfect transcripts and speakers."""
    config = Config.model_validate(dict(
        corpus=str(corpus),
        encoder=dict(name="conformer", dim=96, layers=2, heads=4, ff_mult=2, dropout=0.0),
        tasks=dict(asr=dict(head=dict(type="ctc", options=dict(dropout=0.0)), target="text",
                            train_sets=["overfit"]),
                   speaker=dict(head=dict(type="speaker", options=dict(pooling="mean", emb_dim=64)),
                                target="speaker", train_sets=["overfit"])),
        train=dict(step="joint", steps=130, lr=3e-3, schedule=(0.1, 0.6, 0.3), spec_augment=False,
                   max_duration=100.0, eval_every=10**6, seed=0)))
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert len(trainer.config.vocab["speaker"]) == 4
    recs = [trainer.train_step() for _ in range(config.train.steps)]
    assert all(r["seconds"] > 15 for r in recs)  # all 8 utterances in every batch
    assert not any(r["skipped"] for r in recs)

    model = trainer.model.eval()
    cuts = load_set(corpus, "overfit")
    asr = evaluate_asr(model, cuts, "asr")
    vocab = model.config.vocab["speaker"]
    hits = []
    for cut, out in predict(model, cuts, ["speaker"]):
        pred = model.heads["speaker"].predict({"embedding": out["speaker"]["embedding"][None]})
        hits.append(vocab[int(pred)] == cut.supervisions[0].speaker)
    assert len(hits) == 8
    assert asr["cer"] < 0.05, (asr["cer"], asr["examples"], losses_of(recs[-1]))
    assert all(hits), hits


# --- resume --------------------------------------------------------------------------------------

@pytest.mark.parametrize("tasks,weighting,aggregator", [
    (("asr", "speaker"), "dynamic", "sum"),
    # three tasks: PCGrad's projection order (random, from a call counter) then matters
    (("asr", "speaker", "lid"), "static", "pcgrad"),
    # DWA's loss windows (plain Python state) must survive the checkpoint too
    (("asr", "speaker"), "dwa", "sum"),
])
def test_resume_is_exact(corpus, tmp_path, tasks, weighting, aggregator):
    options = dict(window=1) if weighting == "dwa" else None
    config = small_config(corpus, tasks, weighting, aggregator, weighting_options=options)
    n, more = 3, 3
    straight = Trainer(config, tmp_path / "straight", progress=False)
    reference = [straight.train_step() for _ in range(n + more)]

    first = Trainer(config, tmp_path / "run", progress=False)
    for _ in range(n):
        first.train_step()
    first.save()
    assert ckpt.find_resumable(tmp_path / "run") == tmp_path / "run" / "last"

    resumed = Trainer(config, tmp_path / "run", resume=True, progress=False)
    assert resumed.step == n
    recs = [resumed.train_step() for _ in range(more)]
    for got, want in zip(recs, reference[n:]):
        assert got["step"] == want["step"]
        assert set(losses_of(got)) == {f"loss/{t}" for t in tasks}
        for k, v in losses_of(want).items():
            assert got[k] == pytest.approx(v, abs=1e-6), (got["step"], k)
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9)
        for t in tasks:
            assert got[f"weight/{t}"] == pytest.approx(want[f"weight/{t}"], abs=1e-6)
    want_params, got_params = parameters(straight.model), parameters(resumed.model)
    for name, p in want_params.items():
        torch.testing.assert_close(got_params[name], p, atol=1e-6, rtol=1e-5, msg=name)


def test_resume_without_checkpoint_starts_fresh(corpus, tmp_path, caplog):
    trainer = Trainer(small_config(corpus), tmp_path / "run", resume=True, progress=False)
    assert trainer.step == 0
    assert "nothing to resume" in caplog.text


# --- every weighting and aggregator --------------------------------------------------------------

@pytest.mark.parametrize("weighting", ["static", "dynamic", "uncertainty", "dwa", "gradnorm"])
def test_each_weighting_trains(corpus, tmp_path, weighting):
    assert weighting in WEIGHTINGS
    for rec in two_steps_change_weights(Trainer(small_config(corpus, weighting=weighting), tmp_path / "run",
                                                progress=False)):
        assert set(losses_of(rec)) == {"loss/asr", "loss/speaker"}
        assert all(math.isfinite(rec[f"weight/{t}"]) for t in ("asr", "speaker"))


def two_steps_change_weights(trainer, prefix: str = "") -> list[dict]:
    """Two finite, unskipped steps that change the model's parameters named ``prefix...``;
    returns their log records."""
    before = parameters(trainer.model)
    records = [trainer.train_step() for _ in range(2)]
    for rec in records:
        assert not rec["skipped"]
        assert all(math.isfinite(v) for v in losses_of(rec).values())
        assert math.isfinite(rec["grad_norm"])
    after = parameters(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix))
    return records


@pytest.mark.parametrize("aggregator", ["sum", "pcgrad", "cagrad", "mgda", "upgrad"])
def test_each_aggregator_trains(corpus, tmp_path, aggregator):
    assert aggregator in AGGREGATORS
    trainer = Trainer(small_config(corpus, aggregator=aggregator), tmp_path / "run", progress=False)
    # the shared encoder itself must move, not only the heads
    for rec in two_steps_change_weights(trainer, prefix="encoder."):
        if aggregator != "sum":
            assert all(math.isfinite(rec[f"agg/{t}"]) for t in ("asr", "speaker"))


# --- non-finite steps ----------------------------------------------------------------------------

@pytest.mark.parametrize("aggregator", ["sum", "upgrad"])
def test_non_finite_loss_skips_the_step(corpus, tmp_path, monkeypatch, aggregator):
    trainer = Trainer(small_config(corpus, aggregator=aggregator), tmp_path / "run", progress=False)
    assert not trainer.train_step()["skipped"]
    head = trainer.model.heads["asr"]
    real_loss = head.loss
    monkeypatch.setattr(head, "loss", lambda out, target: real_loss(out, target) * float("nan"))
    before = parameters(trainer.model)
    adam_steps = {id(p): int(s["step"]) for p, s in trainer.optimizer.state.items()}
    rec = trainer.train_step()
    assert rec["skipped"]
    assert math.isnan(rec["loss/asr"])
    assert trainer.skipped_steps == 1 and trainer.bad_steps == 1 and trainer.step == 2
    after = parameters(trainer.model)
    for name, p in before.items():
        assert torch.equal(after[name], p), name
    assert {id(p): int(s["step"]) for p, s in trainer.optimizer.state.items()} == adam_steps
    monkeypatch.setattr(head, "loss", real_loss)
    rec = trainer.train_step()
    assert not rec["skipped"] and trainer.skipped_steps == 1 and trainer.bad_steps == 0
    assert any(not torch.equal(p, before[n]) for n, p in parameters(trainer.model).items())


def _poison(monkeypatch, trainer, when=lambda step: True):
    """Make the ASR loss NaN on the steps where ``when(step)`` holds."""
    head = trainer.model.heads["asr"]
    real_loss = head.loss
    monkeypatch.setattr(head, "loss", lambda out, target: real_loss(out, target) * (
        float("nan") if when(trainer.step) else 1.0))


def test_repeated_divergence_rolls_back_with_lower_lr_then_stops(corpus, tmp_path, monkeypatch):
    trainer = Trainer(small_config(corpus, max_bad_steps=2), tmp_path / "run", progress=False)
    for _ in range(3):
        trainer.train_step()
    trainer.save()
    good, lr = parameters(trainer.model), trainer.optimizer.param_groups[0]["lr"]
    _poison(monkeypatch, trainer)
    for rollback in (1, 2, 3):
        assert "rolled_back_to" not in trainer.train_step()  # one bad step: skipped only
        rec = trainer.train_step()  # the second in a row: back to the checkpoint
        assert rec["skipped"] and rec["rolled_back_to"] == 3 and trainer.step == 3
        assert trainer.rollbacks == rollback and trainer.skipped_steps == 2 * rollback
        assert trainer.lr_scale == pytest.approx(0.5 ** rollback)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr * 0.5 ** rollback)
        for name, p in parameters(trainer.model).items():
            assert torch.equal(p, good[name]), name
    trainer.train_step()
    with pytest.raises(TrainingDiverged, match="still diverging after 3 rollbacks"):
        trainer.train_step()


def test_divergence_report_and_recovery_through_fit(corpus, tmp_path, monkeypatch):
    """fit(): a short NaN spell is survived by one rollback; lasting divergence ends the run
    with train_summary.json saying so."""
    config = small_config(corpus, steps=12, eval_every=3, max_bad_steps=2)
    trainer = Trainer(config, tmp_path / "spell", progress=False)
    _poison(monkeypatch, trainer, when=lambda step: step in (7, 8) and trainer.rollbacks == 0)
    summary = trainer.fit()
    assert summary["stopped"] == "steps" and summary["steps"] == 12
    assert summary["rollbacks"] == 1 and summary["skipped_steps"] == 2
    log = [json.loads(line) for line in (tmp_path / "spell" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["skipped"]) for r in log if r["step"] in (7, 8)] == [(7, True), (8, True)]
    assert [r["step"] for r in log if "rolled_back_to" in r] == [8]

    trainer = Trainer(config, tmp_path / "lasting", progress=False)
    _poison(monkeypatch, trainer, when=lambda step: step >= 4)
    with pytest.raises(TrainingDiverged, match="after 3 rollbacks"):
        trainer.fit()
    summary = json.loads((tmp_path / "lasting" / "train_summary.json").read_text())
    assert summary["stopped"] == "diverged" and summary["rollbacks"] == 3
    assert "lower train.lr" in summary["error"]

    trainer = Trainer(config, tmp_path / "at_once", progress=False)
    _poison(monkeypatch, trainer)
    with pytest.raises(TrainingDiverged, match="no checkpoint to roll back to"):
        trainer.fit()


# --- checkpoints ---------------------------------------------------------------------------------

def test_checkpoint_survives_disk_full(corpus, tmp_path, monkeypatch):
    config = small_config(corpus).model_copy(update={"vocab": build_vocab(small_config(corpus))})
    torch.manual_seed(0)
    model = MultiTaskModel(config)
    folder = tmp_path / "last"
    ckpt.write_checkpoint(folder, model, {"step": 1})
    first = parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ckpt.write_checkpoint(folder, model, {"step": 2})  # a second complete write replaces it
    assert ckpt.read_state(folder)["step"] == 2
    second = parameters(model)

    real_save = type(model).save

    def full_disk(self, path):
        real_save(self, path)  # files half written, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(model), "save", full_disk)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(ckpt.CheckpointError, match="disk full"):
        ckpt.write_checkpoint(folder, model, {"step": 3})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no .tmp / .old left over
    assert ckpt.find_resumable(tmp_path) == folder
    assert ckpt.read_state(folder)["step"] == 2
    loaded = MultiTaskModel.load(folder)
    for name, p in parameters(loaded).items():
        assert torch.equal(p, second[name]), name
        assert not torch.equal(p, first[name])


def test_checkpoint_other_os_error(corpus, tmp_path, monkeypatch):
    config = small_config(corpus).model_copy(update={"vocab": build_vocab(small_config(corpus))})
    model = MultiTaskModel(config)

    def denied(self, path):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(type(model), "save", denied)
    with pytest.raises(ckpt.CheckpointError, match="cannot write checkpoint"):
        ckpt.write_checkpoint(tmp_path / "last", model)
    assert not (tmp_path / "last").exists() and not (tmp_path / "last.tmp").exists()


# --- schedule ------------------------------------------------------------------------------------

def test_tri_stage_boundaries():
    # total 100, stages 10 / 40 / 50 steps, start at 1% of the peak, end at 5%
    f = lambda s: tri_stage(s, 100, (0.1, 0.4, 0.5), final_scale=0.05, initial_scale=0.01)  # noqa: E731
    assert f(0) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through warm-up: 0.505
    assert f(9) == pytest.approx(0.01 + 0.99 * 0.9)
    assert f(10) == pytest.approx(1.0)  # warm-up done
    assert f(49) == pytest.approx(1.0)
    assert f(50) == pytest.approx(1.0)  # decay starts at exp(0) = 1
    assert f(75) == pytest.approx(math.sqrt(0.05))  # half-way: 0.05 ** 0.5 = 0.2236
    assert f(100) == pytest.approx(0.05)
    assert f(150) == pytest.approx(0.05)  # past the end: stays at the final scale
    # no warm-up: the peak from step 0
    assert tri_stage(0, 100, (0.0, 0.5, 0.5)) == pytest.approx(1.0)


# --- data ----------------------------------------------------------------------------------------

def test_bucketing_keeps_padding_low(tiny_corpus):
    cuts = load_set(tiny_corpus[0], "speech_train")
    assert padding_fraction(cuts, max_duration=20.0) < 0.25


def test_temperature_weights():
    assert temperature_weights([100, 1], 1.0) == pytest.approx([100 / 101, 1 / 101])
    assert temperature_weights([100, 1], 2.0) == pytest.approx([10 / 11, 1 / 11])  # sqrt(100) = 10


@pytest.mark.parametrize("crop", [None, 1.0])
def test_batch_stream_restore_continues(tiny_corpus, crop):
    cuts = load_set(tiny_corpus[0], "speech_train")
    vocab = {"text": list(" 'abcdefghijklmnopqrstuvwxyz")}
    cache = FeatureCache("fbank")
    stream = lambda: BatchStream(cuts, Collator({"text": TextTargets(vocab["text"])}, cache, crop=crop), 8.0, seed=3,  # noqa: E731
                                 crop=crop)
    straight = stream()
    reference = [straight.next(step).cut_ids for step in range(25)]
    assert straight.epoch >= 1  # the comparison crosses an epoch boundary

    first = stream()
    for step in range(11):
        assert first.next(step).cut_ids == reference[step]
    state = json.loads(json.dumps(first.state()))
    resumed = stream()
    resumed.restore(state)
    assert [resumed.next(step).cut_ids for step in range(11, 25)] == reference[11:]


@pytest.mark.parametrize("crop", [0.5, 100.0])
def test_cropped_batches_fill_the_budget(tiny_corpus, crop):
    """A cropped task's batch holds about max_duration seconds of audio whether the crop is
    shorter than the utterances or longer (then they are taken whole, and more fit)."""
    cuts = load_set(tiny_corpus[0], "speech_train")
    mean = sum(min(crop, c.duration) for c in cuts) / len(cuts)
    budget = 4.5 * mean  # 4 crops fit, a fifth does not
    stream = BatchStream(cuts, Collator({}, FeatureCache("fbank"), crop=crop), budget, seed=0, crop=crop)
    assert stream.crops_per_batch == 4
    assert len(stream.next(0).cut_ids) == 4


def test_batch_stream_smaller_than_one_batch(corpus):
    """8 utterances, a batch of 100 s: every batch holds all of them (no endless empty epochs,
    no bucketing error for too few cuts)."""
    cuts = load_set(corpus, "overfit")
    stream = BatchStream(cuts, Collator({}, FeatureCache("fbank")), 100.0, seed=0)
    for step in range(3):
        assert sorted(stream.next(step).cut_ids) == sorted(c.id for c in cuts)


def _write_manifest(corpus, name: str, text: str) -> None:
    cut = next(iter(CutSet.from_file(corpus / "manifests" / "speech_train_cuts.jsonl.gz")))
    line = cut.to_dict()
    line["id"] = "bad-cut-0001"
    line["supervisions"][0]["text"] = text
    with gzip.open(corpus / "manifests" / f"{name}_cuts.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def test_training_cuts_names_bad_character(corpus, caplog):
    _write_manifest(corpus, "badchars", "meet me in room 42")
    config = Config.model_validate(dict(
        corpus=str(corpus), tasks=dict(asr=dict(head=dict(type="ctc"), target="text",
                                                train_sets=["overfit", "badchars"]))))
    config = config.model_copy(update={"vocab": build_vocab(config)})
    with pytest.raises(ManifestError, match="bad-cut-0001") as e:
        training_cuts(config, "asr", on_error="raise")
    assert "outside the vocabulary" in str(e.value) and "'24'" in str(e.value)
    kept = training_cuts(config, "asr", on_error="skip")
    assert len(kept) == 8 and "bad-cut-0001" not in {c.id for c in kept}
    assert "skipped 1 utterances" in caplog.text
