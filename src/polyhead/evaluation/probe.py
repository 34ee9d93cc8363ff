"""Layer-wise speaker probe (paper 2, Figure 1): EER of the mean-pooled output of every
encoder layer, cosine-scored on a trial list, for a trained model and the same architecture
at initialisation. Shows where speaker information lives and where training removes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.corpus import load_set, read_trials, trials_path
from ..config import read_config_json
from ..model import MultiTaskModel
from ..model.encoders import PRETRAINED
from ..model.heads import masked_mean, pad_mask
from ..data.batching import Collator, FeatureCache
from ..runs import CONFIG_FILE, checkpoint_folder
from ..tasks.base import batches_by_duration
from ..tasks.speaker import evaluate_trials


@torch.no_grad()
def layer_eers(model: MultiTaskModel, corpus, set_name: str, branch: str = "shared") -> list[float]:
    model.eval()
    cuts = load_set(corpus, set_name)
    trials = read_trials(trials_path(corpus, set_name), known_ids={c.id for c in cuts})
    needed = {t.enrol for t in trials} | {t.test for t in trials}
    collate = Collator({}, FeatureCache(model.encoder.features, enabled=False))
    per_layer: list[dict[str, np.ndarray]] = []
    for group in batches_by_duration([c for c in cuts if c.id in needed], 120.0):
        b = collate(group)
        states, lens = model.hidden_states(b.inputs, b.lengths, branch)
        keep = ~pad_mask(lens, states[0].shape[1])
        if not per_layer:
            per_layer = [{} for _ in states]
        for i, h in enumerate(states):
            pooled = masked_mean(h.float(), keep).numpy()
            for cut, v in zip(group, pooled):
                per_layer[i][cut.id] = v / (np.linalg.norm(v) + 1e-9)
    return [float(evaluate_trials(emb, trials)["eer"]) for emb in per_layer]


def layer_probe(run: str | Path, corpus: str | None = None, set_name: str = "speaker_test",
                plot: str | None = None, checkpoint: str = "best") -> dict:
    run = Path(run)
    folder = checkpoint_folder(run, checkpoint)
    trained = MultiTaskModel.load(folder)
    corpus = corpus or trained.config.corpus
    torch.manual_seed(trained.config.train.seed)
    # load() dropped the pretrained start: random weights (the tokenizer from the checkpoint)
    untrained = MultiTaskModel(trained.config, assets=folder).eval()
    res = {"set": set_name, "trained": layer_eers(trained, corpus, set_name),
           "initial": layer_eers(untrained, corpus, set_name)}
    curves = {run.name: res["trained"], "random initialisation": res["initial"]}
    # A fine-tuned run also shows its starting point (the papers' pretrained wav2vec2 curve).
    saved = read_config_json(folder / CONFIG_FILE)  # load() dropped the start; the file keeps it
    pretrained = getattr(saved.encoder, PRETRAINED, None)  # e.g. whisper-base
    source = saved.encoder.init_from or pretrained  # a polyhead run, or a pretrained model
    if source and (pretrained or Path(source).exists()):
        torch.manual_seed(trained.config.train.seed)
        start = MultiTaskModel(saved).eval()
        res["pretrained"] = curves[f"pretrained start ({source})"] = layer_eers(start, corpus, set_name)
        res["pretrained_from"] = source
    if plot:
        plot_probe(curves, plot)
        res["plot"] = str(plot)
    (run / "layer_probe.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def plot_probe(curves: dict[str, list[float]], path: str | Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, eers in curves.items():
        ax.plot(range(len(eers)), [100 * e for e in eers], marker="o", label=name)
    ax.set_xlabel("encoder layer (0 = front end)")
    ax.set_ylabel("speaker EER of mean-pooled layer output (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
