"""Signal processing that turns one TTS voice into many speakers and sessions.

Speaker identity: a formant warp (audio re-timed as if recorded at another rate, which moves
the spectral envelope; the engine's speaking rate is pre-compensated) plus pitch and rate.
Session: a fixed channel (EQ, band limits, reverberation, coloured noise, level), so that
verification has to ignore the session. Every function takes an explicit numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from ...audio import SAMPLE_RATE


@dataclass(frozen=True)
class SpeakerProfile:
    pitch: int  # espeak pitch 0..99
    rate_wpm: int
    warp: float  # spectral-envelope scale; >1 sounds smaller/higher
    pitch_jitter: int  # per-utterance +- range
    rate_jitter: float  # per-utterance relative +- range


@dataclass(frozen=True)
class Channel:
    peaks: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, Q)
    highpass_hz: float
    lowpass_hz: float
    rt60_s: float  # 0 = dry
    noise_color: float  # spectral exponent: 0 white, 1 pink, 2 brown
    snr_db: float
    level_db: float  # peak level in dBFS


def random_profile(rng: np.random.Generator, jitter: float = 1.0) -> SpeakerProfile:
    return SpeakerProfile(
        pitch=int(rng.integers(20, 80)),
        rate_wpm=int(rng.integers(135, 205)),
        warp=float(np.exp(rng.uniform(np.log(0.88), np.log(1.14)))),
        pitch_jitter=int(round(12 * jitter)),
        rate_jitter=0.12 * jitter,
    )


def random_channel(rng: np.random.Generator, snr_range=(8.0, 35.0), reverb_prob=0.5,
                   rt60_max: float = 0.7) -> Channel:
    n_peaks = int(rng.integers(1, 4))
    peaks = tuple((float(np.exp(rng.uniform(np.log(150), np.log(5000)))),
                   float(rng.uniform(-10, 10)), float(rng.uniform(0.7, 2.5))) for _ in range(n_peaks))
    return Channel(
        peaks=peaks,
        highpass_hz=float(rng.uniform(40, 300)),
        lowpass_hz=float(rng.choice([3400.0, rng.uniform(4500, 7800)], p=[0.25, 0.75])),
        rt60_s=float(rng.uniform(0.15, rt60_max)) if rng.random() < reverb_prob else 0.0,
        noise_color=float(rng.choice([0.0, 1.0, 2.0])),
        snr_db=float(rng.uniform(*snr_range)),
        level_db=float(rng.uniform(-12, -2)),
    )


def warp_to_16k(samples: np.ndarray, rate: int, warp: float) -> np.ndarray:
    """Resample to 16 kHz as if the audio had been recorded at ``rate * warp``.

    This scales every frequency (formants and pitch) by ``warp`` and the duration by 1/warp.
    """
    return soxr.resample(samples, rate * warp, SAMPLE_RATE, quality="HQ").astype(np.float32)


def trim_silence(x: np.ndarray, threshold_db: float = -40.0, margin_s: float = 0.05) -> tuple[np.ndarray, int]:
    """Cut leading/trailing silence so speech labels of joined recordings are tight.
    Returns the trimmed samples and the index of the first kept sample."""
    frame = SAMPLE_RATE // 100
    n = len(x) // frame
    if n == 0:
        return x, 0
    energy = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12
    loud = np.nonzero(10 * np.log10(energy / energy.max()) > threshold_db)[0]
    if len(loud) == 0:
        return x, 0
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, loud[0] * frame - margin)
    return x[start: min(len(x), (loud[-1] + 1) * frame + margin)], start


def coloured_noise(rng: np.random.Generator, n: int, color: float) -> np.ndarray:
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f ** (color / 2.0), n)
    return (noise / (np.std(noise) + 1e-12)).astype(np.float32)


def room_impulse(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Direct path plus exponentially decaying noise tail (60 dB decay over rt60)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # a few ms before the first reflection
    ir = 0.3 * tail / (np.sqrt((tail ** 2).sum()) + 1e-12)
    ir[0] = 1.0
    return ir.astype(np.float32)


def _peaking(fc: float, gain_db: float, q: float) -> np.ndarray:
    """RBJ cookbook peaking-EQ biquad as second-order sections."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * fc / SAMPLE_RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def apply_channel(x: np.ndarray, ch: Channel, rng: np.random.Generator,
                  snr_jitter_db: float = 3.0) -> np.ndarray:
    sos = [signal.butter(2, ch.highpass_hz, "highpass", fs=SAMPLE_RATE, output="sos"),
           signal.butter(4, min(ch.lowpass_hz, SAMPLE_RATE / 2 - 100), "lowpass", fs=SAMPLE_RATE, output="sos")]
    sos += [_peaking(*p) for p in ch.peaks]
    y = signal.sosfilt(np.concatenate(sos), x).astype(np.float32)
    if ch.rt60_s > 0:
        y = signal.fftconvolve(y, room_impulse(rng, ch.rt60_s))[: len(y)].astype(np.float32)
    speech_power = float(np.mean(y ** 2)) + 1e-12
    snr = ch.snr_db + rng.uniform(-snr_jitter_db, snr_jitter_db)
    noise = coloured_noise(rng, len(y), ch.noise_color)
    y = y + noise * np.sqrt(speech_power / 10 ** (snr / 10))
    return normalise_peak(y, ch.level_db)


# Narrow-band telephone: G.712's pass band, 8 kHz sampling and G.711 mu-law companding.
TELEPHONE_BAND_HZ = (300.0, 3400.0)
TELEPHONE_RATE = 8000
MU_LAW = 255.0


def natural_profile(rng: np.random.Generator) -> SpeakerProfile:
    """The engine's own voice, barely changed: retention sets are about the text and the
    channel, not about a warped speaker."""
    return SpeakerProfile(pitch=int(rng.integers(40, 60)), rate_wpm=int(rng.integers(150, 185)), warp=1.0,
                          pitch_jitter=4, rate_jitter=0.05)


def clean_channel(rng: np.random.Generator) -> Channel:
    return Channel(peaks=(), highpass_hz=40.0, lowpass_hz=7800.0, rt60_s=0.0, noise_color=1.0,
                   snr_db=float(rng.uniform(35, 45)), level_db=float(rng.uniform(-8, -3)))


def telephone(x: np.ndarray, rng: np.random.Generator, snr_db: float = 30.0) -> np.ndarray:
    """A telephone call: band-pass, down to 8 kHz, mu-law 8-bit, line noise, back to 16 kHz."""
    sos = signal.butter(4, TELEPHONE_BAND_HZ, "bandpass", fs=SAMPLE_RATE, output="sos")
    y = signal.sosfilt(sos, x).astype(np.float32)
    y = soxr.resample(y, SAMPLE_RATE, TELEPHONE_RATE)
    y = normalise_peak(y, -3.0)
    power = float(np.mean(y ** 2)) + 1e-12
    y = y + rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    y = np.clip(y, -1.0, 1.0)
    companded = np.sign(y) * np.log1p(MU_LAW * np.abs(y)) / np.log1p(MU_LAW)
    quantised = np.round(companded * 127) / 127
    y = np.sign(quantised) * ((1 + MU_LAW) ** np.abs(quantised) - 1) / MU_LAW
    y = soxr.resample(y.astype(np.float32), TELEPHONE_RATE, SAMPLE_RATE)
    return normalise_peak(y, float(rng.uniform(-8, -3)))


def normalise_peak(y: np.ndarray, level_db: float) -> np.ndarray:
    peak = float(np.abs(y).max()) + 1e-9
    return (y * (10 ** (level_db / 20) / peak)).astype(np.float32)
