"""Adding an encoder is one module and one registration line: a toy encoder, defined here alone
(nothing in src/ knows it), trains, evaluates, analyses a file and exports like the others."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from pydantic import Field
from torch import nn

import polyhead
from polyhead.cli import main
from polyhead.features import N_MELS, KaldiFbank
from polyhead.inference.export import load_export
from polyhead.model.encoders import ENCODERS, Encoder, EncoderOptions

TOY = "toy_linear"
FBANK_RATE = 100.0  # frames per second: the toy does no subsampling


class ToyOptions(EncoderOptions):
    dim: int = Field(32, gt=0)
    layers: int = Field(2, ge=1)


class ToyBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(dim), nn.Linear(dim, dim)

    def forward(self, x, pad_mask):
        return x + torch.tanh(self.proj(self.norm(x)))


@ENCODERS.register(TOY)
class ToyEncoder(Encoder):
    """A linear layer over fbank frames, then residual per-frame blocks."""

    Options = ToyOptions
    frames_per_second = FBANK_RATE

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.features = KaldiFbank(N_MELS)
        self.dim = dim
        self.front = nn.Linear(N_MELS, dim)
        self.layers = nn.ModuleList([ToyBlock(dim) for _ in range(layers)])

    def embed(self, feats, lengths):
        return self.front(feats), lengths


@pytest.fixture(scope="module")
def toy_run(tiny_corpus, tmp_path_factory):
    folder, _ = tiny_corpus
    work = tmp_path_factory.mktemp("toy")
    config = work / "toy.yaml"
    config.write_text(f"base: scratch\nencoder: {{name: {TOY}, dim: 24}}\n")  # scratch's conformer options drop
    run = work / "run"
    assert main(["train", "--config", str(config), "--run", str(run), f"corpus={folder}", "train.steps=2",
                 "train.eval_every=2", "train.time_budget_s=null", "tasks.speaker.train_sets=[speaker_train]"]) == 0
    return folder, run


def test_toy_encoder_trains_evaluates_analyses_and_exports(toy_run, tmp_path, capsys):
    folder, run = toy_run
    saved = json.loads((run / "best" / "config.json").read_text())["encoder"]
    assert saved == {"name": TOY, "init_from": None, "dim": 24, "layers": 2}
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()

    wav = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))[0]
    assert main(["analyze", str(wav), "--model", str(run), "--json"]) == 0
    analysis = json.loads(capsys.readouterr().out)
    assert "text" in analysis and "language" in analysis

    tasks = set(polyhead.load(run).model.config.tasks)
    feats = torch.randn(1, 150, N_MELS)
    onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
    for fmt in ("int8", "onnx") if onnx else ("int8",):
        out = tmp_path / fmt
        assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
        assert set(load_export(out)(feats, torch.tensor([150]))) == tasks, fmt


def test_toy_encoder_refuses_an_option_it_does_not_take():
    from polyhead.config import ConfigError, EncoderConfig
    from polyhead.model.encoders import encoder_options

    with pytest.raises(ConfigError, match=f"encoder {TOY}: unknown option 'heads'"):
        encoder_options(EncoderConfig(name=TOY, heads=4))
