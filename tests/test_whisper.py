"""The Whisper encoder, its decoder head and their features, on a tiny random Whisper."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from polyhead.config import Config
from polyhead.decoding.search import rescored
from polyhead.features import WhisperLogMel
from polyhead.model import MultiTaskModel
from polyhead.model.heads import HeadInput
from polyhead.data.labels import CHARS
from polyhead.tasks.speech import TextTarget
from tiny_whisper import make_tiny_whisper


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def config(pretrained, **head_options) -> Config:
    return Config.model_validate({
        "encoder": {"name": "whisper", "pretrained": str(pretrained), "whisper_config": {"dropout": 0.0}},
        "tasks": {"asr": {"head": {"type": "whisper_decoder", "options": {"dropout": 0.0, **head_options}},
                          "target": "text", "train_sets": ["x"]},
                  "speaker": {"head": {"type": "speaker", "layer": 1}, "target": "speaker", "train_sets": ["x"]}},
        "vocab": {"text": CHARS, "speaker": ["a", "b"]}})


def batch(model, seconds=(2.0, 1.2), seed=0):
    rng = np.random.default_rng(seed)
    feats = [torch.from_numpy(model.encoder.features((rng.standard_normal(int(s * 16000)) * 0.1).astype(np.float32)))
             for s in seconds]
    x = torch.zeros(len(feats), max(len(f) for f in feats), feats[0].shape[1])
    for i, f in enumerate(feats):
        x[i, :len(f)] = f
    return x, torch.tensor([len(f) for f in feats])


def text_target(texts):
    ids = [[CHARS.index(c) + 1 for c in t.lower() if c in CHARS] for t in texts]
    padded = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for i, s in enumerate(ids):
        padded[i, :len(s)] = torch.tensor(s)
    return TextTarget(padded, torch.tensor([len(s) for s in ids]), texts)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers(n_mels):
    from transformers import WhisperFeatureExtractor

    wave = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    ref = WhisperFeatureExtractor(feature_size=n_mels)(wave, sampling_rate=16000, return_tensors="np",
                                                       padding="longest").input_features[0]
    ours = WhisperLogMel(n_mels)(wave)
    assert ours.shape == (300, n_mels)
    np.testing.assert_allclose(ours, ref.T, atol=1e-5)


def test_padding_does_not_change_an_utterance(tiny_whisper):
    model = MultiTaskModel(config(tiny_whisper)).eval()
    x, lengths = batch(model)
    with torch.no_grad():
        out_both = model(x, lengths)["asr"]
        out_alone = model(x[1:, :int(lengths[1])], lengths[1:])["asr"]
        both, alone = out_both["memory"], out_alone["memory"]
        dec_both = model.heads["asr"].generate(both, out_both["lengths"], max_new_tokens=6)
        dec_alone = model.heads["asr"].generate(alone, out_alone["lengths"], max_new_tokens=6)
    n = alone.shape[1]
    torch.testing.assert_close(both[1, :n], alone[0], atol=1e-5, rtol=1e-4)
    assert dec_both[1]["tokens"] == dec_alone[0]["tokens"]


def test_explicit_split_hides_the_other_dimensions_from_the_decoder(tiny_whisper):
    cfg = config(tiny_whisper)
    width = MultiTaskModel(cfg).encoder.dim
    cfg.tasks["asr"].head.dims = (width // 4, width)
    model = MultiTaskModel(cfg).eval()
    x, lengths = batch(model)
    target = text_target(["hello there", "hi"])
    out = model(x, lengths)["asr"]
    assert out["memory"].shape[-1] == width and out["logits"].shape[-1] == len(CHARS) + 1
    assert torch.all(out["memory"][..., : width // 4] == 0)
    # the speaker's quarter gets no gradient from the speech loss
    states = model.hidden_states(x, lengths)[0][-1].detach().requires_grad_(True)
    inp = HeadInput(x=states, lengths=out["lengths"], frames_per_second=out["frames_per_second"])
    model.heads["asr"].loss(model.heads["asr"](inp), target).backward()
    assert states.grad[..., : width // 4].abs().sum() == 0
    assert states.grad[..., width // 4:].abs().sum() > 0


def test_cached_greedy_equals_full_recompute(tiny_whisper):
    model = MultiTaskModel(config(tiny_whisper)).eval()
    head = model.heads["asr"]
    x, lengths = batch(model)
    with torch.no_grad():
        out = model(x, lengths)["asr"]
        cached = head.generate(out["memory"], out["lengths"], max_new_tokens=8)
        for i, res in enumerate(cached):
            ids = torch.tensor([head.prompt()])
            mem, ml = out["memory"][i:i + 1], out["lengths"][i:i + 1]
            for _ in range(len(res["tokens"])):
                logits = head._suppress(head.logits(ids, mem, ml)[:, -1])
                ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
            assert ids[0, len(head.prompt()):].tolist()[:len(res["tokens"])] == res["tokens"]


def test_decoder_learns_a_sentence_and_writes_it_back(tiny_whisper):
    torch.manual_seed(0)
    model = MultiTaskModel(config(tiny_whisper, ctc_weight=0.3))
    x, lengths = batch(model, (1.5,))
    target = text_target(["hello world"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model.heads["asr"].loss(model(x, lengths, ["asr"])["asr"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x, lengths, ["asr"])["asr"]
        assert model.heads["asr"].transcribe(out) == ["hello world"]
        # beam search finds it too (attention scores only: no vocabulary, no CTC rescoring)
        assert model.heads["asr"].transcribe(out, None, beam_size=3) == ["hello world"]
        res = model.heads["asr"].generate(out["memory"], out["lengths"])[0]
    assert -1.0 < res["avg_logprob"] <= 0.0


def test_checkpoint_loads_without_the_pretrained_source(tiny_whisper, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_whisper, source)
    model = MultiTaskModel(config(source)).eval()
    assert model.config.encoder.whisper_config["d_model"] == 32  # the resolved config is stored
    model.save(tmp_path / "ckpt")
    shutil.rmtree(source)
    assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer.json").is_file()
    loaded = MultiTaskModel.load(tmp_path / "ckpt")
    x, lengths = batch(model)
    with torch.no_grad():
        a, b = model(x, lengths), loaded(x, lengths)
    torch.testing.assert_close(a["asr"]["memory"], b["asr"]["memory"])
    torch.testing.assert_close(a["speaker"]["embedding"], b["speaker"]["embedding"])


def test_heads_read_lower_layers_without_running_the_rest(tiny_whisper):
    model = MultiTaskModel(config(tiny_whisper)).eval()
    calls = []
    for i, layer in enumerate(model.encoder.layers):
        layer.register_forward_hook(lambda *_a, i=i: calls.append(i))
    x, lengths = batch(model)
    with torch.no_grad():
        model(x, lengths, ["speaker"])
    assert calls == [0]  # layer 1 only: the speaker head reads it


def test_freezing_front_end_and_layers(tiny_whisper):
    cfg = config(tiny_whisper)
    cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"freeze_front_end": True,
                                                                            "freeze_layers": 1})})
    enc = MultiTaskModel(cfg).encoder
    assert not any(p.requires_grad for p in enc.conv1.parameters())
    assert not any(p.requires_grad for p in enc.layers[0].parameters())
    assert all(p.requires_grad for p in enc.layers[1].parameters())


def test_lr_scales_make_groups(tiny_whisper):
    from polyhead.training.trainer import param_groups

    model = MultiTaskModel(config(tiny_whisper))
    groups = param_groups(model, 1e-3, {"encoder": 0.1, "heads.asr.decoder": 0.01})
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert set(by_lr) == {1e-3, 1e-4, 1e-5}
    assert id(model.heads["asr"].ctc.weight) in by_lr[1e-3]
    assert id(model.encoder.conv1.weight) in by_lr[1e-4]
    assert id(model.heads["asr"].decoder.embed_tokens.weight) in by_lr[1e-5]
    # a branched encoder's task copies are pretrained layers too: they move with the encoder
    cfg = config(tiny_whisper)
    cfg.shared_layers = 1
    branched = MultiTaskModel(cfg)
    groups = param_groups(branched, 1e-3, {"encoder": 0.1})
    slow = {id(p) for g in groups if g["lr"] == 1e-4 for p in g["params"]}
    assert all(id(p) in slow for p in branched.branches.parameters())


def test_input_longer_than_whisper_window_is_refused(tiny_whisper):
    model = MultiTaskModel(config(tiny_whisper))
    x = torch.zeros(1, 3002, 80)
    with pytest.raises(ValueError, match="at most 30 s per pass"):
        model(x, torch.tensor([3002]))


def test_forced_alignment_gives_word_times():
    from polyhead.ctc import ctc_forced_align, word_times

    path = [0, 3, 3, 0, 4, 1, 4, 3, 0]  # blank a a blank b space b a blank
    logp = np.full((len(path), len(CHARS) + 1), -10.0)
    logp[np.arange(len(path)), path] = -0.01
    assert ctc_forced_align(logp, [3, 4, 1, 4, 3]) == [(1, 2), (4, 4), (5, 5), (6, 6), (7, 7)]
    words = word_times("Ab, ba!", logp, CHARS, fps=50.0)
    assert [w["word"] for w in words] == ["ab", "ba"]
    assert words[0]["start"] == 0.02 and words[1]["end"] == 0.16
    assert ctc_forced_align(logp[:3], [3, 4, 1, 4, 3]) is None  # too few frames


def test_whisper_demo_config_trains_evaluates_and_analyses(tiny_corpus, tiny_whisper, tmp_path):
    """The demo recipe end to end on the tiny corpus, with the tiny random Whisper."""
    from polyhead.cli import main
    from polyhead.inference import load

    folder, _ = tiny_corpus
    run = tmp_path / "run"
    assert main(["train", "--config", "demo", "--run", str(run), f"corpus={folder}",
                 f"encoder.pretrained={tiny_whisper}", "train.steps=3", "train.eval_every=3",
                 "tasks.speaker.head.layer=1", "tasks.lid.head.layer=2", "tasks.vad.head.layer=1",
                 "train.time_budget_s=null", "tasks.speaker.train_sets=[speaker_train]"]) == 0
    assert (run / "best" / "tokenizer" / "tokenizer.json").is_file()
    assert main(["evaluate", str(run)]) == 0
    wav = next((folder / "audio" / "speech_test").rglob("*.wav"))
    res = load(run).analyze(wav)
    assert isinstance(res["text"], str) and "avg_logprob" in res and "language" in res
    assert "segments" in res and len(res["speaker_embedding"]) == 192
    long = next((folder / "audio" / "vad_test").glob("*.wav"))
    with pytest.raises(ValueError, match="longer than this model's 30 s window"):
        load(run).analyze(long)
    # the layer probe shows the pretrained Whisper the run started from beside the trained one
    from polyhead.evaluation.probe import layer_probe

    probe = layer_probe(run, set_name="speaker_test")
    assert probe["pretrained_from"] == str(tiny_whisper)
    assert len(probe["pretrained"]) == len(probe["trained"]) == 3  # front end + 2 layers


def test_a_looping_decoder_stops_at_what_the_audio_can_hold(tiny_whisper):
    from polyhead.decoding.options import MAX_TOKENS_PER_SECOND, MIN_TOKEN_ALLOWANCE

    model = MultiTaskModel(config(tiny_whisper)).eval()
    head = model.heads["asr"]
    suppress = head._suppress
    # an end token that never comes: the decoder would loop to max_new_tokens
    head._suppress = lambda logits: suppress(logits).index_fill_(-1, torch.tensor([head.eot]), -float("inf"))
    x, lengths = batch(model, (1.0, 0.5))
    with torch.no_grad():
        out = model(x, lengths, ["asr"])["asr"]
        res = head.generate(out["memory"], out["lengths"], max_new_tokens=60)
    assert [len(r["tokens"]) for r in res] == [MIN_TOKEN_ALLOWANCE + int(s * MAX_TOKENS_PER_SECOND) for s in (1.0, 0.5)]


def test_joint_rescoring_prefers_what_ctc_can_align(tiny_whisper):
    """Attention alone prefers the shorter hypothesis; CTC, sure of every character of the
    longer one, overrules it (weight 0.3)."""
    model = MultiTaskModel(config(tiny_whisper, ctc_weight=0.3)).eval()
    head = model.heads["asr"]
    path = [0] + [CHARS.index(c) + 1 for c in "hello world"] + [0]
    ctc_logits = torch.full((len(path), len(CHARS) + 1), -20.0)
    ctc_logits[torch.arange(len(path)), torch.tensor(path)] = 0.0
    full = head.tokenizer.encode(" hello world", add_special_tokens=False)
    short = head.tokenizer.encode(" hello", add_special_tokens=False)
    scores = {name: rescored(head, tokens, att, ctc_logits, CHARS, head.ctc_weight)
              for name, tokens, att in (("full", full, -2.0), ("short", short, -1.0))}
    assert scores["full"] > scores["short"]
    assert rescored(head, short, -1.0, None, CHARS, 0.3) > rescored(head, full, -2.0, None, CHARS, 0.3)


def test_the_decoder_follows_the_encoder_into_bf16(tiny_whisper):
    """The teacher-forced decoder runs in the head's loss, outside the trainer's autocast: it
    runs in bf16 when the encoder's output came in bf16 (precision=bf16), in fp32 otherwise,
    and its loss is fp32 either way."""
    torch.manual_seed(0)
    model = MultiTaskModel(config(tiny_whisper, ctc_weight=0.3))
    head = model.heads["asr"]
    seen = []
    for m in head.decoder.layers.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    x, lengths = batch(model, (1.5,))
    target = text_target(["hello world"])
    for autocast, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x, lengths, ["asr"])["asr"]
        loss = head.loss(out, target)
        assert seen and set(seen) == {dtype}
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()


def test_non_speech_tokens_are_never_written(tiny_whisper):
    """The model's own suppress list (Whisper's non-speech captions) travels in the checkpoint's
    Whisper config and is never decoded, as faster-whisper decodes."""
    cfg = config(tiny_whisper)
    cfg.encoder.whisper_config["suppress_tokens"] = [5, 7, 99999]  # out of the vocabulary: ignored
    model = MultiTaskModel(cfg).eval()
    head = model.heads["asr"]
    assert head.non_speech == [5, 7]
    logp = head.next_logp(torch.zeros(1, head.config.vocab_size))
    assert torch.isinf(logp[0, [5, 7]]).all() and torch.isfinite(logp[0, :5]).all()
