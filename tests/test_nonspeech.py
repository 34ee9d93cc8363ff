"""Non-speech clips for a voice-activity head (data/synth/nonspeech.py) and the frame task's
``nonspeech`` option (training/cuts.py): what the clips hold, that they enter the VAD
task's training cuts at the share asked, are labelled not-speech, and that other tasks refuse."""

from __future__ import annotations

import numpy as np
import pytest

from polyhead.audio import SAMPLE_RATE
from polyhead.config import ConfigError, load_config
from polyhead.data.synth import nonspeech


def _config(corpus, *extra):
    return load_config("scratch", [f"corpus={corpus}", "encoder.dim=48", "encoder.layers=2", "train.steps=3",
                                   "train.eval_every=3", "train.time_budget_s=null",
                                   "tasks.speaker.train_sets=[speaker_train]", *extra])


def test_clips_are_non_speech_of_every_kind_and_reproducible():
    cuts = list(nonspeech.clips(6, 8.0, seed=4))
    again = list(nonspeech.clips(6, 8.0, seed=4))
    assert len({c.id for c in cuts}) == 6
    kinds = set()
    for c, d in zip(cuts, again):
        assert c.duration == 8.0 and c.sampling_rate == SAMPLE_RATE and not c.supervisions
        x = c.load_audio()[0]
        assert np.array_equal(x, d.load_audio()[0])  # same seed, same audio
        assert np.abs(x).max() <= 10 ** (nonspeech.TONE_PEAK_DBFS[1] / 20) + 1e-3
        # 100 ms windows: exact zeros, quiet noise or louder tones
        frames = x[: len(x) // 1600 * 1600].reshape(-1, 1600)
        rms = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, 1) + 1e-20)
        kinds |= {"zeros" if r < -150 else "noise" if r < -33 else "tones" for r in rms}
    assert kinds == {"zeros", "noise", "tones"}


def test_the_vad_task_trains_on_its_share_of_clips_labelled_not_speech(tiny_corpus):
    from polyhead.data.batching import FeatureCache
    from polyhead.model import MultiTaskModel
    from polyhead.tasks import collator, task_kind
    from polyhead.training.cuts import build_vocab, training_cuts

    config = _config(tiny_corpus[0], "tasks.vad.nonspeech=0.5")
    config.vocab = build_vocab(config)
    plain = _config(tiny_corpus[0])
    plain.vocab = config.vocab
    real = list(training_cuts(plain, "vad"))
    cuts = list(training_cuts(config, "vad"))
    clips = [c for c in cuts if c.id.startswith("nonspeech_")]
    assert len(clips) == len(real) and len(cuts) == 2 * len(real)  # a share of 0.5
    assert clips[0].duration == 2 * config.tasks["vad"].crop
    assert list(training_cuts(config, "vad")) == cuts  # the same clips and order on a resumed run
    model = MultiTaskModel(config)
    kind = task_kind(config, "vad")
    batch = collator([kind], FeatureCache(model.encoder.features), crop=kind.task.crop)(
        clips[:1] + real[:1], np.random.default_rng(0))
    labels = batch.targets["vad"]
    assert labels[0].sum() == 0 and labels[1].sum() > 0


def test_nonspeech_is_refused_where_it_means_nothing(tiny_corpus):
    from polyhead.training.cuts import build_vocab, training_cuts

    config = _config(tiny_corpus[0], "tasks.speaker.nonspeech=0.2")
    config.vocab = build_vocab(config)
    with pytest.raises(ConfigError, match="nonspeech is for voice-activity tasks"):
        training_cuts(config, "speaker")
    lazy = _config(tiny_corpus[0], "tasks.vad.nonspeech=0.2", "train.lazy_manifests=true")
    lazy.vocab = config.vocab
    with pytest.raises(ConfigError, match="not with train.lazy_manifests"):
        training_cuts(lazy, "vad")
    with pytest.raises(ValueError, match="less than 1"):  # a share: clips and nothing else is no task
        _config(tiny_corpus[0], "tasks.vad.nonspeech=1.0")


def test_a_run_with_nonspeech_clips_trains(tiny_corpus, tmp_path):
    from polyhead.training.trainer import train

    summary = train(_config(tiny_corpus[0], "tasks.vad.nonspeech=0.3", "tasks.vad.every=1"), tmp_path / "run",
                    progress=False)
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0 and summary["unreadable_files"] == 0
