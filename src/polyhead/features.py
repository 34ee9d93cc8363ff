"""Input features: what an encoder eats, computed from 16 kHz mono float samples.

Each encoder owns one ``FeatureExtractor`` (``encoder.features``), so the data pipeline,
evaluation, inference and export ask it for the frame rate, the feature width and whether
SpecAugment applies, instead of branching on the kind of encoder:

    fbank        Kaldi log-mel filterbank (kaldi-native-fbank), per-utterance mean/variance
                 normalised; 100 frames/s (the fbank conformer/transformer)
    waveform     the samples themselves (wav2vec2), optionally normalised per utterance
    whisper_mel  Whisper's log-mel spectrogram (80 or 128 bins), 100 frames/s, on the
                 utterance's own length rather than a 30 s window

Training and inference both go through ``extractor(samples)``.
"""

from __future__ import annotations

import abc
from functools import cached_property

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .registry import Registry

FEATURES = Registry("features")
N_MELS = 80
FBANK_HOP = 160  # 10 ms at 16 kHz
# Whisper's front end (openai/whisper audio.py): 25 ms Hann window, 10 ms hop, Slaney mel
# filters, log10 with an 80 dB floor below the loudest bin, then (x + 4) / 4.
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_DYNAMIC_RANGE = 8.0  # log10 units: 80 dB
WHISPER_OFFSET, WHISPER_SCALE = 4.0, 4.0


class FeatureExtractor(abc.ABC):
    """Samples [S] float32 -> features [frames, dim] (or [S] for the waveform)."""

    name: str
    rate: float  # frames per second of the output
    dim: int | None  # feature width; None for the waveform
    augmentable: bool = True  # SpecAugment's masks make sense on these features

    @abc.abstractmethod
    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Features of one utterance."""

    def spec(self) -> dict:
        """JSON-able description that ``from_spec`` turns back into this extractor."""
        return {"name": self.name}


@FEATURES.register("fbank")
class KaldiFbank(FeatureExtractor):
    name, rate, dim = "fbank", 100.0, N_MELS

    def __init__(self, n_mels: int = N_MELS):
        self.dim = n_mels

    def __call__(self, samples):
        # Per-utterance normalisation: robust to channel gain, no global statistics to store.
        x = fbank(samples, self.dim)
        return (x - x.mean(0)) / (x.std(0) + 1e-5)

    def spec(self):
        return {"name": self.name, "n_mels": self.dim}


@FEATURES.register("waveform")
class Waveform(FeatureExtractor):
    """``normalize``: zero mean, unit variance over the utterance, as transformers'
    Wav2Vec2FeatureExtractor does for models trained with do_normalize. Off by default: a
    spec written before the option existed described raw samples."""

    name, rate, dim, augmentable = "waveform", float(SAMPLE_RATE), None, False

    def __init__(self, normalize: bool = False):
        self.normalize = normalize

    def __call__(self, samples):
        if not self.normalize:
            return samples
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([samples], None)[0].astype(np.float32)

    def spec(self):
        return {"name": self.name, "normalize": self.normalize}


@FEATURES.register("whisper_mel")
class WhisperLogMel(FeatureExtractor):
    """Whisper's log-mel spectrogram. ``len(samples) // 160`` frames, as Whisper drops the
    STFT's last frame. The 80 dB floor is taken below this utterance's own maximum, which is
    what Whisper computes on a 30 s window too when the window holds this utterance."""

    name, rate = "whisper_mel", 100.0

    def __init__(self, n_mels: int = N_MELS):
        self.dim = n_mels

    @cached_property
    def _filters(self) -> torch.Tensor:
        from transformers.audio_utils import mel_filter_bank

        fb = mel_filter_bank(num_frequency_bins=1 + WHISPER_N_FFT // 2, num_mel_filters=self.dim,
                             min_frequency=0.0, max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE,
                             norm="slaney", mel_scale="slaney")
        return torch.from_numpy(fb.T.astype(np.float32))  # [n_mels, bins]

    def __call__(self, samples):
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        stft = torch.stft(wave, WHISPER_N_FFT, WHISPER_HOP, window=torch.hann_window(WHISPER_N_FFT),
                          return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_mel = (self._filters @ power).clamp(min=1e-10).log10()
        log_mel = torch.maximum(log_mel, log_mel.max() - WHISPER_DYNAMIC_RANGE)
        return ((log_mel + WHISPER_OFFSET) / WHISPER_SCALE).T.contiguous().numpy()

    def spec(self):
        return {"name": self.name, "n_mels": self.dim}


def from_spec(spec: str | dict | FeatureExtractor) -> FeatureExtractor:
    """An extractor from its name ("fbank"), its ``spec()`` dict, or itself."""
    if isinstance(spec, FeatureExtractor):
        return spec
    if isinstance(spec, str):
        return FEATURES.build(spec)
    options = dict(spec)
    return FEATURES.build(options.pop("name"), **options)


def fbank(samples: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Kaldi-compatible log-mel filterbank, [frames, n_mels] float32, no dither.

    Samples are scaled to the int16 range first, as Kaldi expects.
    """
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0  # deterministic features; augmentation is done elsewhere
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = n_mels
    computer = knf.OnlineFbank(opts)
    computer.accept_waveform(SAMPLE_RATE, (samples * 32768.0).tolist())
    computer.input_finished()
    n = computer.num_frames_ready
    if n == 0:
        return np.zeros((0, n_mels), dtype=np.float32)
    return np.stack([computer.get_frame(i) for i in range(n)]).astype(np.float32)


def num_fbank_frames(num_samples: int) -> int:
    """Number of fbank frames for a given number of samples (snip_edges=False)."""
    return (num_samples + FBANK_HOP // 2) // FBANK_HOP
