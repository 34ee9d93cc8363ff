"""Signal processing that turns one TTS voice into many speakers and sessions.

Speaker identity: a formant warp (audio re-timed as if recorded at another rate, which moves
the spectral envelope; the engine's speaking rate is pre-compensated) plus pitch and rate.
Pseudo-speakers (``VoiceTransform``, drawn once per speaker, off by default): a voice
conversion on top of the warp (Praat's "Change gender", or WORLD) with the speaker's own
formant ratio, median F0 and F0 range, so that one base voice yields voices a speaker
embedder tells apart.

Session: a fixed channel (EQ, band limits, reverberation, coloured noise, level), so that
verification has to ignore the session; optionally a simulated room (``Room``: image sources
in a shoebox, then a statistical tail) and a codec (``Codec``). Every function takes an
explicit numpy Generator.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import soxr
from scipy import signal

from ...audio import SAMPLE_RATE


@dataclass(frozen=True)
class VoiceTransform:
    """A voice conversion applied to every utterance of one speaker (method "none": none)."""

    method: str = "none"  # none | praat (Change gender) | world (WORLD vocoder)
    formant_ratio: float = 1.0  # spectral envelope scale; >1 a shorter vocal tract
    pitch_median_hz: float = 0.0  # the speaker's median F0; 0 keeps the engine's
    pitch_range: float = 1.0  # F0 excursions about the median: <1 flatter, >1 livelier
    duration: float = 1.0  # >1 slower (uniform stretch)
    pitch_jitter_st: float = 0.0  # per-utterance +- semitones about the median


NO_TRANSFORM = VoiceTransform()


@dataclass(frozen=True)
class SpeakerProfile:
    pitch: int  # espeak pitch 0..99
    rate_wpm: int
    warp: float  # spectral-envelope scale; >1 sounds smaller/higher
    pitch_jitter: int  # per-utterance +- range
    rate_jitter: float  # per-utterance relative +- range
    transform: VoiceTransform = NO_TRANSFORM


@dataclass(frozen=True)
class Room:
    """A shoebox room for the image-source method; RT60 is the session's ``rt60_s``."""

    dims: tuple[float, float, float]  # metres
    source: tuple[float, float, float]
    mic: tuple[float, float, float]
    seed: int  # of the statistical late tail (one room, one impulse response)


@dataclass(frozen=True)
class Codec:
    kind: str  # mulaw (8 kHz G.711 with a telephone band) | lowbitrate (coarse transform coding)
    band_hz: float  # upper band edge
    bits: int  # lowbitrate: bits per coefficient relative to its band's peak


@dataclass(frozen=True)
class Channel:
    peaks: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, Q)
    highpass_hz: float
    lowpass_hz: float
    rt60_s: float  # 0 = dry
    noise_color: float  # spectral exponent: 0 white, 1 pink, 2 brown
    snr_db: float
    level_db: float  # peak level in dBFS
    room: Room | None = None  # None: the synthetic exponential tail (room_impulse)
    codec: Codec | None = None


def random_profile(rng: np.random.Generator, jitter: float = 1.0) -> SpeakerProfile:
    return SpeakerProfile(
        pitch=int(rng.integers(20, 80)),
        rate_wpm=int(rng.integers(135, 205)),
        warp=float(np.exp(rng.uniform(np.log(0.88), np.log(1.14)))),
        pitch_jitter=int(round(12 * jitter)),
        rate_jitter=0.12 * jitter,
    )


# Within-gender median F0 ranges (Hz): a transform keeps the base voice's gender label right.
PITCH_MEDIAN_HZ = {"m": (85.0, 165.0), "f": (160.0, 270.0)}


def random_transform(rng: np.random.Generator, gender: str, method: str = "praat",
                     jitter: float = 1.0) -> VoiceTransform:
    """A pseudo-speaker's voice. The speaking rate stays the engine's (``rate_wpm``: the
    engine times phones better than a uniform stretch), so ``duration`` is 1. Formant
    ratios 0.8-1.25: with 0.9-1.1 resemblyzer found two conversions of one base voice no
    further apart than today's warp alone (bench/voice_transforms.py)."""
    lo, hi = PITCH_MEDIAN_HZ.get(gender, (85.0, 270.0))
    return VoiceTransform(
        method=method,
        formant_ratio=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
        pitch_median_hz=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        pitch_range=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        pitch_jitter_st=1.0 * jitter,
    )


