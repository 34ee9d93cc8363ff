"""wav2vec2, the transformers model the papers fine-tune, run layer by layer: its CNN front
end reads the waveform (optionally normalised per utterance, as its feature extractor says)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ...audio import SAMPLE_RATE
from ...features import Waveform
from .base import ENCODERS, Encoder, EncoderOptions, FinalNorm, additive_mask


class Wav2Vec2Options(EncoderOptions):
    # a local save_pretrained folder (no hub access here); None: random init from w2v_config
    pretrained: str | None = None
    # Wav2Vec2Config overrides, e.g. mask_time_prob / mask_time_length (time masking in
    # training; apply_spec_augment: false turns it off) or do_stable_layer_norm
    w2v_config: dict[str, Any] = Field(default_factory=dict)
    freeze_feature_extractor: bool = True
    # zero-mean unit-variance input waveforms; None: the pretrained folder's
    # preprocessor_config.json do_normalize, else True
    normalize_waveform: bool | None = None

    @classmethod
    def from_flat_layout(cls, options):
        # saved before normalize_waveform existed: that model read raw samples
        if options.get("normalize_waveform") is None:
            options = {**options, "normalize_waveform": False}
        return options


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(Encoder):
    """transformers' Wav2Vec2Model, run layer by layer.

    ``pretrained``: a local folder written by ``save_pretrained`` (no hub access here);
    otherwise random init from ``w2v_config`` overrides of Wav2Vec2Config (base by default).
    """

    Options = Wav2Vec2Options

    def __init__(self, pretrained: str | None = None, w2v_config: dict | None = None,
                 freeze_feature_extractor: bool = True, normalize_waveform: bool | None = None):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        if pretrained:
            # safetensors only: a pytorch_model.bin would be unpickled
            self.w2v = Wav2Vec2Model.from_pretrained(pretrained, use_safetensors=True, local_files_only=True,
                                                     **(w2v_config or {}))
        else:
            self.w2v = Wav2Vec2Model(Wav2Vec2Config(**(w2v_config or {})))
        if normalize_waveform is None:
            normalize_waveform = pretrained_normalizes(pretrained)
        self.features = Waveform(normalize_waveform)
        self.w2v.config.layerdrop = 0.0  # layers are run one by one; layerdrop is not applied
        if freeze_feature_extractor:
            self.w2v.freeze_feature_encoder()
        self.dim = self.w2v.config.hidden_size
        # The layers move out of the transformers module so the multi-task model can share
        # or branch them; w2v keeps the front end and positional convolution only.
        layers = list(self.w2v.encoder.layers)
        self.w2v.encoder.layers = nn.ModuleList()
        if self.w2v.config.do_stable_layer_norm:
            # pre-norm layers (large-lv60, XLS-R): the encoder norm follows the last layer
            layers[-1] = FinalNorm(layers[-1], self.w2v.encoder.layer_norm)
            del self.w2v.encoder.layer_norm
            self._register_load_state_dict_pre_hook(_refuse_norm_before_layers)
        self.layers = nn.ModuleList(layers)
        stride = math.prod(self.w2v.config.conv_stride)
        self.frames_per_second = SAMPLE_RATE / stride

    def resolved_options(self):
        # a large or stable-layer-norm model must not come back as base-sized
        return {"w2v_config": self.w2v.config.to_diff_dict(), "normalize_waveform": self.features.normalize}

    def embed(self, wave, lengths):
        enc = self.w2v.encoder
        feats = self.w2v.feature_extractor(wave).transpose(1, 2)
        x, _ = self.w2v.feature_projection(feats)
        out_lengths = self.w2v._get_feat_extract_output_lengths(lengths).long()
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= out_lengths[:, None]
        if self.training:
            x = self._mask_time(x, ~pad)
        x = x.masked_fill(pad[..., None], 0.0)
        x = x + enc.pos_conv_embed(x)
        if not self.w2v.config.do_stable_layer_norm:
            x = enc.layer_norm(x)
        return enc.dropout(x), out_lengths

    def _mask_time(self, x, valid):
        """wav2vec2's fine-tuning masks (config mask_time_prob / mask_time_length): spans of
        frames, within each utterance's length, replaced by the learned masked_spec_embed."""
        if x.shape[1] < self.w2v.config.mask_time_length:
            return x  # transformers refuses spans longer than the batch
        # transformers draws the spans from numpy's global generator; seeding it from torch's,
        # which the trainer seeds per step, keeps a resumed run's masks the same.
        with _numpy_seeded(int(torch.randint(2 ** 31 - 1, ()))):
            return self.w2v._mask_hidden_states(x, attention_mask=valid)

    def run_layer(self, layer, x, pad_mask):
        out = layer(x, attention_mask=additive_mask(pad_mask, x.dtype))
        return out[0] if isinstance(out, tuple) else out


def pretrained_normalizes(pretrained: str | None) -> bool:
    """Whether the model expects zero-mean unit-variance waveforms, as its feature-extractor
    config says (do_normalize); True, transformers' default for wav2vec2, when there is none."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.utils import FEATURE_EXTRACTOR_NAME

    if pretrained and (Path(pretrained) / FEATURE_EXTRACTOR_NAME).is_file():
        return Wav2Vec2FeatureExtractor.from_pretrained(pretrained, local_files_only=True).do_normalize
    return True


def _refuse_norm_before_layers(state_dict, prefix, *_):
    if prefix + "w2v.encoder.layer_norm.weight" in state_dict:
        # saved before the norm followed the last layer: its weights learnt another model
        raise ValueError("this stable-layer-norm wav2vec2 checkpoint was trained with the encoder layer "
                         "norm before the layers, not after the last one as transformers places it; "
                         "train it again")


@contextlib.contextmanager
def _numpy_seeded(seed: int):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
