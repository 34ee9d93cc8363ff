"""Layer-wise speaker probe (paper 2, Figure 1): one EER per layer, for the trained model, the
same architecture at random initialisation and, for a fine-tuned run, its pretrained start."""

from __future__ import annotations

import json

from polyhead.config import read_config_json
from polyhead.evaluation.probe import layer_probe
from polyhead.model import MultiTaskModel


def test_probe_curves_and_plot(tiny_run, tmp_path):
    corpus, run = tiny_run
    res = layer_probe(run, set_name="speaker_test", plot=str(tmp_path / "probe.png"))
    layers = MultiTaskModel.load(run / "best").num_layers
    assert len(res["trained"]) == len(res["initial"]) == layers + 1  # front end + every layer
    assert all(0.0 <= e <= 1.0 for e in res["trained"] + res["initial"])
    assert res["trained"] != res["initial"]
    assert "pretrained" not in res  # trained from scratch: no third curve
    assert (tmp_path / "probe.png").stat().st_size > 10_000
    assert json.loads((run / "layer_probe.json").read_text())["trained"] == res["trained"]

    # A model started from this run's encoder (encoder.init_from) and not trained further:
    # its pretrained-start curve is the source's trained curve, exactly.
    config = read_config_json(run / "best" / "config.json")
    config.encoder.init_from = str(run)
    tuned = tmp_path / "tuned"
    MultiTaskModel(config).save(tuned / "best")
    res2 = layer_probe(tuned, corpus=str(corpus), set_name="speaker_test")
    assert res2["pretrained_from"] == str(run)
    assert res2["pretrained"] == res2["trained"] == res["trained"]