def random_room(rng: np.random.Generator, rt60: float) -> Room:
    """Random shoebox (3-10 x 2.5-8 x 2.4-4 m), shrunk where Sabine's formula would need
    walls absorbing more than 90% to reach ``rt60``; a talker at 1.1-1.9 m height and a
    microphone 0.3-3 m away, both at least 0.4 m from the walls."""
    dims = np.array([rng.uniform(3, 10), rng.uniform(2.5, 8), rng.uniform(2.4, 4)])
    dims *= min(1.0, 0.9 / _sabine_absorption(dims, rt60))
    margin = 0.4
    src = np.array([rng.uniform(margin, d - margin) for d in dims[:2]] + [rng.uniform(1.1, min(1.9, dims[2] - margin))])
    angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 3.0)
    mic = src + np.array([dist * np.cos(angle), dist * np.sin(angle), rng.uniform(-0.6, 0.2)])
    mic = np.clip(mic, margin, dims - margin)
    return Room(tuple(map(float, dims)), tuple(map(float, src)), tuple(map(float, mic)), int(rng.integers(2**31)))


def random_codec(rng: np.random.Generator) -> Codec:
    if rng.random() < 0.5:
        return Codec("mulaw", TELEPHONE_BAND_HZ[1], 8)
    return Codec("lowbitrate", float(rng.choice([4000.0, 5500.0, 7000.0])), int(rng.integers(2, 5)))


def random_channel(rng: np.random.Generator, snr_range=(8.0, 35.0), reverb_prob=0.5,
                   rt60_max: float = 0.7, room_simulator: bool = False, codec_prob: float = 0.0) -> Channel:
    ch = _random_channel(rng, snr_range, reverb_prob, rt60_max)
    # drawn after today's fields, and only when asked: presets without them keep their draws
    if room_simulator and ch.rt60_s > 0:
        ch = dataclasses.replace(ch, room=random_room(rng, ch.rt60_s))
    if codec_prob > 0 and rng.random() < codec_prob:
        ch = dataclasses.replace(ch, codec=random_codec(rng))
    return ch


def _random_channel(rng: np.random.Generator, snr_range, reverb_prob, rt60_max) -> Channel:
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


def _sabine_absorption(dims, rt60: float) -> float:
    """Wall absorption coefficient that gives ``rt60`` by Sabine's formula (c = 343 m/s)."""
    lx, ly, lz = dims
    return 24 * np.log(10) / 343.0 * lx * ly * lz / (2 * (lx * ly + lx * lz + ly * lz) * rt60)


ISM_ORDER = 16  # image sources up to this order; cost grows with its cube


@functools.lru_cache(maxsize=512)
def room_rir(room: Room, rt60: float) -> np.ndarray:
    """Impulse response of ``room`` (pyroomacoustics' image-source method) with its direct
    path at sample 0. Images are complete only up to ISM_ORDER reflections, i.e. for
    ``t_mix = ISM_ORDER * min(dims) / (sqrt(3) c)``; after that a Gaussian tail decaying
    60 dB per ``rt60``, matched to the images' energy just before ``t_mix``, carries the
    late reverberation (full-order images would cost 0.2-1 s a room). Cached: every
    utterance of a session shares the room."""
    import pyroomacoustics as pra

    c = 343.0
    shoebox = pra.ShoeBox(list(room.dims), fs=SAMPLE_RATE, max_order=ISM_ORDER,
                          materials=pra.Material(float(min(0.99, _sabine_absorption(room.dims, rt60)))))
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.mic))
    shoebox.compute_rir()
    h = np.asarray(shoebox.rir[0][0], np.float64)
    h = h[max(0, int(np.argmax(np.abs(h))) - 4):]  # drop the propagation delay: labels stay put
    n = int(max(rt60, 0.05) * SAMPLE_RATE)
    mix = int(ISM_ORDER * min(room.dims) / (np.sqrt(3) * c) * SAMPLE_RATE)
    win = int(0.02 * SAMPLE_RATE)
    if mix < n and mix - win > 0:
        t = np.arange(n) / SAMPLE_RATE
        env = np.exp(-6.9 * t / rt60)
        ref = float(np.mean(h[mix - win:mix] ** 2)) / float(np.mean(env[mix - win:mix] ** 2))
        tail = np.random.default_rng(room.seed).standard_normal(n) * env * np.sqrt(ref)
        fade = np.clip((np.arange(n) - (mix - win)) / win, 0.0, 1.0)  # cross-fade over `win`
        early = np.zeros(n)
        early[: min(n, len(h))] = h[:n]
        h = early * (1 - fade) + tail * fade
    return (h / np.abs(h[:8]).max()).astype(np.float32)


