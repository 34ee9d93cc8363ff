"""Forgetting control (training/retention.py), the retention sets and Whisper's normaliser, on
the tiny corpus and the tiny random Whisper: each strategy trains, saves, reloads and, where
export applies, exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from polyhead.config import load_config
from polyhead.model import MultiTaskModel
from tiny_whisper import make_tiny_whisper


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def _config(corpus, whisper, strategies, *extra):
    return load_config("bench/base", [
        f"corpus={corpus}", f"encoder.pretrained={whisper}", "train.steps=2", "train.eval_every=2",
        "train.heads_only_steps=0", "train.precision=fp32", "tasks.speaker.train_sets=[speaker_train]",
        f"train.retention={json.dumps(strategies)}", *extra])


def _train(corpus, whisper, tmp_path, strategies, *extra):
    from polyhead.training.trainer import train

    run = tmp_path / "run"
    summary = train(_config(corpus, whisper, strategies, *extra), run, progress=False)
    return run, summary


def _pretrained_state(whisper):
    from safetensors.torch import load_file

    return load_file(str(whisper / "model.safetensors"))


def test_frozen_keeps_the_pretrained_weights_exactly(tiny_corpus, tiny_whisper, tmp_path):
    run, _ = _train(tiny_corpus[0], tiny_whisper, tmp_path, [{"name": "frozen"}])
    model = MultiTaskModel.load(run / "last")
    start = _pretrained_state(tiny_whisper)
    q = "encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[q], start["model." + q])
    d = "heads.asr.decoder.layers.0.fc1.weight"
    assert torch.equal(model.state_dict()[d], start["model.decoder.layers.0.fc1.weight"])
    # the new heads are what trained
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss/speaker"]) for r in log if "loss/speaker" in r)


def test_lora_trains_only_adapters_reloads_and_merges_for_export(tiny_corpus, tiny_whisper, tmp_path):
    from polyhead.model.adapters import merge_lora

    run, _ = _train(tiny_corpus[0], tiny_whisper, tmp_path, [{"name": "lora", "options": {"rank": 4}}])
    model = MultiTaskModel.load(run / "last")
    names = list(model.state_dict())
    assert any(".lora_A." in n for n in names)
    start = _pretrained_state(tiny_whisper)
    base = "encoder.layers.0.self_attn.q_proj.base_layer.weight"
    assert torch.equal(model.state_dict()[base], start["model.encoder.layers.0.self_attn.q_proj.weight"])
    adapters = [v for n, v in model.state_dict().items() if ".lora_B." in n]
    assert any(v.abs().sum() > 0 for v in adapters), "the adapters did not move"
    # merging gives the same outputs with plain layer names
    feats = torch.randn(1, 200, 80)
    lengths = torch.tensor([200])
    with torch.no_grad():
        before = model(feats, lengths, ["asr"])["asr"]["memory"]
        assert merge_lora(model) > 0
        after = model(feats, lengths, ["asr"])["asr"]["memory"]
    assert torch.allclose(before, after, atol=1e-4)
    assert not any(".lora_" in n or "base_layer" in n for n in model.state_dict())


def test_lora_export_is_merged(tiny_corpus, tiny_whisper, tmp_path):
    from polyhead.inference.export import export_model as export

    run, _ = _train(tiny_corpus[0], tiny_whisper, tmp_path, [{"name": "lora", "options": {"rank": 4}}])
    out = tmp_path / "int8"
    pytest.importorskip("onnx")
    export(run, "onnx", out)
    cfg = json.loads((out / "config.json").read_text())
    assert all(r["name"] != "lora" for r in cfg["train"]["retention"])


def test_distillation_kl_is_zero_for_the_teacher_and_positive_otherwise():
    from polyhead.training.retention import distillation_kl

    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]])
    assert distillation_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits + torch.randn_like(logits), logits, labels).item() > 0
    # a student with extra task tokens is compared on the shared vocabulary
    grown = torch.cat([logits, torch.randn(2, 5, 2)], -1)
    assert distillation_kl(grown, logits, labels).item() >= 0


def test_distill_trains_with_a_padded_teacher(tiny_corpus, tiny_whisper, tmp_path):
    run, summary = _train(tiny_corpus[0], tiny_whisper, tmp_path,
                          [{"name": "distill", "options": {"weight": 1.0, "teacher_window": True}}])
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any("retention/distill" in r for r in log) or summary["steps"] == 2
    MultiTaskModel.load(run / "best")


def test_replay_pseudo_labels_are_cached_and_mixed_in(tiny_corpus, tiny_whisper, tmp_path):
    run, _ = _train(tiny_corpus[0], tiny_whisper, tmp_path, [{"name": "replay", "options": {"weight": 0.5}}],
                    "train.log_every=1")
    assert not (tiny_corpus[0] / "pseudo_labels").exists()  # the corpus is never written to
    cache = next((run / "pseudo_labels").glob("replay_train.*.json"))
    labels = json.loads(cache.read_text())
    assert len(labels) >= 1
    MultiTaskModel.load(run / "best")


def test_interpolation_chooses_on_retention_dev_and_rewrites_best(tiny_corpus, tiny_whisper, tmp_path):
    run, summary = _train(tiny_corpus[0], tiny_whisper, tmp_path,
                          [{"name": "none"}, {"name": "interpolate", "options": {"grid": [0.0, 0.5, 1.0], "dev_limit": 3}}])
    record = json.loads((run / "interpolation.json").read_text())
    assert record["alpha"] in (0.0, 0.5, 1.0)
    assert [r["alpha"] for r in record["search"]] == [0.0, 0.5, 1.0]
    # chosen on the clean retention dev set and its telephone copy, each against the pretrained model
    assert set(record["pretrained_retention_dev_wer"]) == {"retention_dev", "retention_tel_dev"}
    assert all(set(r["retention"]) == {"retention_dev", "retention_tel_dev"} for r in record["search"])
    ok = [r for r in record["search"]
          if all(r["retention"][k] <= v for k, v in record["pretrained_retention_dev_wer"].items())]
    if ok:  # the constraint on both channels, then the best in-domain WER
        assert record["alpha"] == min(ok, key=lambda r: (r["in_domain"], -r["alpha"]))["alpha"]
    assert summary["retention"]["interpolate"]["alpha"] == record["alpha"]
    best = MultiTaskModel.load(run / "best")
    last = MultiTaskModel.load(run / "last")
    start = _pretrained_state(tiny_whisper)
    name = "encoder.layers.0.fc1.weight"
    a = record["alpha"]
    expected = start["model." + name] + a * (last.state_dict()[name] - start["model." + name])
    assert torch.allclose(best.state_dict()[name], expected, atol=1e-5)
    # finishing again (a resumed, finished run) does not interpolate twice
    from types import SimpleNamespace

    from polyhead.config import read_config_json
    from polyhead.training.retention import Interpolate

    weights = (run / "best" / "model.safetensors").read_bytes()
    again = SimpleNamespace(config=read_config_json(run / "config.json"), model=best, run_dir=run,
                            device=torch.device("cpu"))
    assert Interpolate(grid=[0.5], dev_limit=3).finish(again)["alpha"] == a
    assert (run / "best" / "model.safetensors").read_bytes() == weights


def test_interpolation_margin_and_a_corpus_without_the_telephone_copy(tiny_corpus, tiny_whisper, tmp_path, caplog):
    """A margin the search cannot meet falls back to the lowest mean retention WER; an older
    corpus without retention_tel_dev is chosen on the clean set alone, saying so."""
    import logging
    import shutil
    from types import SimpleNamespace

    from polyhead.training.retention import Interpolate

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus[0], corpus)
    for f in (corpus / "manifests").glob("retention_tel_dev*"):
        f.unlink()
    run, _ = _train(corpus, tiny_whisper, tmp_path, [{"name": "none"}])
    from polyhead.config import read_config_json

    trainer = SimpleNamespace(config=read_config_json(run / "config.json"), model=MultiTaskModel.load(run / "best"),
                              run_dir=run, device=torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        record = Interpolate(grid=[0.0, 1.0], dev_limit=3, margin=0.999).finish(trainer)
    assert "no retention_tel_dev" in caplog.text
    assert set(record["pretrained_retention_dev_wer"]) == {"retention_dev"}
    assert record["margin"] == 0.999
    if not record["constraint_met"]:
        assert record["alpha"] == min(record["search"], key=lambda r: r["retention"]["retention_dev"])["alpha"]


def test_interpolated_is_the_straight_line_between_the_ends():
    from polyhead.training.retention import interpolated

    tuned = {"a": torch.ones(3), "emb": torch.ones(5, 2), "head": torch.ones(2)}
    start = {"a": torch.zeros(3), "emb": torch.zeros(4, 2)}
    out = interpolated(tuned, start, {"a": "a", "emb": "emb"}, 0.25)
    assert torch.allclose(out["a"], torch.full((3,), 0.25))
    assert torch.allclose(out["emb"][:4], torch.full((4, 2), 0.25)) and torch.equal(out["emb"][4], torch.ones(2))
    assert torch.equal(out["head"], tuned["head"])  # a new head keeps its training


def test_unknown_strategy_is_named(tiny_corpus, tiny_whisper, tmp_path):
    with pytest.raises(ValueError, match="unknown retention strategy 'forget'"):
        _train(tiny_corpus[0], tiny_whisper, tmp_path, [{"name": "forget"}])


def test_a_strategy_is_one_class_and_one_registration(tiny_corpus, tiny_whisper, tmp_path):
    from polyhead.training.retention import RETENTION, Retention

    calls = []

    @RETENTION.register("test_only_counter")
    class Counter(Retention):
        def extra_loss(self, trainer, task, out, batch):
            calls.append(task)
            return {}

    try:
        _train(tiny_corpus[0], tiny_whisper, tmp_path, [{"name": "test_only_counter"}])
    finally:
        RETENTION._items.pop("test_only_counter")
    assert "asr" in calls and "speaker" in calls


def test_pad_to_window_matches_zero_padded_audio(tiny_whisper):
    """The encoder's 30 s window equals Whisper's own: features of audio padded with zeros."""
    from polyhead.features import WhisperLogMel

    cfg = load_config("bench/base", [f"encoder.pretrained={tiny_whisper}", "encoder.pad_to_window=true"])
    model = MultiTaskModel(cfg.model_copy(update={"tasks": {"asr": cfg.tasks["asr"]}})).eval()
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 2) * 0.1).astype(np.float32)
    mel = WhisperLogMel()
    short = torch.from_numpy(mel(audio))[None]
    full = torch.from_numpy(mel(np.concatenate([audio, np.zeros(16000 * 28, np.float32)])))[None]
    padded, lengths = model.encoder.pad_window(short, torch.tensor([short.shape[1]]))
    assert padded.shape == full.shape and int(lengths[0]) == 3000
    # away from the STFT's edge at the join, the silence level is Whisper's
    assert torch.allclose(padded[0, 300:], full[0, 300:], atol=1e-4)


def test_scoring_uses_whispers_normaliser_and_keeps_written_form_metrics():
    from polyhead import metrics

    r = metrics.error_rates(["Mr. Smith has 39 cats."], ["mister smith has thirty nine cats"])
    assert r["wer"] == 0.0
    w = metrics.written_form(["Hello, world. How are you?"], ["hello world how are you"])
    assert w["punctuation_f1"] == 0.0 and w["case_accuracy"] < 1.0
    assert metrics.written_form(["Hello, world."], ["Hello, world."])["punctuation_f1"] == 1.0


def test_natural_text_splits_are_disjoint_and_never_the_generators(tiny_corpus):
    from polyhead.data.corpus import load_set
    from polyhead.data.synth.natural import split_of

    folder, summary = tiny_corpus
    sets = summary["sets"]
    for name in ("replay_train", "retention_dev", "retention_test", "retention_tel_test"):
        assert name in sets, name
    texts = {name: {c.supervisions[0].text for c in load_set(folder, name)}
             for name in ("replay_train", "retention_dev", "retention_test")}
    assert not texts["replay_train"] & texts["retention_test"] and not texts["retention_dev"] & texts["retention_test"]
    assert all(split_of(t) == "test" for t in texts["retention_test"])
    # the telephone copy holds the same sentences, band-limited
    tel = {c.supervisions[0].text for c in load_set(folder, "retention_tel_test")}
    assert tel == texts["retention_test"]
    # written form: the generator's sentences now carry case and a final mark
    speech = [c.supervisions[0].text for c in load_set(folder, "speech_train")]
    assert all(t[0].isupper() and t[-1] in ".?" for t in speech)


def test_telephone_channel_is_band_limited():
    from polyhead.data.synth.channel import telephone

    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    y = telephone(x, rng)
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[freqs > 4200].sum() < 0.01 * spec.sum()
    assert len(y) == len(x)


def test_pareto_of_evaluated_runs(tmp_path, capsys):
    """`polyhead pareto` draws one point per evaluated run and names a run not evaluated."""
    import json

    from polyhead.cli import main

    for name, (wer, ret) in {"none": (0.26, 0.32), "replay": (0.30, 0.14)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"row": {"WER": wer, "retention WER": ret, "EER": 0.3}}))
    out = tmp_path / "p.png"
    assert main(["pareto", str(tmp_path / "none"), str(tmp_path / "replay"), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    (tmp_path / "raw").mkdir()
    assert main(["pareto", str(tmp_path / "raw"), "--out", str(out)]) == 2
    assert "raw: no metrics.json" in capsys.readouterr().err
