"""Inputs without speech get no speech segment and no transcript: digital silence, -50 dBFS
noise and tones. The tiny models here are random, so what is tested is the mechanism: the
silence floor (``audio.is_silent``: exact zeros or a peak below -60 dBFS never hold speech,
whatever the VAD head says), and the VAD head's gate on the decoder (a head that hears no
speech over the whole input means no decoding and empty text; one that hears speech lets
the decoder run, so it is the gate that silenced it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polyhead.audio import SAMPLE_RATE, SILENCE_PEAK_DBFS, is_silent, save_audio

SECONDS = 20
ALWAYS, NEVER = -1e9, 1e9  # VAD thresholds: every frame speech / none


def zeros() -> np.ndarray:
    return np.zeros(SECONDS * SAMPLE_RATE, np.float32)


def noise(dbfs_rms: float = -50.0) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(SECONDS * SAMPLE_RATE)
    return (x / x.std() * 10 ** (dbfs_rms / 20)).astype(np.float32)


def tone(dbfs_peak: float = -12.0) -> np.ndarray:
    t = np.arange(SECONDS * SAMPLE_RATE) / SAMPLE_RATE
    x = np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 660 * t) + 0.3 * np.sin(2 * np.pi * 880 * t)
    return (x / np.abs(x).max() * 10 ** (dbfs_peak / 20)).astype(np.float32)


def test_the_silence_floor():
    assert is_silent(zeros()) and is_silent(np.zeros(0))
    assert is_silent(tone(SILENCE_PEAK_DBFS - 1))  # a tone whose peak is below -60 dBFS
    assert not is_silent(tone(SILENCE_PEAK_DBFS + 1))
    assert not is_silent(noise(-50.0))  # -50 dBFS RMS peaks near -38 dBFS: the VAD head's to judge
    assert not is_silent(tone())
    x = zeros()
    x[12345] = 0.002  # one sample above the floor (-54 dBFS)
    assert not is_silent(x)


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    """A tiny random Whisper multi-task model (decoder, speaker, VAD heads) whose VAD head
    calls every frame speech (test_whisper_serving.saved)."""
    from test_whisper_serving import saved, whisper_config
    from tiny_whisper import make_tiny_whisper

    pretrained = make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")
    return saved(whisper_config(pretrained), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def whisper(whisper_folder):
    from polyhead.inference import load

    return load(whisper_folder)


@pytest.fixture
def decoder_calls(whisper, monkeypatch):
    """How many times the decoder's generate ran."""
    head = whisper.decoder()
    calls = []
    generate = head.generate

    def counted(*args, **kwargs):
        calls.append(1)
        return generate(*args, **kwargs)
    monkeypatch.setattr(head, "generate", counted)
    return calls


@pytest.fixture
def vad(whisper):
    """Set the VAD head's threshold (ALWAYS, NEVER); restored after the test."""
    head = whisper.model.heads["vad"]
    before = head.threshold

    def set_(threshold):
        head.threshold = threshold
    yield set_
    head.threshold = before


def _no_speech(result: dict) -> None:
    assert result["text"] == "" and result["segments"] == [] and result["words"] == []
    assert result["avg_logprob"] is None  # the decoder was not run


@pytest.mark.parametrize("name", ["zeros", "noise", "tone"])
def test_analyze_without_speech_has_no_segments_and_no_text(whisper, vad, decoder_calls, name):
    audio = {"zeros": zeros, "noise": noise, "tone": tone}[name]()
    vad(NEVER)  # the VAD head hears no speech over the whole input
    _no_speech(whisper.analyze(audio, SAMPLE_RATE))
    assert not decoder_calls
    vad(ALWAYS)  # it hears speech everywhere: segments, and the decoder runs, except below the floor
    res = whisper.analyze(audio, SAMPLE_RATE)
    if name == "zeros":
        _no_speech(res)
        assert not decoder_calls
    else:
        assert res["segments"] and decoder_calls


def test_digital_silence_through_every_path(whisper, whisper_folder, vad, decoder_calls, tmp_path):
    """A 20 s all-zeros wav, with a VAD head that would call it all speech: `analyze`,
    `analyze_batch` beside speech-like input, long-form `transcribe` (by speaker, chunked)
    and the `transcribe` command all answer no speech, and the decoder never runs on it."""
    from polyhead.cli import main
    from polyhead.inference.diarize import transcribe

    vad(ALWAYS)
    path = tmp_path / "silence.wav"
    save_audio(path, zeros())
    _no_speech(whisper.analyze(path))
    silent, loud = whisper.analyze_batch([zeros(), tone()], SAMPLE_RATE)
    _no_speech(silent)
    assert loud["segments"] and len(decoder_calls) == 1  # only the tone was decoded
    decoder_calls.clear()
    assert transcribe(whisper, path)["segments"] == [] and not decoder_calls
    out = tmp_path / "out"  # the command loads its own copy, its VAD head calling every frame speech
    for extra in ([], ["--speakers"]):
        assert main(["transcribe", str(path), "--model", whisper_folder, "--output-dir", str(out), "-f", "json",
                     *extra]) == 0
        answer = json.loads((out / "silence.json").read_text())
        assert answer["text"] == "" and answer["segments"] == [], extra


def test_transcribe_long_form_gates_on_the_vad_head(whisper, vad, decoder_calls, tmp_path):
    from polyhead.inference.diarize import transcribe

    for name, audio in (("noise", noise()), ("tone", tone())):
        path = tmp_path / f"{name}.wav"
        save_audio(path, audio)
        vad(NEVER)
        assert transcribe(whisper, path)["segments"] == [] and not decoder_calls, name
        vad(ALWAYS)
        assert transcribe(whisper, path)["segments"] and decoder_calls, name
        decoder_calls.clear()


def test_plain_whisper_is_held_by_the_floor(tmp_path_factory, monkeypatch):
    """A model without a VAD head (plain Whisper) has only the floor: digital silence gets
    no transcript and no decoding."""
    from tiny_whisper import make_tiny_whisper

    from polyhead.inference import load

    model = load(make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny"))
    assert not model.model.tasks_with(target="vad")
    head, calls = model.decoder(), []
    generate = head.generate
    monkeypatch.setattr(head, "generate", lambda *a, **k: calls.append(1) or generate(*a, **k))
    res = model.analyze(zeros(), SAMPLE_RATE)
    assert res["text"] == "" and res["avg_logprob"] is None and not calls
    model.analyze(tone(), SAMPLE_RATE)
    assert calls  # above the floor the decoder runs (Whisper's own no-speech rule then applies)
