"""The multi-task model on random inputs: pooling and length masking, explicit split,
branched encoders, layer choice, gradient reversal, CLS, wav2vec2, checkpoints, registries."""

from __future__ import annotations

import pytest
import torch

from polyhead.config import Config
from polyhead.model import ENCODERS, HEADS, MultiTaskModel
from polyhead.model.blocks import ConformerBlock
from polyhead.model.heads import POOLINGS, HeadInput, masked_mean, pad_mask
from polyhead.data.labels import CHARS
from polyhead.runs import CONFIG_FILE, WEIGHTS_FILE

N_MELS = 80
SPEAKERS = ["s1", "s2", "s3"]
FBANK_ENCODERS = ("conformer", "transformer")  # the others take no dim, layers, ...
TINY_W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def make_config(pooling="mean", layers=2, dim=32, shared_layers=None, encoder="conformer",
                spk_head=None, asr_head=None, **encoder_options) -> Config:
    enc = dict(name=encoder, **encoder_options)
    if encoder in FBANK_ENCODERS:
        enc.update(dim=dim, layers=layers, heads=2, ff_mult=2, dropout=0.0)
    spk = dict(type="speaker", options=dict(pooling=pooling, emb_dim=16, ecapa_channels=32))
    spk.update(spk_head or {})
    asr = dict(type="ctc", options=dict(dropout=0.0))
    asr.update(asr_head or {})
    return Config.model_validate(dict(
        corpus="unused", encoder=enc, shared_layers=shared_layers,
        tasks=dict(asr=dict(head=asr, target="text", train_sets=["x"]),
                   spk=dict(head=spk, target="speaker", train_sets=["x"])),
        vocab=dict(text=CHARS, speaker=SPEAKERS)))


def build(config: Config, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(config)


def feats(*frames: int, total: int | None = None, seed: int = 1, garbage: float = 10.0):
    """A padded fbank batch: real frames ~N(0,1), padding filled with large garbage."""
    g = torch.Generator().manual_seed(seed)
    total = total or max(frames)
    x = torch.randn(len(frames), total, N_MELS, generator=g) * garbage
    for i, n in enumerate(frames):
        x[i, :n] = torch.randn(n, N_MELS, generator=g)
    return x, torch.tensor(frames)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- speaker pooling and length masking -------------------------------------------------------

@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_shape_and_padding_invariance(pooling):
    model = build(make_config(pooling)).eval()
    x, lengths = feats(37, 53, total=64)
    with torch.no_grad():
        batched = model(x, lengths, ["spk"])["spk"]["embedding"]
        assert batched.shape == (2, 16)
        assert torch.isfinite(batched).all()
        for i, n in enumerate(lengths.tolist()):
            alone = model(x[i:i + 1, :n], lengths[i:i + 1], ["spk"])["spk"]["embedding"]
            torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-4)
            # the same utterance with garbage padding after it, length unchanged
            padded = model(x[i:i + 1], lengths[i:i + 1], ["spk"])["spk"]["embedding"]
            torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


