"""Encoders: audio in, a stack of layers whose every output a head may read.

    base.py      the Encoder interface, the ENCODERS registry, options checking and building
    fbank.py     conformer / transformer learnt from scratch on Kaldi fbank
    wav2vec2.py  transformers' wav2vec2, the model the papers fine-tune
    whisper.py   OpenAI's pretrained Whisper encoder, the default

Adding one is a module like these (an ``Encoder`` subclass with its ``Options``, registered
with ``@ENCODERS.register(name)``) and its import line here.
"""

from . import fbank, wav2vec2, whisper  # noqa: F401  (register the encoders)
from .base import (ENCODERS, PRETRAINED, Encoder, EncoderOptions, build_encoder, encoder_options,
                   without_weight_sources)
from .wav2vec2 import Wav2Vec2Encoder
from .whisper import WhisperEncoder

__all__ = ["ENCODERS", "PRETRAINED", "Encoder", "EncoderOptions", "Wav2Vec2Encoder", "WhisperEncoder",
           "build_encoder", "encoder_options", "without_weight_sources"]
