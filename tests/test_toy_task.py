"""A new kind of task from a test file alone: a toy "loudness" regression (the RMS level of an
utterance in dB) with its own head, targets, loss, metric, answer and ONNX output, registered
with one decorator. It trains, evaluates, analyses and exports without an edit in src/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from polyhead.model.heads import Head, masked_mean, pad_mask
from polyhead.tasks import TASK_KINDS, TaskKind
from polyhead.tasks.base import predict
from tiny_whisper import make_tiny_whisper

pytestmark = pytest.mark.filterwarnings("ignore:You are using DynamicBucketingSampler:UserWarning")
TOY = "loudness"
EVAL_SET = "speech_test"
EVAL_UTTERANCES = 8
SILENCE_DB = -100.0  # the level of digital silence (log of 0 otherwise)


def loudness_db(cut) -> float:
    samples = cut.load_audio().astype(np.float64)
    return float(max(SILENCE_DB, 10 * np.log10(np.mean(samples ** 2) + 1e-12)))


class LoudnessHead(Head):
    """Mean-pooled frames -> one number per utterance."""

    fixed_classes = 1

    def __init__(self, in_dim: int, num_classes: int = 1, **common):
        super().__init__(in_dim, **common)
        self.proj = nn.Linear(self.width, 1)

    def forward(self, inp) -> dict:
        keep = ~pad_mask(inp.lengths, inp.x.shape[1])
        return {"db": self.proj(masked_mean(self.prepare(inp.x), keep)).squeeze(-1)}

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out["db"].float(), target)


@TASK_KINDS.register(TOY)
class LoudnessKind(TaskKind):
    head_class = LoudnessHead
    targets = (TOY,)
    outputs = (("db", "db"),)

    def vocab(self, cuts_of) -> dict:
        return {}  # a regression: no labels to collect

    def check_cut(self, cut, vocab) -> str | None:
        return None

    def collate(self, cuts, rows) -> torch.Tensor:
        return torch.tensor([loudness_db(c) for c in cuts], dtype=torch.float32)

    def evaluate(self, model, corpus, set_name, cuts, limit=None, **calibration) -> dict:
        if set_name != EVAL_SET:
            return {}
        errors = [abs(float(o[self.name]["db"]) - loudness_db(cut))
                  for cut, o in predict(model, list(cuts)[:EVAL_UTTERANCES], [self.name])]
        return {self.name: {"loudness_mae_db": float(np.mean(errors)), "n": len(errors)}}

    def answer(self, out: dict, i: int) -> dict:
        return {"loudness_db": round(float(out["db"][i]), 2)}


@pytest.fixture(scope="module")
def toy_run(tiny_corpus, tmp_path_factory):
    from polyhead.cli import main

    folder, _ = tiny_corpus
    tmp = tmp_path_factory.mktemp("toy")
    whisper = make_tiny_whisper(tmp / "whisper")
    config = {"corpus": str(folder),
              "encoder": {"name": "whisper", "pretrained": str(whisper)},
              "tasks": {TOY: {"head": {"type": TOY}, "target": TOY, "train_sets": ["speech_train"]}},
              "train": {"steps": 2, "eval_every": 2, "log_every": 1, "max_duration": 20.0}}
    path = tmp / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp / "run"
    assert main(["train", "--config", str(path), "--run", str(run)]) == 0
    return folder, run


def test_the_toy_task_trains_and_is_evaluated(toy_run):
    from polyhead.cli import main

    folder, run = toy_run
    state = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert any(TOY in str(rec) for rec in state)  # its loss was logged
    assert main(["evaluate", str(run)]) == 0
    results = json.loads((run / "metrics.json").read_text())["results"]
    assert results[EVAL_SET][TOY]["n"] == EVAL_UTTERANCES
    assert np.isfinite(results[EVAL_SET][TOY]["loudness_mae_db"])


def test_the_toy_task_answers_and_exports(toy_run, tmp_path):
    import polyhead
    from polyhead.cli import main

    folder, run = toy_run
    wav = next((folder / "audio" / EVAL_SET).rglob("*.wav"))
    ref = polyhead.load(run).analyze(wav)
    assert isinstance(ref["loudness_db"], float)
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "export")]) == 0
    info = json.loads((tmp_path / "export" / "export.json").read_text())
    assert f"{TOY}.db" in info["outputs"]
    got = polyhead.load(tmp_path / "export").analyze(wav)
    assert got["loudness_db"] == pytest.approx(ref["loudness_db"], abs=0.05)
