"""Task tokens in Whisper's decoder head (slu, speakers, language), their targets from the
corpus labels, mixed-task training and the decoder tasks' scoring, on a tiny random Whisper."""

from __future__ import annotations

import pytest
import torch
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from polyhead.config import Config
from polyhead.metrics import slot_f1
from polyhead.model import MultiTaskModel
from polyhead.model.decoder_tasks import parse_slu, parse_speakers, slu_text, speakers_text
from polyhead.data.batching import Collator, FeatureCache
from polyhead.data.labels import CHARS
from polyhead.data.windows import speaker_windows
from polyhead.tasks.speech import DECODER_TASK, TextTargets, decoder_target
from test_whisper import batch, text_target
from tiny_whisper import make_tiny_whisper

TASKS = ["transcribe", "slu", "speakers", "language"]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def config(pretrained, decoder_tasks=None) -> Config:
    options = {"dropout": 0.0, **({"decoder_tasks": decoder_tasks} if decoder_tasks else {})}
    return Config.model_validate({
        "encoder": {"name": "whisper", "pretrained": str(pretrained), "whisper_config": {"dropout": 0.0}},
        "tasks": {"asr": {"head": {"type": "whisper_decoder", "options": options}, "target": "text",
                          "train_sets": ["x"]}},
        "vocab": {"text": CHARS}})


def cut_with(segments, duration, cut_id="rec") -> MonoCut:
    """A cut of a (never read) recording with (start, end, speaker, text, custom) segments."""
    rec = Recording(id=cut_id, sources=[AudioSource(type="file", channels=[0], source="none.wav")],
                    sampling_rate=16000, num_samples=int(duration * 16000), duration=duration)
    sups = [SupervisionSegment(id=f"{cut_id}-{i}", recording_id=cut_id, start=a, duration=b - a, speaker=spk,
                               text=text, language="en", custom=custom)
            for i, (a, b, spk, text, custom) in enumerate(segments)]
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, recording=rec, supervisions=sups)


def test_task_tokens_are_added_saved_and_reloaded(tiny_whisper, tmp_path):
    plain = MultiTaskModel(config(tiny_whisper)).heads["asr"]
    model = MultiTaskModel(config(tiny_whisper, TASKS)).eval()
    head = model.heads["asr"]
    new = ["<|slu|>", "<|speakers|>"] + [f"<|spk{i}|>" for i in range(1, head.max_speakers + 1)]
    ids = head.tokenizer.convert_tokens_to_ids(new)
    old_rows = plain.decoder.embed_tokens.num_embeddings
    assert "<|slu|>" not in plain.tokenizer.get_vocab()  # the default adds nothing
    assert ids == list(range(old_rows, old_rows + len(new)))
    weight = head.decoder.embed_tokens.weight
    assert weight.shape[0] == len(head.tokenizer) == old_rows + len(new)
    torch.testing.assert_close(weight[:old_rows], plain.decoder.embed_tokens.weight)
    transcribe = weight[head.tokenizer.convert_tokens_to_ids("<|transcribe|>")]
    spread = (weight[ids] - transcribe).norm(dim=-1) / transcribe.norm()
    assert bool((spread > 0).all()) and bool((spread < 1).all())  # near <|transcribe|>, yet distinct
    assert head.prompt(task="slu")[1] == ids[0]  # English-only: <|sot|> <|slu|> <|notimestamps|>

    model.save(tmp_path / "ckpt")
    loaded = MultiTaskModel.load(tmp_path / "ckpt")
    again = loaded.heads["asr"]
    assert again.tokenizer.convert_tokens_to_ids(new) == ids
    torch.testing.assert_close(again.decoder.embed_tokens.weight, weight)
    x, lengths = batch(model)
    with torch.no_grad():
        a = head.generate(**_memory(model, x, lengths), task="speakers", max_new_tokens=5)
        b = again.generate(**_memory(loaded, x, lengths), task="speakers", max_new_tokens=5)
    assert a == b


def _memory(model, x, lengths) -> dict:
    out = model(x, lengths, ["asr"])["asr"]
    return {"memory": out["memory"], "lengths": out["lengths"]}


def test_unknown_decoder_task_is_refused(tiny_whisper):
    with pytest.raises(ValueError, match="unknown"):
        MultiTaskModel(config(tiny_whisper, ["transcribe", "summarise"]))