def test_every_head_output_is_padding_invariant():
    model = build(make_config("mean")).eval()
    x, lengths = feats(41, 29, total=60)
    with torch.no_grad():
        out = model(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model(x[i:i + 1, :n], lengths[i:i + 1])
            frames = int(out["asr"]["lengths"][i])
            assert frames == int(alone["asr"]["lengths"][0]) == alone["asr"]["logits"].shape[1]
            torch.testing.assert_close(out["asr"]["logits"][i, :frames], alone["asr"]["logits"][0],
                                       atol=1e-5, rtol=1e-4)


def mixed(sel: torch.Tensor, keep: torch.Tensor) -> bool:
    """Every utterance has both selected and unselected real frames."""
    return bool(((sel & keep).any(1) & (~sel & keep).any(1)).all())


def ctc_blank_where_positive(model, x, lengths) -> None:
    """Set the CTC head so its argmax is blank exactly where one normalised input feature is
    positive, picking a feature that gives every utterance both kinds of frames."""
    head = model.heads["asr"]
    with torch.no_grad():
        states, lens = model.hidden_states(x, lengths)
        xn = head.prepare(states[-1])
        keep = ~pad_mask(lens, xn.shape[1])
        feature = next(f for f in range(xn.shape[-1]) if mixed(xn[..., f] > 0, keep))
        head.proj.weight.zero_()
        head.proj.bias.zero_()
        head.proj.weight[0, feature] = 10.0
        head.proj.bias[1:] = torch.linspace(-1e-3, -2e-3, head.proj.bias.numel() - 1)


@pytest.mark.parametrize("pooling", ["ctc_blank", "ctc_nonblank"])
def test_ctc_pooling_follows_ctc_argmax(pooling):
    model = build(make_config(pooling)).eval()
    x, lengths = feats(45, 33, total=48)
    ctc_blank_where_positive(model, x, lengths)
    with torch.no_grad():
        out = model(x, lengths)
        blank = out["asr"]["logits"].argmax(-1) == 0
        keep = ~pad_mask(out["asr"]["lengths"], blank.shape[1])
        assert mixed(blank, keep)  # a real choice of frames in every utterance
        head = model.heads["spk"]
        h = model.hidden_states(x, lengths)[0][-1]
        sel = (blank if pooling == "ctc_blank" else ~blank) & keep
        expected = head.proj(masked_mean(head.prepare(h), sel))
        torch.testing.assert_close(out["spk"]["embedding"], expected, atol=1e-5, rtol=1e-4)
        # selecting the other frames gives another embedding
        other = head.proj(masked_mean(head.prepare(h), ~sel & keep))
        assert not torch.allclose(out["spk"]["embedding"], other, atol=1e-4)
        # the speaker task alone (CTC run on the side) gives the same result
        alone = model(x, lengths, ["spk"])
        assert set(alone) == {"spk"}
        torch.testing.assert_close(alone["spk"]["embedding"], out["spk"]["embedding"])


@pytest.mark.parametrize("all_blank", [True, False])
def test_ctc_pooling_forced_blank_or_not(all_blank):
    """Every frame blank (or none): one pooling takes every frame, the other falls back to
    every frame; both then equal plain mean pooling with the same weights."""
    torch.manual_seed(0)
    models = {p: build(make_config(p)).eval() for p in ("ctc_blank", "ctc_nonblank", "mean")}
    state = models["mean"].state_dict()
    x, lengths = feats(40, 25, total=44)
    for p in ("ctc_blank", "ctc_nonblank"):
        m = models[p]
        m.load_state_dict(state)
        with torch.no_grad():
            m.heads["asr"].proj.weight.zero_()
            m.heads["asr"].proj.bias.zero_()
            m.heads["asr"].proj.bias[0 if all_blank else 1] = 10.0
            out = m(x, lengths)
            expected = models["mean"](x, lengths, ["spk"])["spk"]["embedding"]
        assert ((out["asr"]["logits"].argmax(-1) == 0).all()) == all_blank
        torch.testing.assert_close(out["spk"]["embedding"], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tasks", [["spk"], ["asr", "spk"]])
def test_no_gradient_through_ctc_selection(tasks):
    model = build(make_config("ctc_nonblank")).train()
    x, lengths = feats(30, 22)
    out = model(x, lengths, tasks)
    out["spk"]["embedding"].pow(2).sum().backward()
    for name, p in model.heads["asr"].named_parameters():
        assert p.grad is None or not p.grad.any(), name
    assert model.heads["spk"].proj[1].weight.grad.abs().sum() > 0
    assert model.encoder.layers[0].ff1[1].weight.grad.abs().sum() > 0


# --- explicit split ------------------------------------------------------------------------------

@pytest.mark.parametrize("head_type", ["ctc", "speaker", "classifier", "frame"])
def test_explicit_split_reads_only_its_dims(head_type):
    options = dict(pooling="stats") if head_type == "speaker" else {}
    head = HEADS.build(head_type, in_dim=64, num_classes=5, dims=(0, 48), **options)
    x = torch.randn(2, 11, 64, requires_grad=True)
    out = head(HeadInput(x, torch.tensor([11, 7])))
    value = out.get("embedding", out.get("logits"))
    value.float().pow(2).sum().backward()
    assert not x.grad[..., 48:].any()
    assert x.grad[..., :48].abs().sum() > 0
    assert not x.grad[1, 7:].any() or head_type in ("ctc", "frame")  # utterance heads mask padding


def test_explicit_split_in_model():
    config = make_config("mean", dim=64, spk_head=dict(dims=(0, 48)), asr_head=dict(dims=(48, 64)))
    model = build(config).eval()
    x, lengths = feats(30, 26)
    states, lens = model.hidden_states(x, lengths)
    h = states[-1].detach().requires_grad_(True)
    emb = model.heads["spk"](HeadInput(h, lens))
    emb["embedding"].sum().backward()
    assert not h.grad[..., 48:].any() and h.grad[..., :48].abs().sum() > 0
    assert model.heads["spk"].norm.normalized_shape == (48,)
    assert model.heads["asr"].norm.normalized_shape == (16,)


# --- branched encoder ----------------------------------------------------------------------------

LAYERS = 3


@pytest.mark.parametrize("k", range(LAYERS + 1))
def test_branched_parameter_counts(k):
    model = build(make_config("mean", layers=LAYERS, shared_layers=k))
    layer = count(ConformerBlock(32, 2, 64, 0.0))
    front = count(model.encoder.subsample)
    encoder_total = count(model.encoder) + count(model.branches)
    assert encoder_total == front + k * layer + 2 * (LAYERS - k) * layer
    counts = model.parameter_counts()
    assert counts["shared"] == front + k * layer
    assert counts["branches"] == 2 * (LAYERS - k) * layer
    assert counts["heads"] == count(model.heads)
    assert counts["total"] == count(model) == counts["shared"] + counts["branches"] + counts["heads"]
    assert len(model.encoder.layers) == k
    assert set(model.branches) == (set() if k == LAYERS else {"asr", "spk"})


def test_branched_trunk_is_shared():
    model = build(make_config("mean", layers=LAYERS, shared_layers=1)).train()
    x, lengths = feats(30, 20)
    out = model(x, lengths, ["asr"])
    assert set(out) == {"asr"}
    out["asr"]["logits"].pow(2).mean().backward()

    def has_grad(mod):
        return all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters())

    def no_grad(mod):
        return all(p.grad is None or not p.grad.any() for p in mod.parameters())

    assert has_grad(model.encoder.subsample.proj)
    assert has_grad(model.encoder.layers[0].ff1)
    for layer in model.branches["asr"]:
        assert has_grad(layer.ff1)
    assert no_grad(model.branches["spk"])
    assert no_grad(model.heads["spk"])


def test_branches_differ_after_training_one():
    model = build(make_config("mean", layers=2, shared_layers=1))
    with torch.no_grad():
        for p in model.branches["asr"].parameters():
            p.add_(0.1)
    x, lengths = feats(30, 20)
    model.eval()
    with torch.no_grad():
        hs_asr = model.hidden_states(x, lengths, "asr")[0]
        hs_spk = model.hidden_states(x, lengths, "spk")[0]
    torch.testing.assert_close(hs_asr[1], hs_spk[1])  # the trunk
    assert not torch.allclose(hs_asr[2], hs_spk[2])  # the branches


# --- heads on any layer --------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1, 2, 3, -1])
def test_head_reads_chosen_layer(layer):
    config = make_config("mean", layers=4, asr_head=dict(layer=layer), spk_head=dict(layer=layer))
    model = build(config).eval()
    x, lengths = feats(40, 31)
    with torch.no_grad():
        out = model(x, lengths)
        states, lens = model.hidden_states(x, lengths)
        assert len(states) == 5
        h = states[layer]
        manual_asr = model.heads["asr"](HeadInput(h, lens))["logits"]
        manual_spk = model.heads["spk"](HeadInput(h, lens))["embedding"]
    torch.testing.assert_close(out["asr"]["logits"], manual_asr)
    torch.testing.assert_close(out["spk"]["embedding"], manual_spk)


def test_layer_out_of_range():
    model = build(make_config("mean", layers=2, asr_head=dict(layer=3)))
    x, lengths = feats(20)
    with pytest.raises(ValueError, match="out of range"):
        model(x, lengths, ["asr"])


# --- gradient reversal ---------------------------------------------------------------------------

def test_gradient_reversal_negates_encoder_gradient():
    plain = build(make_config("mean")).train()
    adv = build(make_config("mean", spk_head=dict(grad_reverse=1.0))).train()
    adv.load_state_dict(plain.state_dict())
    x, lengths = feats(30, 26)
    target = torch.tensor([0, 2])
    grads = {}
    for name, model in (("plain", plain), ("adv", adv)):
        out = model(x, lengths, ["spk"])
        # the output itself is unchanged by the reversal
        grads[name + "_emb"] = out["spk"]["embedding"].detach()
        model.heads["spk"].loss(out["spk"], target).backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(grads["plain_emb"], grads["adv_emb"])
    enc = [n for n in grads["plain"] if n.startswith("encoder.")]
    head = [n for n in grads["plain"] if n.startswith("heads.spk.")]
    assert enc and head
    for n in enc:
        torch.testing.assert_close(grads["adv"][n], -grads["plain"][n], atol=1e-7, rtol=1e-5)
    for n in head:
        torch.testing.assert_close(grads["adv"][n], grads["plain"][n], atol=1e-7, rtol=1e-5)


def test_gradient_reversal_scale_on_layer_output():
    x = torch.randn(2, 9, 32, requires_grad=True)
    lengths = torch.tensor([9, 6])
    torch.manual_seed(0)
    plain = HEADS.build("classifier", in_dim=32, num_classes=3, dropout=0.0)
    torch.manual_seed(0)
    adv = HEADS.build("classifier", in_dim=32, num_classes=3, dropout=0.0, grad_reverse=0.5)
    (g_plain,) = torch.autograd.grad(plain(HeadInput(x, lengths))["logits"].sum(), x)
    (g_adv,) = torch.autograd.grad(adv(HeadInput(x, lengths))["logits"].sum(), x)
    torch.testing.assert_close(g_adv, -0.5 * g_plain)


# --- CLS -----------------------------------------------------------------------------------------

def test_cls_is_hidden_from_other_heads():
    with_cls = build(make_config("first")).eval()
    without = build(make_config("mean")).eval()
    assert with_cls.cls is not None and without.cls is None
    x, lengths = feats(40, 27, total=45)
    with torch.no_grad():
        out = with_cls(x, lengths)
        ref = without(x, lengths)
        embedded, frames = without.encoder.embed(x, lengths)
        assert out["asr"]["logits"].shape == ref["asr"]["logits"].shape
        assert out["asr"]["logits"].shape[1] == embedded.shape[1]
        assert torch.equal(out["asr"]["lengths"], frames)
        # hidden states exclude the CLS position too
        states, _ = with_cls.hidden_states(x, lengths)
        assert all(h.shape[1] == embedded.shape[1] for h in states)
        # the speaker head reads the CLS vector: changing it changes the embedding
        e1 = out["spk"]["embedding"].clone()
        with_cls.cls.add_(1.0)
        e2 = with_cls(x, lengths, ["spk"])["spk"]["embedding"]
    assert not torch.allclose(e1, e2)
    assert out["spk"]["embedding"].shape == (2, 16)


# --- wav2vec2 ------------------------------------------------------------------------------------

def w2v_config(freeze=True) -> Config:
    return make_config("mean", encoder="wav2vec2", w2v_config=dict(TINY_W2V),
                       freeze_feature_extractor=freeze)


def waves(*samples: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(samples), max(samples))
    for i, n in enumerate(samples):
        x[i, :n] = torch.randn(n, generator=g) * 0.1
    return x, torch.tensor(samples)


@pytest.mark.parametrize("freeze", [True, False])
def test_wav2vec2_forward_backward(freeze):
    model = build(w2v_config(freeze)).train()
    enc = model.encoder
    assert enc.input_kind == "waveform" and enc.dim == 32 and model.num_layers == 2
    assert enc.frames_per_second == 50.0
    fe = list(enc.w2v.feature_extractor.parameters())
    assert all(p.requires_grad != freeze for p in fe)
    x, lengths = waves(16000, 9600)
    out = model(x, lengths)
    frames = enc.w2v._get_feat_extract_output_lengths(lengths)
    assert torch.equal(out["asr"]["lengths"], frames.long())
    assert out["asr"]["logits"].shape == (2, int(frames.max()), len(CHARS) + 1)
    assert out["spk"]["embedding"].shape == (2, 16)
    loss = out["asr"]["logits"].pow(2).mean() + model.heads["spk"].loss(out["spk"], torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.layers.parameters())
    if freeze:
        assert all(p.grad is None for p in fe)
        assert all(p.grad is not None for p in enc.w2v.feature_projection.parameters())
    else:
        assert all(p.grad is not None for p in fe)


# --- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", ["conformer", "wav2vec2"])
def test_save_load_round_trip(tmp_path, encoder):
    config = w2v_config() if encoder == "wav2vec2" else make_config("stats", shared_layers=1)
    model = build(config).eval()
    with torch.no_grad():  # move off the init, so a fresh model cannot pass by accident
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x, lengths = waves(12000, 8000) if encoder == "wav2vec2" else feats(33, 21)
    with torch.no_grad():
        before = model(x, lengths)
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    loaded = MultiTaskModel.load(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.config.model_dump(mode="json") == model.config.model_dump(mode="json")
    with torch.no_grad():
        after = loaded(x, lengths)
    for task in before:
        for key, value in before[task].items():
            if torch.is_tensor(value):
                assert torch.equal(value, after[task][key]), (task, key)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_load_rejects_incomplete_folder(tmp_path):
    build(make_config("mean")).save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a polyhead checkpoint"):
        MultiTaskModel.load(tmp_path / "ckpt")


def test_init_from_starts_encoder_and_every_branch_from_a_saved_model(tmp_path):
    """encoder.init_from: the pretrained-encoder start of the bench recipes. The trunk and each
    branch copy get the saved layers, heads start fresh, and the result loads without the source."""
    source = build(make_config("mean", layers=2), seed=1)
    source.save(tmp_path / "run" / "best")  # a run folder: its best/ checkpoint is used
    config = make_config("stats", layers=2, shared_layers=1, init_from=str(tmp_path / "run"))
    model = build(config, seed=2)
    src = source.encoder.state_dict()
    for name, value in model.encoder.state_dict().items():  # front end + the 1 shared layer
        assert torch.equal(value, src[name]), name
    for task in ("asr", "spk"):
        for name, value in model.branches[task][0].state_dict().items():
            assert torch.equal(value, src[f"layers.1.{name}"]), (task, name)
    fresh = build(make_config("stats", layers=2, shared_layers=1), seed=2)
    assert torch.equal(model.heads["asr"].state_dict()["proj.weight"], fresh.heads["asr"].state_dict()["proj.weight"])

    model.save(tmp_path / "tuned")
    (tmp_path / "run" / "best" / WEIGHTS_FILE).unlink()  # the source is gone: the checkpoint still loads
    loaded = MultiTaskModel.load(tmp_path / "tuned")
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_init_from_mismatch_names_the_source(tmp_path):
    build(make_config("mean", dim=48)).save(tmp_path / "wide")
    with pytest.raises(ValueError, match="init_from=.*wide.*does not fit"):
        MultiTaskModel(make_config("mean", dim=32, init_from=str(tmp_path / "wide")))
    with pytest.raises(FileNotFoundError, match="init_from=.*missing"):
        MultiTaskModel(make_config("mean", init_from=str(tmp_path / "missing")))


def test_checkpoint_in_the_old_flat_encoder_layout_loads(tmp_path):
    """config.json of a checkpoint saved before options were per encoder: every encoder's fields."""
    import json

    model = build(make_config("mean")).eval()
    model.save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / CONFIG_FILE
    cfg = json.loads(path.read_text())
    cfg["encoder"].update(pretrained=None, w2v_config={}, freeze_feature_extractor=True, normalize_waveform=None,
                          whisper_config={}, freeze_front_end=False, pad_to_window=False, freeze_layers=0)
    path.write_text(json.dumps(cfg))
    loaded = MultiTaskModel.load(tmp_path / "ckpt")
    assert "whisper_config" not in loaded.config.encoder.model_extra  # saved again: this encoder's own
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_pretrained_wav2vec2_of_another_size_reloads_without_its_folder(tmp_path):
    """The saved config holds the resolved transformers config: a checkpoint of a pretrained
    encoder that is not base-sized rebuilds at its own size once the source is gone."""
    import shutil

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_W2V)).save_pretrained(str(tmp_path / "w2v"), safe_serialization=True)
    model = build(make_config("mean", encoder="wav2vec2", pretrained=str(tmp_path / "w2v"))).eval()
    model.save(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "w2v")
    loaded = MultiTaskModel.load(tmp_path / "ckpt")
    assert loaded.encoder.dim == TINY_W2V["hidden_size"]
    x, lengths = waves(8000, 6000)
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths)["spk"]["embedding"], loaded(x, lengths)["spk"]["embedding"])


