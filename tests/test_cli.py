"""The command line end to end on the tiny corpus: stats, import, train, evaluate, analyze."""

import json

from polyhead.cli import main


def test_data_stats_prints_every_set(tiny_corpus, capsys):
    folder, summary = tiny_corpus
    assert main(["data", "stats", str(folder), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert set(stats) == set(summary["sets"])
    assert stats["speech_train"]["speakers"] == summary["sets"]["speech_train"]["speakers"]
    assert stats["speech_train"]["distinct_words"] > 50


def test_data_import_nemo_into_a_corpus(tiny_corpus, tmp_path, capsys):
    folder, _ = tiny_corpus
    out = tmp_path / "imported"
    nemo = folder / "nemo" / "speech_dev.jsonl"
    assert main(["data", "import", f"nemo:{nemo}", "--corpus", str(out), "--name", "speech_dev"]) == 0
    assert (out / "manifests" / "speech_dev_cuts.jsonl.gz").is_file()
    n_lines = len(nemo.read_text().splitlines())
    assert f"{n_lines} utterances" in capsys.readouterr().out


def test_bad_input_gives_one_clear_line(tmp_path, capsys):
    assert main(["data", "import", "nosuchformat:/x", "--corpus", str(tmp_path), "--name", "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("polyhead: error:") and "format" in err
    assert main(["train", "--config", "no-such-config", "--run", str(tmp_path / "r")]) == 2
    assert "no-such-config" in capsys.readouterr().err


def test_train_evaluate_analyze(tiny_corpus, tmp_path, capsys):
    folder, _ = tiny_corpus
    run = tmp_path / "run"
    overrides = [f"corpus={folder}", "encoder.dim=64", "encoder.layers=2", "train.steps=4",
                 "train.eval_every=4", "train.time_budget_s=null", "tasks.speaker.train_sets=[speaker_train]"]
    assert main(["train", "--config", "scratch", "--run", str(run), *overrides]) == 0
    for name in ("config.json", "model.safetensors"):
        assert (run / "best" / name).is_file() and (run / "last" / name).is_file()
    assert (run / "last" / "trainer_state.pt").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    table = capsys.readouterr().out
    assert "| model |" in table and "WER" in table and "EER" in table
    metrics = json.loads((run / "metrics.json").read_text())
    assert "speech_test" in metrics["results"]

    import polyhead

    wav = next((folder / "audio" / "vad_test").rglob("*.wav"))
    res = polyhead.load(run).analyze(wav)
    assert {"text", "words", "confidence", "speaker_embedding", "language", "language_probs",
            "segments"} <= set(res)
    assert abs(sum(res["language_probs"].values()) - 1.0) < 0.05 or len(res["language_probs"]) == 5
    assert all(0 <= s["start"] < s["end"] <= res["duration"] + 0.1 for s in res["segments"])


def test_resume_continues_to_the_configured_steps(tiny_corpus, tmp_path):
    folder, _ = tiny_corpus
    run = tmp_path / "run"
    base = [f"corpus={folder}", "encoder.dim=64", "encoder.layers=2", "train.eval_every=2",
            "train.time_budget_s=null", "~tasks.lid", "~tasks.vad", "tasks.speaker.train_sets=[speaker_train]",
            "~train.weighting.options.weights.lid", "~train.weighting.options.weights.vad"]
    assert main(["train", "--config", "scratch", "--run", str(run), *base, "train.steps=2"]) == 0
    state = json.loads((run / "train_summary.json").read_text())
    assert state["steps"] == 2
    # a resumed run keeps its saved config (steps=2): nothing more to do, and nothing lost
    assert main(["train", "--config", "scratch", "--run", str(run), "--resume"]) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 2