def change_voice(x: np.ndarray, t: VoiceTransform, rng: np.random.Generator) -> np.ndarray:
    """``x`` (16 kHz) spoken by the transform's voice; the same array when method is "none".
    The median F0 moves by up to +-``pitch_jitter_st`` semitones per utterance."""
    if t.method == "none":
        return x
    median = t.pitch_median_hz * 2 ** (rng.uniform(-t.pitch_jitter_st, t.pitch_jitter_st) / 12)
    if t.method == "praat":
        return _praat_change_gender(x, t, median, int(rng.integers(2**31)))
    if t.method == "world":
        return _world_convert(x, t, median)
    raise ValueError(f"unknown voice transform {t.method!r}")


def _praat_change_gender(x: np.ndarray, t: VoiceTransform, median: float, seed: int) -> np.ndarray:
    import parselmouth
    from parselmouth.praat import call, run

    snd = parselmouth.Sound(x.astype(np.float64), sampling_frequency=SAMPLE_RATE)
    # Praat's overlap-add draws random numbers (in unvoiced stretches): seed its generator
    run(f"random_initializeWithSeedUnsafelyButPredictably ({seed})")
    try:
        # pitch floor and ceiling 75-600 Hz, as Praat's own defaults
        out = call(snd, "Change gender", 75, 600, t.formant_ratio, median, t.pitch_range, t.duration)
    except parselmouth.PraatError as e:  # e.g. no voiced frame at all
        raise ValueError(f"Change gender failed: {e}") from e
    finally:
        run("random_initializeSafelyAndUnpredictably ()")
    return out.values[0].astype(np.float32)


def _pyworld():
    """pyworld 0.3.5's __init__ only reads its version through pkg_resources, which recent
    setuptools lacks: load the compiled module itself when that import fails."""
    try:
        import pyworld
        return pyworld
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise
    import importlib.machinery
    import importlib.util
    import sys

    if "pyworld.pyworld" in sys.modules:
        return sys.modules["pyworld.pyworld"]
    spec = importlib.util.find_spec("pyworld")
    folder = spec.submodule_search_locations[0]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = f"{folder}/pyworld{suffix}"
        try:
            ext = importlib.util.spec_from_file_location("pyworld.pyworld", path)
            module = importlib.util.module_from_spec(ext)
            ext.loader.exec_module(module)
            sys.modules["pyworld.pyworld"] = module
            return module
        except (ImportError, FileNotFoundError):
            continue
    raise ImportError("pyworld's compiled module not found")


def _world_convert(x: np.ndarray, t: VoiceTransform, median: float) -> np.ndarray:
    """WORLD analysis (DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity), then the
    envelope and aperiodicity read at f / formant_ratio (a vocal-tract length change), log F0
    moved to ``median`` and scaled about it by ``pitch_range``, frames stretched by duration."""
    pw = _pyworld()
    xd = np.ascontiguousarray(x, dtype=np.float64)
    f0, times = pw.dio(xd, SAMPLE_RATE, f0_floor=60.0, f0_ceil=600.0)
    f0 = pw.stonemask(xd, f0, times, SAMPLE_RATE)
    sp = pw.cheaptrick(xd, f0, times, SAMPLE_RATE)
    ap = pw.d4c(xd, f0, times, SAMPLE_RATE)
    voiced = f0 > 0
    if not voiced.any():
        raise ValueError("WORLD found no voiced frame")
    bins = np.arange(sp.shape[1], dtype=np.float64)
    src = np.clip(bins / t.formant_ratio, 0, sp.shape[1] - 1)
    sp = np.ascontiguousarray(np.array([np.interp(src, bins, row) for row in sp]))
    ap = np.ascontiguousarray(np.array([np.interp(src, bins, row) for row in ap]))
    log_f0 = np.log(f0[voiced])
    centre = float(np.median(log_f0))
    f0 = f0.copy()
    f0[voiced] = np.exp(np.log(median) + t.pitch_range * (log_f0 - centre))
    y = pw.synthesize(f0, sp, ap, SAMPLE_RATE, frame_period=5.0 * t.duration)
    return y.astype(np.float32)