# --- registries ----------------------------------------------------------------------------------

def test_unknown_encoder_lists_choices():
    with pytest.raises(ValueError, match="unknown encoder 'lstm'") as e:
        build(make_config("mean", encoder="lstm"))
    for name in ("conformer", "transformer", "wav2vec2", "whisper"):
        assert name in str(e.value)
    # other tests register encoders of their own (test_toy_encoder.py): these four at least
    assert {"conformer", "transformer", "wav2vec2", "whisper"} <= set(ENCODERS.names())
    with pytest.raises(ValueError, match="unknown encoder 'nope'; choose one of: conformer, "):
        ENCODERS.build("nope")


def test_unknown_head_lists_choices():
    with pytest.raises(ValueError, match="unknown head 'rnnt'") as e:
        build(make_config("mean", asr_head=dict(type="rnnt")))
    for name in ("classifier", "ctc", "frame", "speaker"):
        assert name in str(e.value)


def test_unknown_pooling_lists_choices():
    with pytest.raises(ValueError, match="unknown pooling 'max'") as e:
        build(make_config("max"))
    for name in POOLINGS:
        assert name in str(e.value)


def test_transformer_encoder_runs():
    model = build(make_config("stats", encoder="transformer")).eval()
    x, lengths = feats(30, 19, total=36)
    with torch.no_grad():
        out = model(x, lengths)
        alone = model(x[1:, :19], lengths[1:])
    torch.testing.assert_close(out["spk"]["embedding"][1:], alone["spk"]["embedding"], atol=1e-5, rtol=1e-4)
