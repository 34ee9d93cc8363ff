"""wav2vec2 as the papers fine-tune it: transformers' layer-norm placement for base and
stable-layer-norm models, normalised input waveforms, time masking in training only."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from test_model import TINY_W2V, build, make_config, waves
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from polyhead.features import Waveform
from polyhead.model import MultiTaskModel

# wav2vec2-large-lv60 / XLS-R style: pre-norm layers, layer-normed convolutions
STABLE = dict(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
FLAVOURS = pytest.mark.parametrize("flavour", [{}, STABLE], ids=["base", "stable"])


def save_w2v(folder, **overrides) -> Wav2Vec2Model:
    torch.manual_seed(0)
    hf = Wav2Vec2Model(Wav2Vec2Config(**TINY_W2V, **overrides)).eval()
    hf.save_pretrained(str(folder), safe_serialization=True)
    return hf


def w2v_model(folder, **encoder_options) -> MultiTaskModel:
    return build(make_config("mean", encoder="wav2vec2", pretrained=str(folder), **encoder_options))


# --- layer-norm placement ------------------------------------------------------------------------

@FLAVOURS
def test_layer_outputs_equal_transformers(tmp_path, flavour):
    hf = save_w2v(tmp_path / "w2v", **flavour)
    model = w2v_model(tmp_path / "w2v").eval()
    x, lengths = waves(12000, 8000)
    attention = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        ours, _ = model.hidden_states(x, lengths)
        ref = hf(x, attention_mask=attention, output_hidden_states=True)
    assert len(ours) == len(ref.hidden_states) == TINY_W2V["num_hidden_layers"] + 1
    # transformers' last hidden state is the stable model's last layer before its final norm;
    # polyhead's last layer, what heads read at layer -1, ends with that norm
    for i, (h, r) in enumerate(zip(ours[:-1], ref.hidden_states[:-1])):
        torch.testing.assert_close(h, r, msg=f"layer {i}")
    torch.testing.assert_close(ours[-1], ref.last_hidden_state)


@FLAVOURS
def test_checkpoint_round_trip_keeps_the_norm(tmp_path, flavour):
    save_w2v(tmp_path / "w2v", **flavour)
    model = w2v_model(tmp_path / "w2v").eval()
    model.save(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "w2v")
    loaded = MultiTaskModel.load(tmp_path / "ckpt")
    x, lengths = waves(8000, 6000)
    with torch.no_grad():
        torch.testing.assert_close(model(x, lengths)["spk"]["embedding"], loaded(x, lengths)["spk"]["embedding"])
    # base-style checkpoints keep the state-dict names they had before the stable fix
    assert ("encoder.w2v.encoder.layer_norm.weight" in model.state_dict()) == (not flavour)


def test_stable_checkpoint_with_the_norm_before_the_layers_is_refused(tmp_path):
    save_w2v(tmp_path / "w2v", **STABLE)
    model = w2v_model(tmp_path / "w2v")
    state = model.state_dict()
    last = f"encoder.layers.{TINY_W2V['num_hidden_layers'] - 1}."
    old = {k.replace(last + "layer.", last).replace(last + "norm.", "encoder.w2v.encoder.layer_norm."): v
           for k, v in state.items()}  # the layout polyhead saved before the fix
    with pytest.raises(ValueError, match="layer norm before the layers"):
        model.load_state_dict(old)


# --- waveform normalisation ----------------------------------------------------------------------

def test_waveform_normalisation_matches_transformers():
    g = np.random.default_rng(0)
    utterances = [g.normal(0.3, 0.05, n).astype(np.float32) for n in (16000, 9000)]
    # padded as one batch: transformers normalises each over its own length only
    ref = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)(
        utterances, sampling_rate=16000, padding=True, return_tensors="np").input_values
    for samples, expected in zip(utterances, ref):
        out = Waveform(normalize=True)(samples)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected[:len(samples)], rtol=1e-5, atol=1e-5)
    assert Waveform()(utterances[0]) is utterances[0]


@pytest.mark.parametrize("saved, option, expected", [
    (None, None, True),  # no feature-extractor config: transformers' default for wav2vec2
    (False, None, False), (True, None, True),
    (True, False, False),  # the encoder option wins
])
def test_encoder_normalises_as_its_feature_extractor_config_says(tmp_path, saved, option, expected):
    save_w2v(tmp_path / "w2v")
    if saved is not None:
        Wav2Vec2FeatureExtractor(do_normalize=saved).save_pretrained(str(tmp_path / "w2v"))
    model = w2v_model(tmp_path / "w2v", normalize_waveform=option)
    assert model.encoder.features.normalize is expected
    assert model.encoder.features.spec() == {"name": "waveform", "normalize": expected}
    model.save(tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "w2v")  # the checkpoint keeps the decision without its source
    assert MultiTaskModel.load(tmp_path / "ckpt").encoder.features.normalize is expected



def test_checkpoint_saved_before_the_option_keeps_reading_raw_samples(tmp_path):
    """A config.json without normalize_waveform predates it: that model read raw samples. Such
    checkpoints hold the flat EncoderConfig of that time: every encoder's fields."""
    import json

    save_w2v(tmp_path / "w2v")
    w2v_model(tmp_path / "w2v").save(tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["encoder"]["normalize_waveform"]
    cfg["encoder"].update(dim=192, layers=6, heads=4, ff_mult=4, conv_kernel=15, dropout=0.1)
    cfg_path.write_text(json.dumps(cfg))
    assert MultiTaskModel.load(tmp_path / "ckpt").encoder.features.normalize is False

# --- time masking --------------------------------------------------------------------------------

def test_time_masking_in_training_only_and_within_lengths():
    model = build(make_config("mean", encoder="wav2vec2",
                              w2v_config=dict(TINY_W2V, mask_time_prob=0.5, mask_time_length=2)))
    w2v = model.encoder.w2v
    seen = []  # the masked feature-encoder output, as the positional convolution gets it
    w2v.encoder.pos_conv_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    x, lengths = waves(16000, 6000)
    frames = w2v._get_feat_extract_output_lengths(lengths).tolist()
    model.train()(x, lengths)
    with torch.no_grad():
        model.eval()(x, lengths)
    train, evaluated = ((h == w2v.masked_spec_embed.detach()).all(-1) for h in seen)
    for i, n in enumerate(frames):
        assert 0 < int(train[i, :n].sum()) < n
        assert not train[i, n:].any() and not seen[0][i, n:].any()  # padding stays zero
    assert not evaluated.any()


def test_time_masking_defaults_to_the_pretrained_config(tmp_path):
    save_w2v(tmp_path / "w2v", mask_time_prob=0.3)
    assert w2v_model(tmp_path / "w2v").encoder.w2v.config.mask_time_prob == 0.3
    config = w2v_model(tmp_path / "w2v", w2v_config=dict(mask_time_length=4)).encoder.w2v.config
    assert (config.mask_time_prob, config.mask_time_length) == (0.3, 4)
