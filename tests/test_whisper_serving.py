"""The OpenAI-compatible endpoint on a tiny random Whisper multi-task model, driven with the
official `openai` client: every field real or null, prompt / temperature / language reach the
decoder, the VAD head gates it; and speaker-attributed transcription with every pooling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from liveserver import serving

from polyhead.config import Config
from polyhead.inference.diarize import MAX_PIECE_S, chunk_segments, transcribe
from polyhead.inference.pipeline import GREEDY, Polyhead
from polyhead.model import MultiTaskModel
from polyhead.data.labels import CHARS
from tiny_whisper import make_tiny_whisper

SPEECH_BIAS, SILENCE_BIAS = 8.0, -50.0  # VAD head bias: every frame speech / none


def whisper_config(pretrained, pooling: str = "stats") -> Config:
    def task(head, target):
        return {"head": head, "target": target, "train_sets": ["x"]}

    return Config.model_validate({
        "encoder": {"name": "whisper", "pretrained": str(pretrained), "whisper_config": {"dropout": 0.0}},
        "tasks": {"asr": task({"type": "whisper_decoder", "options": {"dropout": 0.0}}, "text"),
                  "speaker": task({"type": "speaker", "layer": 1, "options": {"pooling": pooling}}, "speaker"),
                  "vad": task({"type": "frame", "layer": 1}, "vad")},
        "vocab": {"text": CHARS, "speaker": ["a", "b"]}})


def saved(config: Config, folder) -> str:
    torch.manual_seed(0)
    model = MultiTaskModel(config)
    model.heads["vad"].proj.bias.data.fill_(SPEECH_BIAS)
    model.save(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_whisper_folder(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="module")
def whisper_server(tiny_whisper_folder, tmp_path_factory):
    """(openai client, the server's Polyhead, its checkpoint folder)."""
    from openai import OpenAI

    from polyhead.serving import create_app

    folder = saved(whisper_config(tiny_whisper_folder), tmp_path_factory.mktemp("model"))
    app = create_app(folder)
    with serving(app) as (url, _):
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), app.app.state.service.model, folder


@pytest.fixture
def decoder_calls(whisper_server):
    """Every generate call of the server's decoder: its keyword options, the ids it started
    from (the prompt), and what it returned."""
    head = whisper_server[1].decoder()
    generate, logits = head.generate, head.logits
    calls = []

    def first_ids(ids, *args, **kwargs):
        if calls and "ids" not in calls[-1]:
            calls[-1]["ids"] = ids[0].tolist()
        return logits(ids, *args, **kwargs)

    def spy(*args, **kwargs):
        calls.append({"options": kwargs})
        calls[-1]["result"] = generate(*args, **kwargs)
        return calls[-1]["result"]

    head.generate, head.logits = spy, first_ids
    yield calls
    del head.generate, head.logits


def wav(seconds=1.5, seed=0) -> io.BytesIO:
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1, 16000, format="WAV")
    buf.seek(0)
    buf.name = "a.wav"
    return buf


def create(client, seconds=1.5, seed=0, **options):
    """A transcription of noise; tests that must reach the model (not the server's cache of
    an earlier test's answer) pass their own seed."""
    return client.audio.transcriptions.create(model="polyhead", file=wav(seconds, seed), **options)


def test_every_response_format(whisper_server):
    client, model, folder = whisper_server
    text = create(client).text
    assert text == Polyhead.load(folder).analyze(wav().getvalue())["text"]
    assert create(client, response_format="text").strip() == text
    for fmt, marker in (("srt", "-->"), ("vtt", "WEBVTT")):
        assert marker in create(client, response_format=fmt)


