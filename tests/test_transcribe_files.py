"""What a Whisper user expects (issue 22): `polyhead transcribe` over many files and folders
with Whisper's options and output formats, failures named while the rest is written;
plain Whisper loaded by name; Whisper's temperature fallback and no-speech rule (issue 25).
All on a tiny random Whisper."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import polyhead
from polyhead.cli import main
from polyhead.config import Config
from polyhead.inference.files import collect, parse_extensions
from polyhead.inference.formats import ALL_FORMATS, to_tsv, to_txt
from polyhead.inference.pipeline import (WHISPER_TEMPERATURES, Decoding, Polyhead, compression_ratio, decode,
                                         pretrained_whisper)
from polyhead.model import MultiTaskModel
from polyhead.data.labels import CHARS
from tiny_whisper import make_tiny_whisper

LOOP = "the the the the the the the the the the the the the the the the the the the the"
FINE = "hello world this is a test"


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="module")
def run_folder(tiny_whisper, tmp_path_factory):
    """A polyhead checkpoint on the tiny Whisper: decoder + CTC speech head, and a VAD head
    that hears speech everywhere."""
    config = Config.model_validate({
        "encoder": {"name": "whisper", "pretrained": str(tiny_whisper), "whisper_config": {"dropout": 0.0}},
        "tasks": {"asr": {"head": {"type": "whisper_decoder", "options": {"dropout": 0.0}}, "target": "text",
                          "train_sets": ["x"]},
                  "vad": {"head": {"type": "frame", "layer": 1}, "target": "vad", "train_sets": ["x"]}},
        "vocab": {"text": CHARS}})
    torch.manual_seed(0)
    model = MultiTaskModel(config)
    model.heads["vad"].proj.bias.data.fill_(8.0)
    folder = tmp_path_factory.mktemp("run") / "m"
    model.save(folder)
    return folder


def noise(path, seconds, seed=0, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (np.random.default_rng(seed).standard_normal(int(rate * seconds)) * 0.1).astype(np.float32), rate)
    return path


@pytest.fixture
def audio_dir(tmp_path):
    """Good files (one in a sub-folder, one over the 30 s window), a corrupt one, an empty one,
    and a file of another extension."""
    root = tmp_path / "audio"
    noise(root / "a.wav", 1.5, seed=1)
    noise(root / "sub" / "b.flac", 2.5, seed=2)
    noise(root / "long.wav", 31.0, seed=3)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16000)
    (root / "notes.txt").write_text("not audio, not taken")
    return root


def test_collect_walks_folders_filters_extensions_and_names_outputs(audio_dir, tmp_path):
    noise(audio_dir / "a.flac", 0.5)  # beside a.wav: its outputs must not overwrite a.wav's
    noise(audio_dir / ".hidden" / "c.wav", 0.5)
    found = collect([audio_dir, audio_dir / "a.wav"], parse_extensions("WAV,.flac"))
    names = {i.name: i.path.relative_to(audio_dir).as_posix() for i in found}
    assert names == {"a": "a.flac", "a.wav": "a.wav", "corrupt": "corrupt.wav", "empty": "empty.wav",
                     "long": "long.wav", "sub/b": "sub/b.flac"}  # a.wav once, though named twice
    assert [i.name for i in collect([tmp_path / "missing.wav"], parse_extensions(None))] == ["missing"]


def test_cli_folder_run_writes_every_format_and_names_the_failures(run_folder, audio_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["transcribe", str(audio_dir), "--model", str(run_folder), "--output-dir", str(out),
               "--output-format", "all", "--temperature", "0", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    for name in ("a", "sub/b", "long"):
        for fmt in ALL_FORMATS:
            assert (out / f"{name}.{fmt}").is_file(), (name, fmt)
        res = json.loads((out / f"{name}.json").read_text())
        assert {"text", "language", "duration", "segments"} <= set(res) and res["language"] == "en"
        srt, tsv = (out / f"{name}.srt").read_text(), (out / f"{name}.tsv").read_text()
        assert srt.count("-->") == len(res["segments"]) == len(tsv.splitlines()) - 1
        assert tsv.startswith("start\tend\ttext\n")
        assert (out / f"{name}.vtt").read_text().startswith("WEBVTT")
        assert all(0 <= s["start"] <= s["end"] <= res["duration"] + 0.1 for s in res["segments"])
    assert json.loads((out / "long.json").read_text())["duration"] == pytest.approx(31.0)
    assert not any(out.rglob("corrupt.*")) and not any(out.rglob("empty.*")) and not any(out.rglob("notes.*"))
    assert "transcribed 3 of 5 files" in err and "2 failed" in err
    assert f"{audio_dir / 'corrupt.wav'}: not a readable audio file" in err
    assert f"{audio_dir / 'empty.wav'}: empty" in err
    assert "rttm" not in {p.suffix[1:] for p in out.rglob("*")}  # all: Whisper's five without --speakers


def test_cli_single_file_keeps_stdout_and_refuses_what_does_not_fit(run_folder, audio_dir, tmp_path, capsys):
    model = ["--model", str(run_folder), "--temperature", "0"]
    assert main(["transcribe", str(audio_dir / "a.wav"), *model]) == 0  # json on stdout, as before
    captured = capsys.readouterr()
    assert json.loads(captured.out)["segments"] is not None and "transcribed 1 of 1 file" in captured.err
    assert main(["transcribe", str(audio_dir / "a.wav"), *model, "--format", "srt", "-o", str(tmp_path / "a.srt")]) == 0
    assert (tmp_path / "a.srt").is_file()
    capsys.readouterr()
    assert main(["transcribe", str(audio_dir / "corrupt.wav"), *model]) == 2
    assert "corrupt.wav: not a readable audio file" in capsys.readouterr().err
    assert main(["transcribe", str(audio_dir), *model]) == 2  # a folder needs --output-dir
    assert "--output-dir" in capsys.readouterr().err
    assert main(["transcribe", str(audio_dir / "a.wav"), *model, "--output-format", "all"]) == 2
    assert "--output-dir" in capsys.readouterr().err


def test_text_and_tsv_writers():
    segs = [{"start": 0.5, "end": 2.25, "text": "hello\tthere"}, {"start": 3.0, "end": 4.0, "text": ""},
            {"start": 5.0, "end": 6.0, "text": "again", "speaker": "SPEAKER_01"}]
    assert to_txt(segs) == "hello\tthere\n[SPEAKER_01] again\n"
    assert to_tsv(segs).splitlines() == ["start\tend\ttext", "500\t2250\thello there", "3000\t4000\t",
                                         "5000\t6000\t[SPEAKER_01] again"]


# --- plain Whisper by name --------------------------------------------------------------------


def test_load_by_name_is_plain_whisper(tiny_whisper, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_whisper, models / "tiny-random")
    (models / "tiny-random" / "polyhead_source.json").write_text("{}")  # a finished models-folder entry
    monkeypatch.setenv("POLYHEAD_MODELS", str(models))
    assert pretrained_whisper("tiny-random") == models / "tiny-random"
    assert pretrained_whisper(tiny_whisper) == tiny_whisper
    assert pretrained_whisper(tmp_path / "nothing") is None

    for source in ("tiny-random", str(tiny_whisper)):
        ph = polyhead.load(source)
        assert list(ph.model.config.tasks) == ["asr"] and ph.model.tasks_with(head_type="speaker") == []
        head = ph.decoder()
        assert head is not None and not head.has_ctc and head.language == "en"
        assert ph.model.encoder.pad_to_window  # zero-shot Whisper reads its 30 s window
    wav = noise(tmp_path / "x.wav", 2.0)
    res = ph.analyze(wav)
    assert isinstance(res["text"], str) and res["avg_logprob"] <= 0 and res["temperature"] == 0.0
    for answer in ("speaker_embedding", "language", "segments"):  # no such heads: no answers
        assert res.get(answer) is None
    assert 0 <= res["no_speech_prob"] <= 1  # Whisper's own: the decoder's no-speech token
    batch = ph.analyze_batch([wav, noise(tmp_path / "y.wav", 1.0, seed=5)])
    assert batch[0]["text"] == res["text"]

    assert main(["transcribe", str(wav), "--model", "tiny-random", "--temperature", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["language"] == "en" and out["text"] == res["text"]
    assert main(["transcribe", str(wav), "--model", "tiny-random", "--word-timestamps"]) == 2
    assert "CTC" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="models list"):
        polyhead.load(tmp_path / "nothing")


def test_a_multilingual_whisper_without_a_language_detects_it(tiny_whisper, tmp_path):
    ph = polyhead.load(tiny_whisper)
    head = ph.decoder()
    head.multilingual, head.language = True, None  # the tiny vocabulary is English-only sized
    res = ph.analyze(noise(tmp_path / "x.wav", 1.0))
    assert res["decoder_language"] in {"en", "de", "fr", "es", "it", "nl", "pt"}
    code = head.tokenizer.convert_tokens_to_ids(f"<|{res['decoder_language']}|>")
    assert head.prompt(res["decoder_language"])[1] == code


def test_beam_search_takes_the_initial_prompt(tiny_whisper, tmp_path):
    ph = polyhead.load(tiny_whisper)
    head, seen = ph.decoder(), []
    logits = head.logits

    def spy(ids, *args, **kwargs):
        seen.append(ids[0].tolist())
        return logits(ids, *args, **kwargs)

    head.logits = spy
    res = ph.analyze_features([ph.features(noise(tmp_path / "x.wav", 1.0),
                                           decoding=Decoding(prompt="hello world", beam_size=2, temperature=0.0))])
    prev = head.tokenizer.encode(" hello world", add_special_tokens=False)
    start = head.tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert [start, *prev, *head.prompt()] in seen and isinstance(res[0]["text"], str)


# --- Whisper's temperature fallback and no-speech rule -------------------------------------------


@pytest.fixture
def scripted(tiny_whisper, monkeypatch):
    """Plain tiny Whisper whose decoder's answers are scripted per temperature (the real
    decoder runs, then its text and score are replaced): returns (model, script, tried)."""
    ph = polyhead.load(tiny_whisper)
    head = ph.decoder()
    generate, script, tried = head.generate, {}, []

    def scripted_generate(memory, lengths, temperature=0.0, **kw):
        tried.append(temperature)
        real = generate(memory, lengths, temperature=temperature, **kw)
        text, logprob = script.get(temperature, script.get("else", (FINE, -0.2)))
        return [dict(r, text=text, avg_logprob=logprob) for r in real]

    monkeypatch.setattr(head, "generate", scripted_generate)
    monkeypatch.setattr(head, "no_speech_probs", lambda memory, lengths, prompt_text=None: [0.1] * len(memory))
    return ph, script, tried


def whisper_decoding(**options) -> Decoding:
    return Decoding(temperature=WHISPER_TEMPERATURES, **options)


def test_a_looping_transcript_is_decoded_again_hotter(scripted, tmp_path):
    ph, script, tried = scripted
    assert compression_ratio(LOOP) > 2.4 > compression_ratio(FINE)
    script.update({0.0: (LOOP, -0.1), 0.2: (FINE, -0.3)})
    item = ph.features(noise(tmp_path / "x.wav", 1.0), decoding=whisper_decoding())
    res = ph.analyze_features([item])[0]
    assert tried == [0.0, 0.2]  # the fallback was taken, and stopped at the first that passed
    assert res["text"] == FINE and res["temperature"] == 0.2 and res["compression_ratio"] < 2.4
    # one value: no fallback; the loop is said once, and the answer says it was cut
    tried.clear()
    res = ph.analyze_features([ph.features(tmp_path / "x.wav", decoding=Decoding(temperature=0.0))])[0]
    assert tried == [0.0] and res["compression_ratio"] > 2.4
    assert res["text"] == "the" and res["loop_cut"] is True


def test_when_every_temperature_fails_the_last_result_stands(scripted, tmp_path):
    ph, script, tried = scripted
    script.update({"else": (FINE, -1.5)})  # unsure at every temperature (no-speech low: not silence)
    res = ph.analyze_features([ph.features(noise(tmp_path / "x.wav", 1.0), decoding=whisper_decoding())])[0]
    assert tried == list(WHISPER_TEMPERATURES)
    assert res["temperature"] == 1.0 and res["text"] == FINE and res["avg_logprob"] == -1.5
    # a threshold turned off does not ask for a fallback
    tried.clear()
    ph.analyze_features([ph.features(tmp_path / "x.wav", decoding=whisper_decoding(logprob_threshold=None))])
    assert tried == [0.0]


def test_silence_is_not_decoded_again_and_gets_no_transcript(scripted, tmp_path, monkeypatch):
    ph, script, tried = scripted
    head = ph.decoder()
    monkeypatch.setattr(head, "no_speech_probs", lambda memory, lengths, prompt_text=None: [0.9] * len(memory))
    wav = noise(tmp_path / "x.wav", 1.0)
    script.update({"else": (FINE, -1.5)})  # unsure, and the no-speech probability is high: silence
    res = ph.analyze_features([ph.features(wav, decoding=whisper_decoding())])[0]
    assert tried == [0.0] and res["text"] == "" and res["words"] == [] and res["no_speech_prob"] == 0.9
    # sure of itself: Whisper keeps the text despite the no-speech probability
    tried.clear()
    script.update({"else": (FINE, -0.5)})
    res = ph.analyze_features([ph.features(wav, decoding=whisper_decoding())])[0]
    assert tried == [0.0] and res["text"] == FINE
    # a loop is decoded again even where no-speech is high, when the decoder is sure
    tried.clear()
    script.update({0.0: (LOOP, -0.5)})
    res = ph.analyze_features([ph.features(wav, decoding=whisper_decoding())])[0]
    assert tried == [0.0, 0.2] and res["text"] == FINE


def test_fallback_decodes_again_only_the_rows_that_need_it(tiny_whisper):
    """In a batch, the rows that pass keep their first answer; the others go on together."""
    ph = polyhead.load(tiny_whisper)
    head = ph.decoder()
    calls = []

    def fake_generate(memory, lengths, temperature=0.0, **kw):
        calls.append((temperature, len(memory)))
        texts = {0.0: [FINE, LOOP, LOOP], 0.2: [FINE, LOOP], 0.4: [FINE]}[temperature]
        return [{"text": t, "tokens": [], "avg_logprob": -0.2} for t in texts[:len(memory)]]

    head.generate = fake_generate
    memory, lengths = torch.zeros(3, 10, head.width), torch.tensor([10, 10, 10])
    out = decode(head, memory, lengths, whisper_decoding(), no_speech=[0.0, 0.0, 0.0])
    assert calls == [(0.0, 3), (0.2, 2), (0.4, 1)]
    assert [r["temperature"] for r in out] == [0.0, 0.2, 0.4] and all(r["text"] == FINE for r in out)


def test_the_long_form_path_falls_back_too(run_folder, tmp_path, monkeypatch):
    from polyhead.inference.diarize import transcribe

    ph = Polyhead.load(run_folder)
    head = ph.decoder()
    generate, tried = head.generate, []

    def looping_at_zero(memory, lengths, temperature=0.0, **kw):
        tried.append(temperature)
        real = generate(memory, lengths, temperature=temperature, **kw)
        return [dict(r, text=LOOP if temperature == 0 else FINE, avg_logprob=-0.2) for r in real]

    monkeypatch.setattr(head, "generate", looping_at_zero)
    res = transcribe(ph, noise(tmp_path / "x.wav", 3.0), decoding=whisper_decoding())
    assert tried == [0.0, 0.2] and res["segments"]
