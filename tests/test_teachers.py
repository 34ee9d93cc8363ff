"""Teachers trained on real voices distilled into the heads (training/teachers.py): the
similarity and soft-target losses, silero's chunks on the head's frames, the per-cut cache, a
short training run with both teachers (fake teacher models), and the real peers on 1 s."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from polyhead.training import teachers
from polyhead.training.teachers import (SILERO_HOP, TeacherCache, similarity_loss, soft_target_loss,
                                        to_head_frames)


def test_similarity_loss_is_zero_when_the_cosines_agree_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    # another width, rotated and scaled: other vectors, the same cosines
    student = torch.cat([3.0 * teacher @ q, torch.zeros(6, 4)], dim=1)
    for kind in ("kl", "mse"):
        assert float(similarity_loss(student, teacher, kind)) == pytest.approx(0.0, abs=1e-6)
        assert float(similarity_loss(torch.randn(6, 12, generator=g), teacher, kind)) > 1e-3
    one = torch.randn(1, 12, requires_grad=True)
    lone = similarity_loss(one, teacher[:1])
    assert lone.item() == 0.0 and lone.requires_grad
    with pytest.raises(ValueError, match="kl, mse"):
        similarity_loss(student, teacher, "cosine")


def test_similarity_gradient_reaches_the_speaker_head():
    from polyhead.model.heads import HeadInput, SpeakerHead

    torch.manual_seed(0)
    head = SpeakerHead(16, num_classes=4, pooling="stats", emb_dim=8)
    out = head(HeadInput(torch.randn(5, 30, 16), torch.tensor([30, 25, 30, 20, 28])))
    loss = similarity_loss(out["embedding"], torch.rand(5, 256))
    loss.backward()
    linear = head.proj[1].weight
    assert float(loss) > 0 and linear.grad is not None and linear.grad.abs().sum() > 0


def test_soft_target_loss_is_zero_at_the_teachers_probabilities_and_skips_padding():
    p = torch.tensor([[0.1, 0.5, 0.9, 0.99], [0.3, 0.7, 0.0, 0.0]])
    keep = torch.tensor([[True, True, True, True], [True, True, False, False]])
    logits = torch.logit(p.clamp(1e-6, 1 - 1e-6)).requires_grad_(True)
    assert float(soft_target_loss(logits, p, keep)) == pytest.approx(0.0, abs=1e-5)
    other = torch.zeros_like(p, requires_grad=True)
    loss = soft_target_loss(other, p, keep)
    loss.backward()
    assert float(loss) > 0.05
    # the BCE gradient sigmoid(x) - p, over the kept frames only
    expected = torch.where(keep, 0.5 - p, torch.zeros_like(p)) / keep.sum()
    assert torch.allclose(other.grad, expected, atol=1e-6)
    # frames of the padding do not count, whatever the head says there
    garbage = torch.where(keep, torch.zeros_like(p), torch.full_like(p, 40.0))
    assert float(soft_target_loss(garbage, p, keep)) == pytest.approx(float(loss), abs=1e-6)


def test_silero_chunks_land_on_the_head_frames():
    # a ramp: chunk k says k, so a frame at t seconds must read t / 32 ms - 0.5 in between
    ramp = np.arange(100, dtype=np.float32)
    got = to_head_frames(ramp, SILERO_HOP, start=0.64, n=50, fps=50.0)  # Whisper's 20 ms frames
    times = 0.64 + (np.arange(50) + 0.5) / 50.0
    assert np.allclose(got, times / SILERO_HOP - 0.5, atol=1e-4)
    # a step from no speech to speech at 0.32 s, on 100 Hz frames of the cut's start
    step = np.r_[np.zeros(10), np.ones(10)].astype(np.float32)
    frames = to_head_frames(step, SILERO_HOP, start=0.0, n=100, fps=100.0)
    assert (frames[:30] == 0).all() and (frames[34:64] == 1).all()  # centres 0.304 s / 0.336 s bracket it
    assert ((frames[30:34] > 0) & (frames[30:34] < 1)).all() and (np.diff(frames[30:34]) > 0).all()
    # beyond the teacher's last chunk: its last value
    assert (frames[64:] == 1).all()


class FakeCut:
    def __init__(self, id: str, samples: np.ndarray):
        self.id, self.samples, self.sampling_rate = id, samples, 16000

    def load_audio(self):
        return self.samples[None, :]


class Counting:
    """A fake teacher model that counts the cuts it hears."""

    def __init__(self, out=lambda samples: np.array([samples.std(), len(samples)], np.float32)):
        self.calls, self.out = 0, out

    def __call__(self, samples):
        self.calls += 1
        return self.out(samples)


def test_cache_is_written_once_and_reused(tmp_path):
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    cuts = [FakeCut("spk1/utt 1", noise), FakeCut("spk1/utt:1", noise[:8000]), FakeCut("silent", np.zeros(800, np.float32))]
    model = Counting(lambda s: None if not s.any() else np.array([s.std(), len(s)], np.float32))
    cache = TeacherCache(tmp_path / "t", model)
    first = [cache.get(c) for c in cuts]
    again = [cache.get(c) for c in cuts]
    assert model.calls == 3 and first[2] is None and again[2] is None
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], first[1])
    assert len(list((tmp_path / "t").glob("*.npy"))) == 3  # ids that differ in odd characters stay apart
    # another process (a resumed run) reads the files: the teacher is not run again
    fresh = Counting()
    reread = TeacherCache(tmp_path / "t", fresh)
    assert np.array_equal(reread.get(cuts[1]), first[1]) and reread.get(cuts[2]) is None
    assert fresh.calls == 0 and reread.computed == 0


def test_unknown_model_and_loss_are_named():
    from polyhead.training.retention import RETENTION

    with pytest.raises(ValueError, match="resemblyzer"):
        RETENTION.build("speaker_teacher", model="ecapa")
    with pytest.raises(ValueError, match="kl, mse"):
        RETENTION.build("speaker_teacher", loss="cosine")
    with pytest.raises(ValueError, match="silero"):
        RETENTION.build("vad_teacher", model="webrtc")


def test_teachers_config_is_the_demo_plus_both_teachers():
    from polyhead.config import load_config

    demo, cfg = load_config("demo"), load_config("teachers")
    names = [r.name for r in cfg.train.retention]
    assert names == ["replay", "speaker_teacher", "vad_teacher", "interpolate"]
    # lists replace in configs: the demo's entries must be restated as they are
    assert all(r in cfg.train.retention for r in demo.train.retention)
    assert cfg.tasks == demo.tasks and cfg.encoder == demo.encoder


def test_training_with_both_teachers(tiny_corpus, tmp_path, monkeypatch):
    from polyhead.config import load_config
    from polyhead.training.trainer import train

    speaker = Counting(lambda s: np.random.default_rng(len(s)).standard_normal(16).astype(np.float32))
    vad = Counting(lambda s: np.clip(np.abs(s[::512]) * 20, 0, 1).astype(np.float32))
    monkeypatch.setitem(teachers.SPEAKER_MODELS, "fake_speaker", lambda: speaker)
    monkeypatch.setitem(teachers.VAD_MODELS, "fake_vad", lambda: vad)
    strategies = [{"name": "speaker_teacher", "options": {"model": "fake_speaker", "loss": "kl"}},
                  {"name": "vad_teacher", "options": {"model": "fake_vad", "extra_sets": ["speech_train"]}}]
    config = load_config("scratch", [
        f"corpus={tiny_corpus[0]}", "encoder.dim=48", "encoder.layers=2", "train.steps=3", "train.eval_every=3",
        "train.time_budget_s=null", "train.log_every=1", "tasks.speaker.train_sets=[speaker_train]",
        "tasks.vad.every=1", f"train.retention={json.dumps(strategies)}"])
    run = tmp_path / "run"
    summary = train(config, run, progress=False)
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    for term in ("speaker_teacher", "vad_teacher", "vad_teacher_extra"):
        values = [r[f"retention/{term}"] for r in log if f"retention/{term}" in r]
        assert values and all(np.isfinite(values)), term
    assert any(r["retention/speaker_teacher"] > 0 for r in log)
    # each cut heard once, its output on disk, the count in the summary
    for name, model in (("speaker_teacher", speaker), ("vad_teacher", vad)):
        record = summary["retention"][name]
        files = list((run / "teachers" / record["model"]).glob("*.npy"))
        assert record["computed"] > 0 and model.calls == record["computed"] == len(files)


def test_batches_carry_their_cuts_and_crop_offsets(tiny_corpus):
    from polyhead.data.batching import Collator, FeatureCache
    from polyhead.data.corpus import load_set

    cuts = [c for c in load_set(tiny_corpus[0], "vad_train")][:3]
    batch = Collator({}, FeatureCache("fbank"), crop=1.0)(cuts, np.random.default_rng(0))
    assert [c.id for c in batch.cuts] == batch.cut_ids == [c.id for c in cuts]
    assert len(batch.offsets) == len(cuts) and any(o > 0 for o in batch.offsets)
    assert all(0 <= o <= c.duration - 1.0 + 0.02 for o, c in zip(batch.offsets, cuts))
    moved = batch.to("cpu")
    assert moved.cuts == batch.cuts and moved.offsets == batch.offsets


def test_real_peers_on_one_second():
    pytest.importorskip("silero_vad")
    pytest.importorskip("resemblyzer")
    t = np.arange(16000) / 16000
    # a voiced-like buzz: harmonics of 140 Hz, syllable-rate amplitude modulation
    voice = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    voice = (0.3 * voice / np.abs(voice).max()).astype(np.float32)

    start = time.perf_counter()
    probs = teachers.silero_model()(voice)
    silence = teachers.silero_model()(np.zeros(16000, np.float32))
    assert time.perf_counter() - start < 5.0
    assert probs.shape == (32,) and ((probs >= 0) & (probs <= 1)).all()  # ceil(16000 / 512) chunks
    assert silence.max() < 0.5

    start = time.perf_counter()
    embed = teachers.resemblyzer_model()
    e = embed(voice)
    assert time.perf_counter() - start < 5.0
    assert e.shape == (256,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-4)
    assert embed(np.zeros(16000, np.float32)) is None  # nothing voiced: no target, not NaNs