def test_verbose_json_fields_are_what_the_model_computed(whisper_server):
    client, _, folder = whisper_server
    res = create(client, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    ref = Polyhead.load(folder).analyze(wav().getvalue())
    assert res.text == ref["text"] and res.language == "en" and res.duration == ref["duration"]
    assert len(res.segments) == len(ref["segments"]) == 1
    seg = res.segments[0]
    assert seg.avg_logprob == ref["avg_logprob"] and seg.avg_logprob <= 0
    # every frame is speech (the VAD head's bias): 1 - sigmoid(bias) up to the layer's weights
    assert seg.no_speech_prob == ref["segments"][0]["no_speech_prob"] < 0.01
    assert seg.temperature == 0.0 and seg.seek == 0 and seg.compression_ratio >= 0
    assert isinstance(seg.tokens, list) and isinstance(res.words, list)


def test_prompt_reaches_the_decoder_as_previous_text(whisper_server, decoder_calls):
    client, model, _ = whisper_server
    head = model.decoder()
    plain = create(client, response_format="verbose_json", seed=1)
    prompted = create(client, response_format="verbose_json", prompt="set an alarm", seed=1)
    assert decoder_calls[0]["options"]["prompt_text"] is None
    assert decoder_calls[1]["options"]["prompt_text"] == "set an alarm"
    prev = head.tokenizer.encode(" set an alarm", add_special_tokens=False)
    start = head.tokenizer.convert_tokens_to_ids("<|startofprev|>")
    assert decoder_calls[0]["ids"] == head.prompt()
    assert decoder_calls[1]["ids"] == [start, *prev, *head.prompt()]
    assert prompted.segments[0].avg_logprob == decoder_calls[1]["result"][0]["avg_logprob"]
    assert plain.segments[0].avg_logprob == decoder_calls[0]["result"][0]["avg_logprob"]


def test_temperature_samples_and_is_not_cached(whisper_server, decoder_calls):
    client, _, _ = whisper_server
    greedy = create(client, seed=2).text
    torch.manual_seed(0)
    sampled = [create(client, temperature=0.8, response_format="verbose_json", seed=2) for _ in range(2)]
    assert [c["options"]["temperature"] for c in decoder_calls] == [0.0, 0.8, 0.8]  # no cache hit
    assert sampled[0].segments[0].temperature == 0.8
    # the random decoder's distribution is nearly flat: a sample is not the greedy path
    assert sampled[0].text != greedy
    assert [s.text for s in sampled] == [c["result"][0]["text"] for c in decoder_calls[1:]]


def test_language_forces_the_language_token(whisper_server, decoder_calls):
    import openai

    client, model, _ = whisper_server
    head = model.decoder()
    with pytest.raises(openai.BadRequestError, match="English-only model cannot write 'de'"):
        create(client, language="de")
    # the tiny vocabulary is English-only sized; Whisper's language tokens are there all the same
    head.multilingual = True
    try:
        res = create(client, language="de", response_format="verbose_json", seed=3)
        with pytest.raises(openai.BadRequestError, match="no language token for 'xx'"):
            create(client, language="xx")
    finally:
        head.multilingual = False
    assert res.language == "de"
    de = head.tokenizer.convert_tokens_to_ids("<|de|>")
    assert decoder_calls[-1]["ids"][:2] == [head.sot, de]


def test_no_speech_per_the_vad_gets_no_transcript(whisper_server, decoder_calls):
    client, model, _ = whisper_server
    bias = model.model.heads["vad"].proj.bias
    bias.data.fill_(SILENCE_BIAS)
    try:
        res = create(client, response_format="verbose_json", seed=4)
        long = create(client, response_format="verbose_json", seconds=35.0, seed=4)  # the chunked path
    finally:
        bias.data.fill_(SPEECH_BIAS)
    assert decoder_calls == []  # the decoder never ran
    assert res.text == "" and len(res.segments) == 1
    seg = res.segments[0]
    assert seg.no_speech_prob == 1.0 and seg.avg_logprob is None and seg.tokens == []
    assert long.text == "" and long.segments == []


def test_long_form_segments_carry_their_window(whisper_server):
    """``seek``: where the encoder window that wrote a segment began (100 per second, as
    Whisper's), each utterance having its own window: never after the segment's start."""
    client, _, _ = whisper_server
    res = create(client, response_format="verbose_json", seconds=35.0, seed=5)
    assert res.duration == 35.0 and res.segments
    assert res.segments[0].seek == 0
    assert all(0 <= s.seek <= round(s.start * 100) for s in res.segments)
    assert all(s.avg_logprob <= 0 and 0 <= s.no_speech_prob < 0.01 for s in res.segments)


@pytest.fixture(scope="module")
def ctc_client(tmp_path_factory):
    from openai import OpenAI

    from polyhead.serving import create_app

    config = Config.model_validate({
        "encoder": {"name": "conformer", "dim": 32, "layers": 2, "heads": 2, "ff_mult": 2, "dropout": 0.0},
        "tasks": {"asr": {"head": {"type": "ctc"}, "target": "text", "train_sets": ["x"]},
                  "vad": {"head": {"type": "frame"}, "target": "vad", "train_sets": ["x"]}},
        "vocab": {"text": CHARS}})
    with serving(create_app(saved(config, tmp_path_factory.mktemp("ctc")))) as (url, _):
        yield OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_a_ctc_only_model_refuses_what_it_cannot_do_and_invents_nothing(ctc_client):
    import openai

    for option, value in (("prompt", "hi"), ("temperature", 0.5), ("language", "en")):
        with pytest.raises(openai.BadRequestError, match=f"CTC only .*{option}="):
            create(ctc_client, **{option: value})
    seg = create(ctc_client, response_format="verbose_json").segments[0]
    assert seg.avg_logprob is None and seg.tokens is None and 0 <= seg.no_speech_prob < 0.01


@pytest.mark.parametrize("pooling", ["first", "ctc_blank", "ctc_nonblank", "stats"])
def test_speaker_attributed_transcription_with_every_pooling(tiny_whisper_folder, tmp_path, pooling):
    """Each piece's embedding is the speaker head on a pass of the piece's audio alone, the
    input the model's forward builds for it (CLS position, CTC blank decisions and all)."""
    ph = Polyhead.load(saved(whisper_config(tiny_whisper_folder, pooling), tmp_path / "m"))
    samples = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    pieces = chunk_segments(ph, samples, 0.0)[0]
    assert len(pieces) >= int(np.ceil(3.0 / MAX_PIECE_S))  # pieces of a 3 s segment
    for p in pieces:
        alone = ph.embed(samples[int(p["start"] * 16000):int(p["end"] * 16000)])
        np.testing.assert_allclose(p["embedding"] / np.linalg.norm(p["embedding"]), alone, atol=1e-4)
    sf.write(tmp_path / "conv.wav", np.concatenate([samples] * 12), 16000)
    res = transcribe(ph, tmp_path / "conv.wav", num_speakers=2)
    assert res["speakers"] and all(s["speaker"] in res["speakers"] for s in res["segments"])


def test_each_aligned_word_gets_the_decoder_tokens_that_spell_it(tiny_whisper_folder):
    from transformers import WhisperTokenizerFast

    tok = WhisperTokenizerFast.from_pretrained(str(tiny_whisper_folder))
    tokens = tok.encode(" Hello, world 42 this is a test.", add_special_tokens=False)
    # as word_times gives them: normalised, and "42" (no CTC character) left out
    words = [{"word": w} for w in ("hello", "world", "this", "is", "a", "test")]
    Polyhead._give_tokens(tok, tokens, words)
    assert [tok.decode(w["tokens"]).strip() for w in words] == ["Hello,", "world", "this", "is", "a", "test."]


def test_each_utterance_is_decoded_on_its_own_pass(tiny_whisper_folder, tmp_path):
    """A chunk's decoder units are decoded in one batch, each on an encoder pass of its own
    audio: the same text and score as that audio alone, words inside the unit."""
    from polyhead.inference.diarize import utterance_transcripts

    ph = Polyhead.load(saved(whisper_config(tiny_whisper_folder), tmp_path / "m"))
    samples = (np.random.default_rng(1).standard_normal(16000 * 4) * 0.1).astype(np.float32)
    units = utterance_transcripts(ph, "asr", samples, [{"start": 0.2, "end": 1.4}, {"start": 2.0, "end": 3.6}], GREEDY)
    assert [(u["start"], u["end"]) for u in units] == [(0.2, 1.4), (2.0, 3.6)]
    head = ph.model.heads["asr"]
    with torch.no_grad():
        for u in units:
            inputs, lengths = ph.model_inputs(samples[int(u["start"] * 16000):int(u["end"] * 16000)])
            out = ph.model(inputs, lengths, ["asr"])["asr"]
            alone = head.generate(out["memory"], out["lengths"], frames_per_second=out["frames_per_second"])[0]
            assert u["avg_logprob"] == pytest.approx(alone["avg_logprob"], abs=1e-4)
            assert all(u["start"] <= w["start"] <= w["end"] <= u["end"] + 0.05 for w in u["words"]), u


def tokens_config(pretrained) -> Config:
    config = whisper_config(pretrained)
    config.tasks["asr"].head.options.update(decoder_tasks=["transcribe", "speakers"], ctc_weight=0.3)
    return config


def test_speaker_tokens_method_turns_the_decoder_turns_into_segments(tiny_whisper_folder, tmp_path, monkeypatch):
    """``--method tokens``: the decoder's <|speakers|> answer for a chunk becomes one segment per
    turn, timed by CTC alignment, speakers numbered by the decoder; a second chunk's numbers
    are linked to the first's by embedding; a model without the task is refused up front."""
    from polyhead.inference.diarize import chunk_speaker_turns

    ph = Polyhead.load(saved(tokens_config(tiny_whisper_folder), tmp_path / "m"))
    head = ph.model.heads["asr"]
    asked = []

    def fake_generate(memory, lengths, task="transcribe", **kw):
        asked.append(task)
        return [{"text": "<|spk1|> ab cd <|spk2|> ef <|spk1|> gh", "tokens": [], "avg_logprob": -0.5}]

    monkeypatch.setattr(head, "generate", fake_generate)
    samples = (np.random.default_rng(2).standard_normal(16000 * 4) * 0.1).astype(np.float32)
    found, covered = chunk_speaker_turns(ph, samples, 10.0, GREEDY)
    assert asked == ["speakers"] and covered == pytest.approx(4.0)
    assert [(s["local"], s["text"]) for s in found] == [(1, "ab cd"), (2, "ef"), (1, "gh")]
    assert all(10.0 <= s["start"] <= s["end"] <= 14.1 for s in found) and "embedding" in found[0]
    assert [s["start"] for s in found] == sorted(s["start"] for s in found)

    sf.write(tmp_path / "long.wav", np.concatenate([samples] * 10), 16000)  # 40 s: two chunks
    res = transcribe(ph, tmp_path / "long.wav", method="tokens", num_speakers=2)
    assert res["segments"] and set(res["speakers"]) <= {"SPEAKER_00", "SPEAKER_01"}
    assert " ".join(s["text"] for s in res["segments"]).split().count("ef") == 2  # once per chunk

    plain = Polyhead.load(saved(whisper_config(tiny_whisper_folder), tmp_path / "plain"))
    with pytest.raises(ValueError, match="speakers"):
        transcribe(plain, tmp_path / "long.wav", method="tokens")


def test_chunks_speakers_are_linked_by_embedding():
    from polyhead.inference.diarize import link_speakers

    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    segs = [{"chunk": 0, "local": 1, "embedding": a}, {"chunk": 0, "local": 2, "embedding": b},
            # in the second chunk the decoder met speaker b first
            {"chunk": 1, "local": 1, "embedding": b + 0.1}, {"chunk": 1, "local": 2, "embedding": a + 0.1}]
    labels = link_speakers(segs, 2, 0.6)
    assert labels[0] == labels[3] and labels[1] == labels[2] and labels[0] != labels[1]
    one = [dict(s, chunk=0) for s in segs[:2]]
    assert link_speakers(one, None, 0.6) == [1, 2]  # one chunk: the decoder's numbers stand


def test_conversation_bad_input_gets_an_answer_or_a_clear_error(tiny_whisper_folder, tmp_path):
    """`transcribe --speakers` on the Whisper model: 8 kHz telephone audio is resampled, a
    clip under 0.1 s and silence give no segments (no hallucinated text), a speaker count
    above the segments is capped, a missing or non-audio file is refused by name."""
    from polyhead.audio import AudioError

    ph = Polyhead.load(saved(whisper_config(tiny_whisper_folder), tmp_path / "m"))
    rng = np.random.default_rng(3)
    sf.write(tmp_path / "tel.wav", (rng.standard_normal(8000 * 5) * 0.1).astype(np.float32), 8000)
    res = transcribe(ph, tmp_path / "tel.wav", num_speakers=9)
    assert res["duration"] == pytest.approx(5.0) and 1 <= len(res["speakers"]) <= 9
    assert all(0 <= s["start"] <= s["end"] <= 5.1 for s in res["segments"])
    sf.write(tmp_path / "blip.wav", np.zeros(800, np.float32), 16000)  # 0.05 s
    assert transcribe(ph, tmp_path / "blip.wav")["segments"] == []
    ph.model.heads["vad"].proj.bias.data.fill_(SILENCE_BIAS)
    sf.write(tmp_path / "quiet.wav", np.zeros(16000 * 40, np.float32), 16000)
    assert transcribe(ph, tmp_path / "quiet.wav", num_speakers=2)["segments"] == []
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(AudioError, match="notes.wav"):
        transcribe(ph, tmp_path / "notes.wav")
    with pytest.raises(AudioError, match="missing.wav"):
        transcribe(ph, tmp_path / "missing.wav")