def test_targets_from_labels():
    assert slu_text("book_table", {"party_size": "two", "time": "seven  am"}) == \
        "book_table | party_size = two ; time = seven am"
    assert slu_text("volume_up", {}) == "volume_up"
    assert speakers_text([("bob", "Hi there."), ("ann", "Hello."), ("ann", "Yes."), ("bob", "Bye.")]) == \
        "<|spk1|> Hi there. <|spk2|> Hello. Yes. <|spk1|> Bye."
    command = cut_with([(0.0, 2.0, "a", "Wake me up at seven am",
                         {"intent": "set_alarm", "slots": {"time": "seven am"}})], 2.0)
    assert decoder_target(command, "slu") == "set_alarm | time = seven am"
    assert decoder_target(command, "language") == "en"
    assert decoder_target(command, "transcribe") == "Wake me up at seven am"
    # turns in order of start time, overlaps included (serialized output training)
    talk = cut_with([(0.0, 2.0, "b", "One.", None), (1.5, 3.0, "a", "Two.", None),
                     (3.5, 4.0, "b", "Three.", None)], 4.0)
    assert decoder_target(talk, "speakers") == "<|spk1|> One. <|spk2|> Two. <|spk1|> Three."


def test_speaker_windows_never_split_a_segment_or_an_overlap():
    talk = cut_with([(0.5, 3.0, "a", "one", None), (2.5, 6.0, "b", "two", None),  # overlapping pair
                     (7.0, 9.0, "a", "three", None), (9.5, 12.5, "c", "four", None),
                     (13.0, 30.0, "b", "too long", None), (31.0, 32.0, "a", "five", None)], 33.0)
    windows = speaker_windows(talk, 10.0)
    spans = [(round(w.start, 3), round(w.duration, 3)) for w in windows]
    assert spans == [(0.5, 8.5), (9.5, 3.0), (31.0, 1.0)]
    assert [[s.text for s in w.supervisions] for w in windows] == [["one", "two", "three"], ["four"], ["five"]]
    assert [s.start for s in windows[0].supervisions] == [0.0, 2.0, 6.5]  # relative to the window
    assert windows[0].id == "rec_0000500"
    assert decoder_target(windows[0], "speakers") == "<|spk1|> one <|spk2|> two <|spk1|> three"


def test_decoder_sequences_for_each_task(tiny_whisper):
    head = MultiTaskModel(config(tiny_whisper, TASKS)).heads["asr"]
    head.multilingual = True  # the tiny model has Whisper's language tokens
    tok = head.tokenizer.convert_tokens_to_ids
    enc = lambda text: head.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    ids, labels = head.encode_texts(["hello world", "set_alarm | time = seven am", "<|spk1|> hi <|spk2|> hello", "de"],
                                    "cpu", ["transcribe", "slu", "speakers", "language"])
    prompt = lambda task: [tok("<|startoftranscript|>"), tok("<|en|>"), tok(task), tok("<|notimestamps|>")]  # noqa: E731
    rows = [prompt("<|transcribe|>") + enc(" hello world"),
            prompt("<|slu|>") + enc(" set_alarm | time = seven am"),
            prompt("<|speakers|>") + [tok("<|spk1|>")] + enc(" hi") + [tok("<|spk2|>")] + enc(" hello"),
            [tok("<|startoftranscript|>"), tok("<|de|>")]]
    for i, row in enumerate(rows):
        end = [] if i == 3 else [head.eot]
        assert ids[i, :len(row) + len(end)].tolist() == row + end
        learnt = labels[i][labels[i] != -100].tolist()
        assert learnt == (row[4:] + end if i < 3 else [tok("<|de|>")])


