"""The input pipeline off the training thread (training/loader.py): DataLoader workers give
the in-process batches, ranks read different shards, lazy manifests give the same cuts,
``cache_features: auto`` follows the corpus size, and a run with workers stops cleanly."""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil

import pytest
import torch

from polyhead.config import Config
from polyhead.data.corpus import load_set
from polyhead.features import from_spec
from polyhead.data.batching import BatchStream, Collator, FeatureCache
from polyhead.data.labels import CHARS
from polyhead.tasks.speech import TextTargets
from polyhead.training.cuts import training_cuts
from polyhead.training.loader import LoaderStream, cache_enabled

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")
VOCAB = {"text": CHARS}
TEXT = {"text": TextTargets(CHARS)}  # the Collator's targets: transcripts


def _config(corpus, **train) -> Config:
    return Config.model_validate({
        "corpus": str(corpus), "vocab": VOCAB,
        "tasks": {"asr": {"head": {"type": "ctc"}, "target": "text", "train_sets": ["speech_train"]}},
        "train": train})


@pytest.mark.parametrize("crop", [None, 1.0])
def test_workers_give_the_in_process_batches(tiny_corpus, crop):
    """Same sampler seed: same cut ids in the same order, same feature shapes, across an
    epoch boundary; uncropped, the features themselves are equal."""
    cuts = load_set(tiny_corpus[0], "speech_train")
    make = lambda cls, **kw: cls(cuts, Collator(TEXT, FeatureCache("fbank", enabled=False),  # noqa: E731
                                                crop=crop), 8.0, seed=3, crop=crop, **kw)
    local, workers = make(BatchStream), make(LoaderStream, workers=2)
    try:
        for step in range(25):
            a, b = local.next(step), workers.next(step)
            assert a.cut_ids == b.cut_ids
            assert a.inputs.shape == b.inputs.shape and torch.equal(a.lengths, b.lengths)
            assert torch.equal(a.targets["text"].ids, b.targets["text"].ids)
            if crop is None:
                assert torch.equal(a.inputs, b.inputs)
        assert (workers.epoch, workers.position) == (local.epoch, local.position) and workers.epoch >= 1
    finally:
        workers.close()


def test_restore_skips_what_was_trained_on(tiny_corpus):
    cuts = load_set(tiny_corpus[0], "speech_train")
    make = lambda: LoaderStream(cuts, Collator(TEXT, FeatureCache("fbank", enabled=False)),  # noqa: E731
                                8.0, seed=3, workers=1)
    first, resumed = make(), make()
    try:
        reference = [first.next(step).cut_ids for step in range(12)]
        first.close()
        first.restore({"epoch": 0, "position": 0})  # a fresh iterator after close
        assert first.next(0).cut_ids == reference[0]
        resumed.restore(json.loads(json.dumps({"epoch": 0, "position": 5})))
        assert [resumed.next(s).cut_ids for s in range(5, 12)] == reference[5:]
    finally:
        first.close()
        resumed.close()


def test_ranks_read_different_shards(tiny_corpus):
    cuts = load_set(tiny_corpus[0], "speech_train")
    ids = []
    for rank in range(2):
        s = LoaderStream(cuts, Collator(TEXT, FeatureCache("fbank", enabled=False)), 8.0, seed=3,
                         rank=rank, world_size=2, workers=1)
        try:
            ids.append({i for step in range(4) for i in s.next(step).cut_ids})
        finally:
            s.close()
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_lazy_manifests_give_the_same_cuts(tiny_corpus):
    eager = training_cuts(_config(tiny_corpus[0]), "asr")
    lazy = training_cuts(_config(tiny_corpus[0], lazy_manifests=True), "asr")
    assert lazy.is_lazy and not eager.is_lazy
    assert sorted(c.id for c in lazy) == sorted(c.id for c in eager)
    stream = LoaderStream(lazy, Collator(TEXT, FeatureCache("fbank", enabled=False)), 8.0, seed=0,
                          workers=1)
    try:
        seen = set()
        while stream.epoch == 0:  # one epoch, streamed: every batch's cuts are the task's
            seen.update(stream.next(0).cut_ids)
        assert seen <= {c.id for c in eager} and len(seen) > len(eager) // 2
    finally:
        stream.close()


def test_a_cropped_task_streams_a_lazy_set(tiny_corpus):
    """A cropped task's batch size comes from the mean cropped length; a streamed set has no
    length, so it is taken from the set's first cuts (found by the scale rehearsal)."""
    from polyhead.data.batching import crops_per_batch

    eager = training_cuts(_config(tiny_corpus[0]), "asr")
    lazy = training_cuts(_config(tiny_corpus[0], lazy_manifests=True), "asr")
    assert crops_per_batch(lazy, 3.0, 12.0) == crops_per_batch(eager, 3.0, 12.0)  # fewer cuts than the sample
    stream = BatchStream(lazy, Collator(TEXT, FeatureCache("fbank", enabled=False)), 12.0, seed=0, crop=3.0)
    assert stream.next(0).cut_ids


def test_cache_auto_follows_the_corpus_size(tiny_corpus, tmp_path, caplog):
    fbank = from_spec("fbank")  # 32 kB per second of audio: 2 GB hold about 17 h
    big = tmp_path / "big"
    (big / "manifests").mkdir(parents=True)
    (big / "corpus.json").write_text(json.dumps({"sets": {"speech_train": {"hours": 960.0}}}))
    with caplog.at_level(logging.INFO, logger="polyhead.training.loader"):
        assert cache_enabled(_config(big, cache_features="auto"), fbank) is False
        assert cache_enabled(_config(tiny_corpus[0], cache_features="auto"), fbank) is True
    assert "feature cache off" in caplog.text and "feature cache on" in caplog.text
    # a user's choice stands, and workers multiply the copies
    assert cache_enabled(_config(big, cache_features=True), fbank) is True
    small = tmp_path / "small"
    shutil.copytree(big, small)
    (small / "corpus.json").write_text(json.dumps({"sets": {"speech_train": {"hours": 10.0}}}))
    assert cache_enabled(_config(small, cache_features="auto"), fbank) is True
    assert cache_enabled(_config(small, cache_features="auto", loader_workers=2), fbank) is False


def test_speed_perturbation_changes_the_length(tiny_corpus):
    cut = next(iter(load_set(tiny_corpus[0], "speech_train")))
    plain = Collator(TEXT, FeatureCache("fbank", enabled=False))([cut])
    faster = Collator(TEXT, FeatureCache("fbank", enabled=False), speed_perturb=[1.1])([cut])
    assert faster.cut_ids[0] != cut.id
    assert int(faster.lengths[0]) == pytest.approx(int(plain.lengths[0]) / 1.1, abs=2)
    assert torch.equal(faster.targets["text"].ids, plain.targets["text"].ids)


def test_two_steps_with_loader_workers_stop_cleanly(tiny_corpus, tmp_path):
    """Training with 2 workers per task runs, resumes (with the workers' count changed) and
    leaves no worker behind."""
    from polyhead.cli import main

    args = ["train", "--config", "scratch", "--run", str(tmp_path / "run"), f"corpus={tiny_corpus[0]}",
            "encoder.dim=48", "encoder.layers=2", "train.eval_every=100", "train.time_budget_s=null",
            "tasks.speaker.train_sets=[speaker_train]", "train.cache_features=auto"]
    assert main(args + ["train.steps=2", "train.loader_workers=2"]) == 0
    assert multiprocessing.active_children() == []
    assert main(args[:5] + ["--resume", "train.steps=3", "train.loader_workers=1"]) == 0
    assert multiprocessing.active_children() == []
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 3
