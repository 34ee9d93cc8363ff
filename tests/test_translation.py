"""Translation to English as a decoder task (Whisper's <|translate|>): each row's prompt carries
its own language, an English-only model refuses it, analyze returns the translation beside the
transcript from one encoder pass, `transcribe --task translate` writes it, and the official
`openai` client's translations.create works against the server (tiny random models)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from liveserver import serving
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from polyhead.config import Config
from polyhead.data.labels import CHARS
from polyhead.decoding import DecodingOptions
from polyhead.inference.pipeline import Polyhead
from polyhead.model import MultiTaskModel
from polyhead.tasks.speech import DECODER_TASK, TextTargets, decoder_target
from test_decoder_tasks import decoder_losses
from test_whisper import batch
from tiny_whisper import LANGUAGES, make_tiny_whisper

SPEECH_BIAS = 8.0  # the VAD head's bias: every frame speech


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def config(pretrained, multilingual: bool = True, decoder_tasks=None, vad: bool = False) -> Config:
    options = {"dropout": 0.0, "multilingual": multilingual, "language": None if multilingual else "en",
               **({"decoder_tasks": decoder_tasks} if decoder_tasks else {})}
    tasks = {"asr": {"head": {"type": "whisper_decoder", "options": options}, "target": "text", "train_sets": ["x"]}}
    if vad:
        tasks["vad"] = {"head": {"type": "frame", "layer": 1}, "target": "vad", "train_sets": ["x"]}
    return Config.model_validate({
        "encoder": {"name": "whisper", "pretrained": str(pretrained), "whisper_config": {"dropout": 0.0}},
        "tasks": tasks, "vocab": {"text": CHARS}})


def saved(cfg: Config, folder) -> str:
    torch.manual_seed(0)
    model = MultiTaskModel(cfg)
    if "vad" in model.heads:
        model.heads["vad"].proj.bias.data.fill_(SPEECH_BIAS)
    model.save(folder)
    return str(folder)


def parallel_cut(text="Der Hund ist groß.", translation="The dog is big.", language="de") -> MonoCut:
    rec = Recording(id="r", sources=[AudioSource(type="file", channels=[0], source="none.wav")],
                    sampling_rate=16000, num_samples=16000, duration=1.0)
    sup = SupervisionSegment(id="r-0", recording_id="r", start=0.0, duration=1.0, speaker="s", text=text,
                             language=language, custom={"translation": translation, "kind": "parallel"})
    return MonoCut(id="r", start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[sup])


def wav_bytes(seconds=1.5, seed=0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1, 16000, format="WAV")
    return buf.getvalue()


def test_each_row_is_prompted_in_its_own_language(tiny_whisper):
    head = MultiTaskModel(config(tiny_whisper, decoder_tasks=["transcribe", "translate"])).heads["asr"]
    tok = head.tokenizer.convert_tokens_to_ids
    enc = lambda text: head.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    ids, labels = head.encode_texts(["hallo welt", "hello world"], "cpu", ["transcribe", "translate"], ["de", "fr"])
    rows = [[tok("<|startoftranscript|>"), tok("<|de|>"), tok("<|transcribe|>"), tok("<|notimestamps|>")] + enc(" hallo welt"),
            [tok("<|startoftranscript|>"), tok("<|fr|>"), tok("<|translate|>"), tok("<|notimestamps|>")] + enc(" hello world")]
    for i, row in enumerate(rows):
        assert ids[i, :len(row) + 1].tolist() == row + [head.eot]
        assert labels[i][labels[i] != -100].tolist() == row[4:] + [head.eot]  # the prompt is not learnt
    # <|translate|> is Whisper's own token: nothing is added to the vocabulary for it
    assert len(head.tokenizer) == MultiTaskModel(config(tiny_whisper)).heads["asr"].decoder.embed_tokens.num_embeddings


def test_an_english_only_model_cannot_translate(tiny_whisper):
    with pytest.raises(ValueError, match="English-only"):
        MultiTaskModel(config(tiny_whisper, multilingual=False, decoder_tasks=["transcribe", "translate"]))
    head = MultiTaskModel(config(tiny_whisper, multilingual=False)).heads["asr"]
    with pytest.raises(ValueError, match="cannot translate"):
        head.prompt("en", "translate")


def test_translation_rows_learn_the_english_and_only_attention_learns_them(tiny_whisper):
    cut = parallel_cut()
    tagged = cut.with_id("r.translate").with_custom(DECODER_TASK, "translate")
    assert decoder_target(tagged, "translate") == "The dog is big."
    target = TextTargets(CHARS)([cut, tagged])
    assert target.texts == ["Der Hund ist groß.", "The dog is big."]
    assert target.tasks == ["transcribe", "translate"] and target.languages == ["de", "de"]
    assert int(target.lengths[1]) == 0  # CTC spells the speech: a translation row has no CTC target
    torch.manual_seed(0)
    model = MultiTaskModel(config(tiny_whisper, decoder_tasks=["transcribe", "translate"]))
    x, lengths = batch(model, (1.0, 1.0))
    losses = decoder_losses(model, x, lengths, target, steps=25)
    assert losses[-1] < 0.5 * losses[0]


def test_a_decoder_without_ctc_takes_any_letters(tiny_whisper):
    from polyhead.tasks import task_kind

    cfg = config(tiny_whisper)
    cfg.tasks["asr"].head.options["ctc_weight"] = 0.0
    kind = task_kind(cfg, "asr")
    assert kind.check_cut(parallel_cut("Größe über alles."), {"text": CHARS}) is None
    cfg.tasks["asr"].head.options["ctc_weight"] = 0.3  # its CTC branch could not spell "ö"
    assert "outside the vocabulary" in task_kind(cfg, "asr").check_cut(parallel_cut("Größe über alles."), {"text": CHARS})


def test_analyze_translates_from_the_same_encoder_pass(tiny_whisper, tmp_path):
    ph = Polyhead.load(saved(config(tiny_whisper, vad=True), tmp_path / "m"))
    passes = []
    forward = ph.model.forward
    ph.model.forward = lambda *a, **k: passes.append(1) or forward(*a, **k)
    res = ph.analyze(wav_bytes(), translate=True)
    assert len(passes) == 1
    # no language given: the one the decoder detected for the transcript is translated from
    assert isinstance(res["translation"], str) and res["translation_from"] in LANGUAGES
    plain = ph.analyze(wav_bytes())
    assert "translation" not in plain and plain["text"] == res["text"]
    # English speech is its own translation: nothing more is decoded
    english = ph.analyze_features([ph.features(wav_bytes(), decoding=DecodingOptions(language="en"), translate=True)])[0]
    assert english["translation"] == english["text"] and english["translation_from"] == "en"


def test_english_only_models_refuse_translation_everywhere(tiny_whisper, tmp_path):
    from polyhead.cli import main

    folder = saved(config(tiny_whisper, multilingual=False), tmp_path / "en")
    ph = Polyhead.load(folder)
    with pytest.raises(ValueError, match="cannot translate"):
        ph.analyze(wav_bytes(), translate=True)
    with pytest.raises(ValueError, match="cannot translate"):
        ph.check_decoding(DecodingOptions(task="translate"))
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes())
    assert main(["transcribe", str(audio), "--model", folder, "--task", "translate"]) == 2


def test_transcribe_task_translate_writes_the_translation(tiny_whisper, tmp_path):
    from polyhead.cli import main

    folder = saved(config(tiny_whisper, vad=True), tmp_path / "m")
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes())
    out = tmp_path / "out"
    assert main(["transcribe", str(audio), "--model", folder, "--task", "translate", "--output-dir", str(out),
                 "--output-format", "json", "--temperature", "0"]) == 0
    written = json.loads((out / "a.json").read_text())
    expected = Polyhead.load(folder).analyze(wav_bytes(), translate=True)["translation"]
    assert written["text"] == expected and written["language"] == "en"
    assert all(not s["words"] for s in written["segments"])  # a translation's words have no times
    assert main(["transcribe", str(audio), "--model", folder, "--task", "translate", "--word-timestamps"]) == 2


def test_openai_client_translations(tiny_whisper, tmp_path):
    from openai import BadRequestError, OpenAI

    from polyhead.serving import create_app

    ml = create_app(saved(config(tiny_whisper, vad=True), tmp_path / "ml"))
    en = create_app(saved(config(tiny_whisper, multilingual=False, vad=True), tmp_path / "en"))
    with serving(ml) as (url, _), serving(en) as (en_url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        head = ml.app.state.service.model.decoder()
        prompts, logits = [], head.logits

        def first_ids(ids, *args, **kwargs):
            prompts.append(ids[0].tolist())
            return logits(ids, *args, **kwargs)

        head.logits = first_ids
        res = client.audio.translations.create(model="polyhead", file=("a.wav", wav_bytes()),
                                               response_format="verbose_json")
        del head.logits
        assert res.task == "translate" and res.language == "en"
        translate = head.tokenizer.convert_tokens_to_ids("<|translate|>")
        assert any(translate in p for p in prompts)  # the decoder was asked to translate
        model = ml.app.state.service.model
        assert res.text == model.analyze(wav_bytes(), translate=True)["translation"]
        assert client.audio.translations.create(model="polyhead", file=("a.wav", wav_bytes())).text == res.text
        import httpx

        assert httpx.get(f"{url}/health").json()["translates"] is True
        assert httpx.get(f"{en_url}/health").json()["translates"] is False
        analysed = httpx.post(f"{url}/v1/audio/analyze", files={"file": ("a.wav", wav_bytes())},
                              data={"translate": "true"}).json()
        assert analysed["translation"] == res.text
        en_client = OpenAI(base_url=f"{en_url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(BadRequestError, match="cannot translate"):
            en_client.audio.translations.create(model="polyhead", file=("a.wav", wav_bytes()))


def test_evaluate_scores_languages_lid_token_and_translations(tiny_corpus, tiny_whisper):
    from polyhead.evaluation.evaluate import evaluate_model
    from polyhead.evaluation.report import flatten

    folder, _ = tiny_corpus
    cfg = config(tiny_whisper, decoder_tasks=["transcribe", "translate"]).model_copy(update={"corpus": str(folder)})
    model = MultiTaskModel(cfg).eval()
    res = evaluate_model(model, folder, limit=3)  # translate: its sets are scored by default
    assert set(res) >= {"translate_test", "codeswitch_test"}
    scored = res["translate_test"]
    by_language = scored["asr"]["by_language"]
    assert by_language and scored["asr"]["wer"] == pytest.approx(np.mean([r["wer"] for r in by_language.values()]))
    assert 0 <= scored["asr/language"]["language_accuracy"] <= 1
    assert scored["asr/translate"]["n"] == 3 and 0 <= scored["asr/translate"]["chrf"] <= 100
    row = flatten(res, model)
    assert {"WER (de fr es it nl)", "BLEU", "chrF", "code-switch WER"} <= set(row)
    # an English-only decoder is not asked to read foreign speech
    english = MultiTaskModel(config(tiny_whisper, multilingual=False)).eval()
    assert evaluate_model(english, folder, sets=["translate_test"], limit=2) == {}