def decoder_losses(model, x, lengths, target, steps: int, lr: float = 3e-3) -> list[float]:
    """The "asr" decoder head's loss at each of ``steps`` Adam steps on one batch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.heads["asr"].loss(model(x, lengths, ["asr"])["asr"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_mixed_decoder_tasks_train_and_the_loss_falls(tiny_whisper):
    torch.manual_seed(0)
    model = MultiTaskModel(config(tiny_whisper, TASKS))
    model.heads["asr"].multilingual = True
    x, lengths = batch(model, (1.5, 1.2, 2.0, 1.0))
    target = text_target(["hello world", "set an alarm", "hi there", "guten tag"])
    target.texts = ["hello world", "set_alarm | time = seven am", "<|spk1|> hi <|spk2|> there", "de"]
    target.tasks = ["transcribe", "slu", "speakers", "language"]
    losses = decoder_losses(model, x, lengths, target, steps=12)
    assert losses[-1] < 0.5 * losses[0]
    grad_rows = model.heads["asr"].decoder.embed_tokens.weight.grad
    assert grad_rows is not None and grad_rows[model.heads["asr"].speaker_ids[0]].abs().sum() > 0


def test_collator_builds_each_rows_target(tiny_whisper):
    model = MultiTaskModel(config(tiny_whisper, TASKS))
    command = cut_with([(0.0, 1.0, "a", "Call Ann", {"intent": "call_contact", "slots": {"contact": "ann"}})], 1.0)
    rows = [command, command.with_id("rec.slu").with_custom(DECODER_TASK, "slu")]

    class Silence(FeatureCache):
        def get(self, cut):
            return model.encoder.features(torch.zeros(int(cut.duration * 16000)).numpy())

    target = Collator({"text": TextTargets(model.config.vocab["text"])}, Silence(model.encoder.features))(rows).targets["text"]
    assert target.texts == ["Call Ann", "call_contact | contact = ann"] and target.tasks == ["transcribe", "slu"]
    assert target.lengths.tolist() == [len("call ann"), 0]  # CTC learns the transcribe row only


def test_slu_parse_and_slot_f1():
    assert parse_slu("book_table | party_size = two ; time = seven am") == \
        ("book_table", {"party_size": "two", "time": "seven am"})
    assert parse_slu(" volume_up ") == ("volume_up", {})
    assert parse_slu("set_alarm | time = ; = seven ; time = six am ; time = five am") == \
        ("set_alarm", {"time": "six am"})  # malformed slots dropped, the first value kept
    assert parse_slu("garbage") == ("garbage", {})
    refs = [{"time": "seven am"}, {"party_size": "two", "time": "six pm"}, {}]
    hyps = [{"time": "seven am"}, {"party_size": "three", "time": "six pm", "date": "today"}, {}]
    assert slot_f1(refs, hyps) == pytest.approx(2 * 2 / (3 + 4))
    assert slot_f1([{}], [{}]) is None
    assert parse_speakers("hm <|spk1|> hi there<|spk2|> hello <|spk1|>") == [(1, "hm"), (1, "hi there"), (2, "hello")]


def test_trainer_mixes_decoder_tasks_and_evaluate_scores_them(tiny_corpus, tiny_whisper, tmp_path):
    """A few steps of the mixed stream on the tiny corpus, then `polyhead evaluate`."""
    import json

    from polyhead.cli import main
    from polyhead.training.trainer import Trainer

    folder, _ = tiny_corpus
    cfg = config(tiny_whisper, ["transcribe", "slu", "speakers"]).model_copy(update={"corpus": str(folder), "vocab": {}})
    cfg.tasks["asr"].train_sets = ["speech_train"]
    cfg.tasks["asr"].decoder_task_sets = {"speakers": ["conversations_train"]}
    cfg.train.steps, cfg.train.eval_every, cfg.train.max_utterance, cfg.train.spec_augment = 2, 2, 30.0, False
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    cuts = trainer.streams["asr"].cuts
    tasks = {(c.custom or {}).get(DECODER_TASK, "transcribe") for c in cuts}
    assert tasks == {"transcribe", "slu", "speakers"}
    trainer.fit()
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "metrics.json").read_text())["results"]
    assert set(results["conversations_test"]["asr/speakers"]) == {"cpwer", "der", "windows"}
    slu = [r["asr/slu"] for r in results.values() if "asr/slu" in r]
    assert slu and 0.0 <= slu[0]["intent_accuracy"] <= 1.0 and 0.0 <= slu[0]["free_intent_accuracy"] <= 1.0
    # analyze gives the decoder's intent and slots beside the transcript
    from polyhead.inference import load

    wav = next((folder / "audio" / "speech_test").rglob("*.wav"))
    res = load(tmp_path / "run").analyze(wav)
    # the intent from the trained set (closed), scored by the decoder
    assert set(res["slu"]) == {"intent", "slots", "intent_logprob"} and isinstance(res["slu"]["slots"], dict)
    assert res["slu"]["intent"] in trainer.model.config.vocab["intent"]


def test_closed_slu_picks_a_trained_intent_and_writes_its_slots(tiny_whisper):
    """The decoder trained on two commands: the closed-set answer names one of the given
    intents (the decoder's own best-scored one), and the slots follow it where it has some."""
    torch.manual_seed(0)
    model = MultiTaskModel(config(tiny_whisper, ["transcribe", "slu"]))
    head = model.heads["asr"]
    x, lengths = batch(model, (1.5, 1.2))
    target = text_target(["set an alarm for seven", "play some music"])
    target.texts, target.tasks = ["set_alarm | time = seven am", "play_music"], ["slu", "slu"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = head.loss(model(x, lengths, ["asr"])["asr"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    intents = ["play_music", "set_alarm", "set_timer", "weather_query"]
    with torch.no_grad():
        out = model(x, lengths, ["asr"])["asr"]
        answers = head.closed_slu(out["memory"], out["lengths"], intents)
    assert [parse_slu(a["text"]) for a in answers] == [("set_alarm", {"time": "seven am"}), ("play_music", {})]
    assert all(a["intent"] in intents and a["intent_logprob"] <= 0 for a in answers)