def lowbitrate(x: np.ndarray, band_hz: float, bits: int) -> np.ndarray:
    """A crude transform codec: 20 ms STFT frames, nothing above ``band_hz``, and each of 16
    bands' coefficients quantised to ``bits`` bits of its own peak, so quiet coefficients
    vanish (the spectral holes and 'birdies' of a starved codec)."""
    nper = SAMPLE_RATE // 50
    _, _, z = signal.stft(x, fs=SAMPLE_RATE, nperseg=nper, noverlap=nper // 2)
    freqs = np.fft.rfftfreq(nper, 1 / SAMPLE_RATE)
    z[freqs > band_hz] = 0
    top = int(np.searchsorted(freqs, band_hz))
    edges = np.unique(np.geomspace(1, max(top, 2), 17).astype(int))
    levels = 2 ** (bits - 1) - 1
    for a, b in zip(np.r_[0, edges[:-1]], edges):
        scale = np.abs(z[a:b]).max(axis=0, keepdims=True) + 1e-12
        for part in (z[a:b].real, z[a:b].imag):
            part[:] = np.round(part / scale * levels) / levels * scale
    _, y = signal.istft(z, fs=SAMPLE_RATE, nperseg=nper, noverlap=nper // 2)
    return y[: len(x)].astype(np.float32)


def apply_codec(y: np.ndarray, codec: Codec) -> np.ndarray:
    if codec.kind == "mulaw":
        return _mulaw_8k(y)
    if codec.kind == "lowbitrate":
        return lowbitrate(y, codec.band_hz, codec.bits)
    raise ValueError(f"unknown codec {codec.kind!r}")


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
        ir = room_rir(ch.room, ch.rt60_s) if ch.room is not None else room_impulse(rng, ch.rt60_s)
        y = signal.fftconvolve(y, ir)[: len(y)].astype(np.float32)
    speech_power = float(np.mean(y ** 2)) + 1e-12
    snr = ch.snr_db + rng.uniform(-snr_jitter_db, snr_jitter_db)
    noise = coloured_noise(rng, len(y), ch.noise_color)
    y = y + noise * np.sqrt(speech_power / 10 ** (snr / 10))
    if ch.codec is not None:  # the line after the room: a phone or a conferencing codec
        y = apply_codec(normalise_peak(y, -1.0), ch.codec)
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
    return normalise_peak(_mulaw_8k(x, rng, snr_db), float(rng.uniform(-8, -3)))


def _mulaw_8k(x: np.ndarray, rng: np.random.Generator | None = None, snr_db: float = 30.0) -> np.ndarray:
    """G.712 band-pass, 8 kHz, (line noise where ``rng`` is given), mu-law 8 bit, 16 kHz."""
    sos = signal.butter(4, TELEPHONE_BAND_HZ, "bandpass", fs=SAMPLE_RATE, output="sos")
    y = signal.sosfilt(sos, x).astype(np.float32)
    y = soxr.resample(y, SAMPLE_RATE, TELEPHONE_RATE)
    y = normalise_peak(y, -3.0)
    if rng is not None:
        power = float(np.mean(y ** 2)) + 1e-12
        y = y + rng.standard_normal(len(y)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    y = np.clip(y, -1.0, 1.0)
    companded = np.sign(y) * np.log1p(MU_LAW * np.abs(y)) / np.log1p(MU_LAW)
    quantised = np.round(companded * 127) / 127
    y = np.sign(quantised) * ((1 + MU_LAW) ** np.abs(quantised) - 1) / MU_LAW
    return soxr.resample(y.astype(np.float32), TELEPHONE_RATE, SAMPLE_RATE)


def normalise_peak(y: np.ndarray, level_db: float) -> np.ndarray:
    peak = float(np.abs(y).max()) + 1e-9
    return (y * (10 ** (level_db / 20) / peak)).astype(np.float32)
