"""Audio I/O: decoding, checking and resampling samples before features are computed.

All audio inside polyhead is float32, mono, at SAMPLE_RATE. Decoding uses soundfile and
resampling soxr (torchaudio does not run here); features are in ``polyhead.features``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and what is wrong."""


MIN_SAMPLES = 400  # 25 ms: one fbank window, and the receptive field of wav2vec2's first frame
RATE_RANGE = (1_000, 768_000)  # sample rates outside this are header damage, not audio
MAX_PEAK = 1000.0  # float audio is nominally within [-1, 1]; 60 dB over full scale is a corrupt file
# (and such values overflow the features and the model into NaN)
BLOCK_VALUES = 1 << 18  # samples (frames x channels) decoded per block


def load_audio(source: str | Path | bytes, *, name: str | None = None,
               offset: float = 0.0, duration: float | None = None,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode a file (path or bytes) to float32 mono at SAMPLE_RATE.

    Stereo is down-mixed by averaging, any rate is resampled. Raises AudioError for
    anything that is not finite, decodable, non-empty audio, and for audio longer than
    ``max_seconds`` (decoding stops there: a small compressed file cannot expand without bound).
    Each block is resampled to SAMPLE_RATE as it is decoded, so what memory holds is the
    audio at 16 kHz: ``max_seconds`` is a fixed budget of 16 kHz samples whatever the file's
    own rate (a 768 kHz file no longer holds 48 times as many samples before it is refused).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise AudioError(f"{label}: file not found")
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with sf.SoundFile(handle) as f:
            rate = f.samplerate
            if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
                raise AudioError(f"{label}: unsupported sample rate {rate} Hz")
            if offset:
                f.seek(int(round(offset * rate)))
            frames = None if duration is None else int(round(duration * rate))
            budget = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
            data = _read_mono(f, frames, budget, label)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{label}: not a readable audio file ({e})") from None
    if data.size == 0:
        raise AudioError(f"{label}: empty audio (0 samples)")
    return _long_enough(data, label)


def _read_mono(f: sf.SoundFile, frames: int | None, budget: int | None, label: str) -> np.ndarray:
    """Read block by block, down-mixing, checking and resampling to SAMPLE_RATE as we go:
    memory follows the audio actually there (never the length a possibly damaged header
    claims), at 16 kHz; past ``budget`` samples at 16 kHz (its duration, whatever the file's
    rate) decoding stops. Bit-identical to resampling the whole file at once (soxr's stream)."""
    rate = f.samplerate
    block = max(1, BLOCK_VALUES // f.channels)
    stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                                  quality="HQ")
    parts, total = [], 0
    while frames is None or total < frames:
        want = block if frames is None else min(block, frames - total)
        data = f.read(want, dtype="float32", always_2d=True)
        if len(data) == 0:
            break
        total += len(data)
        if budget is not None and total * SAMPLE_RATE > budget * rate:  # duration past the limit
            raise AudioError(f"{label}: longer than the limit of {budget / SAMPLE_RATE:g} s")
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        _check_samples(mono, label)  # before resampling spreads a bad sample over its neighbours
        parts.append(mono if stream is None else stream.resample_chunk(mono, last=False))
    if stream is not None and total:
        parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


def _check_samples(data: np.ndarray, name: str) -> None:
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"{name}: samples up to {peak:.3g}, far outside the [-1, 1] of audio "
                         f"(limit {MAX_PEAK:g}); a corrupt or mislabelled float file")


def _long_enough(data: np.ndarray, name: str) -> np.ndarray:
    if len(data) < MIN_SAMPLES:
        raise AudioError(f"{name}: too short ({len(data) / SAMPLE_RATE * 1000:.1f} ms); "
                         f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:g} ms needed")
    return data


def audio_seconds(source: str | Path | bytes, *, name: str | None = None,
                  max_seconds: float | None = None) -> float:
    """The duration of a file (path or bytes), every block decoded and checked as
    ``load_audio`` checks it (the same AudioErrors, the same messages) but none kept: memory
    is one block whatever the length. For a caller that needs to know only whether a long
    upload is audio and within ``max_seconds`` (an hour of compressed silence is 100 kB
    uploaded, 230 MB decoded)."""
    label = name or (str(source) if not isinstance(source, bytes) else "<upload>")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise AudioError(f"{label}: file not found")
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    total = 0
    try:
        with sf.SoundFile(handle) as f:
            rate = f.samplerate
            if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
                raise AudioError(f"{label}: unsupported sample rate {rate} Hz")
            budget = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
            block = max(1, BLOCK_VALUES // f.channels)
            while len(data := f.read(block, dtype="float32", always_2d=True)):
                total += len(data)
                if budget is not None and total * SAMPLE_RATE > budget * rate:
                    raise AudioError(f"{label}: longer than the limit of {budget / SAMPLE_RATE:g} s")
                _check_samples(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], label)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{label}: not a readable audio file ({e})") from None
    if total == 0:
        raise AudioError(f"{label}: empty audio (0 samples)")
    if total * SAMPLE_RATE < MIN_SAMPLES * rate:
        raise AudioError(f"{label}: too short ({total / rate * 1000:.1f} ms); "
                         f"at least {MIN_SAMPLES / SAMPLE_RATE * 1000:g} ms needed")
    return total / rate


def to_model_audio(data: np.ndarray, rate: int, *, name: str = "<audio>") -> np.ndarray:
    """Down-mix (channels last), resample and validate an array of samples."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.ndim != 1:
        raise AudioError(f"{name}: expected 1-D or 2-D samples, got shape {data.shape}")
    if data.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    _check_samples(data, name)
    if rate <= 0:
        raise AudioError(f"{name}: invalid sample rate {rate}")
    if rate != SAMPLE_RATE:
        data = soxr.resample(data, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return _long_enough(data, name)


# An input whose peak stays below this holds no speech, whatever a model says about it.
SILENCE_PEAK_DBFS = -60.0


def is_silent(samples: np.ndarray) -> bool:
    """True for exact digital silence, and for audio whose peak is below SILENCE_PEAK_DBFS
    (1/1000 of full scale: 16-bit samples within +-32, under 6 of the 16 bits used). That
    is a muted or unplugged input, not a quiet talker: speech recorded with any gain peaks
    tens of dB higher (the corpora's between -12 and -2 dBFS, telephone speech -8 to -3).
    Inference uses it as a floor under the VAD head: such input gets no speech segment and
    no transcript, so a decoder never writes over a muted microphone."""
    samples = np.asarray(samples)
    return not samples.size or float(np.max(np.abs(samples))) < 10 ** (SILENCE_PEAK_DBFS / 20)


def save_audio(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV, clipping to [-1, 1]."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")
