"""What pseudo-speakers cost and whether they are other people (issue 24): the voice
conversions, rooms and codecs of synth/channel.py on real engine renderings.

    OMP_NUM_THREADS=1 .venv/bin/python bench/voice_transforms.py

Cost: CPU seconds per audio second of the plain pipeline (engine, warp, session channel) and
of each addition (Praat Change gender, WORLD, a simulated room's impulse response, codecs),
and from them how many training speakers the demo's training utterances could spread over.
Sanity: median F0 after a conversion against the asked median, spectral centroid for a
formant ratio below and above 1, T30 of simulated rooms against the drawn RT60. Identity:
resemblyzer cosines between utterances of one pseudo-speaker, of two pseudo-speakers of one
base voice (with conversion, and with today's profile only) and of two base voices.
Writes bench/out/voice_transforms.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from polyhead.audio import SAMPLE_RATE
from polyhead.data.synth import channel as chan
from polyhead.data.synth.build import PRESETS, Speaker, _dry_turn
from polyhead.data.synth.engines import Voice, available_voices
from polyhead.data.synth.text import TextSource, Utterance

OUT = Path(__file__).parent / "out" / "voice_transforms.json"
BASES = (Voice("mbrola", "us1", "en", "f"), Voice("mbrola", "us2", "en", "m"),
         Voice("espeak", "en-us+m3", "en", "m"), Voice("espeak", "en-gb+f2", "en", "f"))


def timed(fn, *args):
    start = time.process_time()
    out = fn(*args)
    return out, time.process_time() - start


def cpu_with_engines() -> float:
    """This process's CPU seconds plus its finished children's (the engines run as them)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def speaker(voice: Voice, rng: np.random.Generator, method: str | None) -> Speaker:
    profile = chan.random_profile(rng)
    if method:
        profile = dataclasses.replace(profile, transform=chan.random_transform(rng, voice.gender, method))
    return Speaker(f"{voice.name}", voice, ("en",), profile, [chan.clean_channel(rng)])


def cost(texts: list[str], rng: np.random.Generator) -> dict:
    """Seconds of CPU per second of audio, over the same utterances for every step."""
    spent = {k: 0.0 for k in ("plain", "praat", "world", "room_rir", "room_convolve", "mulaw", "lowbitrate")}
    audio = 0.0
    for i, text in enumerate(texts):
        spk = speaker(BASES[i % len(BASES)], rng, None)
        ch = chan.random_channel(rng, reverb_prob=0.0)
        start = cpu_with_engines()
        turn = _dry_turn(spk, Utterance(text=text, kind="sentence"), np.random.default_rng(i))
        chan.apply_channel(turn.samples, ch, np.random.default_rng(i))
        spent["plain"] += cpu_with_engines() - start
        x = turn.samples
        audio += len(x) / SAMPLE_RATE
        t = chan.random_transform(rng, spk.voice.gender)
        spent["praat"] += timed(chan.change_voice, x, t, np.random.default_rng(i))[1]
        spent["world"] += timed(chan.change_voice, x, dataclasses.replace(t, method="world"), np.random.default_rng(i))[1]
        rt60 = float(rng.uniform(0.15, 0.7))
        room = chan.random_room(rng, rt60)
        h, spent_rir = timed(chan.room_rir.__wrapped__, room, rt60)
        spent["room_rir"] += spent_rir
        from scipy import signal

        spent["room_convolve"] += timed(signal.fftconvolve, x, h)[1]
        spent["mulaw"] += timed(chan.apply_codec, x, chan.Codec("mulaw", 3400.0, 8))[1]
        spent["lowbitrate"] += timed(chan.apply_codec, x, chan.Codec("lowbitrate", 5500.0, 3))[1]
    per_s = {k: round(v / audio, 5) for k, v in spent.items()}
    rir_per_room = spent["room_rir"] / len(texts)
    return {"audio_seconds": round(audio, 1), "cpu_s_per_audio_s": per_s,
            "room_rir_s_per_room": round(rir_per_room, 4), "mean_utterance_s": round(audio / len(texts), 2)}


def afford(costs: dict) -> dict:
    """The demo's training utterances (speech_train + speaker_train) spread over speakers
    with k utterances each; the conversion's extra CPU time, and the demo's total synthesis
    (7.4 h of audio in ~4 min on 2 cores, measured by the lead) for scale."""
    demo = PRESETS["demo"]
    utts = demo.speech_speakers[0] * demo.speech_utts[0] + demo.speaker_speakers[0] * demo.speaker_sessions * demo.speaker_utts
    seconds = utts * costs["mean_utterance_s"]
    per_s = costs["cpu_s_per_audio_s"]
    rows = {}
    for method in ("praat", "world"):
        extra = seconds * per_s[method]
        rows[method] = {"extra_cpu_s_for_all_training_audio": round(extra),
                        "extra_wall_s_on_2_cores": round(extra / 2),
                        "speakers_at_k_utterances": {k: utts // k for k in (2, 3, 6)}}
    return {"training_utterances": utts, "training_audio_h": round(seconds / 3600, 2),
            "demo_wall_s": 240, **rows}


def sanity(texts: list[str]) -> dict:
    import parselmouth
    from pyroomacoustics.experimental import measure_rt60

    def median_f0(x):
        f = parselmouth.Sound(x.astype(np.float64), SAMPLE_RATE).to_pitch().selected_array["frequency"]
        return float(np.median(f[f > 0]))

    def centroid(x):
        spec = np.abs(np.fft.rfft(x)) ** 2
        return float((np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) * spec).sum() / spec.sum())

    out = {"f0": [], "centroid": [], "rt60": []}
    for i, voice in enumerate(BASES):
        spk = Speaker("x", voice, ("en",), chan.SpeakerProfile(50, 165, 1.0, 0, 0.0), [])
        x = _dry_turn(spk, Utterance(text=texts[i], kind="sentence"), np.random.default_rng(0)).samples
        for method in ("praat", "world"):
            lo, hi = chan.PITCH_MEDIAN_HZ[voice.gender]
            for target in (lo, hi):
                y = chan.change_voice(x, chan.VoiceTransform(method, 1.0, target, 1.0), np.random.default_rng(0))
                out["f0"].append({"voice": voice.id, "method": method, "source_hz": round(median_f0(x), 1),
                                  "asked_hz": target, "got_hz": round(median_f0(y), 1)})
            med = median_f0(x)
            c = {r: centroid(chan.change_voice(x, chan.VoiceTransform(method, r, med, 1.0), np.random.default_rng(0)))
                 for r in (0.9, 1.0, 1.1)}
            out["centroid"].append({"voice": voice.id, "method": method, "source_hz": round(centroid(x)),
                                    **{f"ratio_{r}": round(v) for r, v in c.items()}})
    rng = np.random.default_rng(0)
    for _ in range(12):
        rt60 = float(rng.uniform(0.15, 0.7))
        room = chan.random_room(rng, rt60)
        h = chan.room_rir(room, rt60)
        out["rt60"].append({"drawn_s": round(rt60, 3), "t30_s": round(float(measure_rt60(h, SAMPLE_RATE, decay_db=30)), 3),
                            "dims": [round(d, 1) for d in room.dims],
                            "mic_distance_m": round(float(np.linalg.norm(np.subtract(room.source, room.mic))), 2)})
    ratios = [r["t30_s"] / r["drawn_s"] for r in out["rt60"]]
    out["rt60_t30_over_drawn"] = [round(min(ratios), 2), round(float(np.median(ratios)), 2), round(max(ratios), 2)]
    return out


def identity(texts: list[str], per_speaker: int, pseudo: int) -> dict:
    """Resemblyzer cosines. For each base voice, `pseudo` speakers with a conversion and as
    many with today's profile only; `per_speaker` utterances each (distinct texts)."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    enc = VoiceEncoder("cpu", verbose=False)
    rng = np.random.default_rng(1)
    emb = {}  # (mode, base, speaker) -> list of embeddings
    k = 0
    for base in BASES:
        for mode in ("praat", "world", "profile"):
            for s in range(pseudo):
                spk = speaker(base, rng, None if mode == "profile" else mode)
                for _ in range(per_speaker):
                    x = _dry_turn(spk, Utterance(text=texts[k % len(texts)], kind="sentence"),
                                  np.random.default_rng(k)).samples
                    k += 1
                    emb.setdefault((mode, base.id, s), []).append(enc.embed_utterance(preprocess_wav(x, SAMPLE_RATE)))
    out = {}
    for mode in ("praat", "world", "profile"):
        keys = [key for key in emb if key[0] == mode]
        same, same_base, other_base = [], [], []
        for i, a in enumerate(keys):
            for b in keys[i:]:
                for ia, ea in enumerate(emb[a]):
                    for ib, eb in enumerate(emb[b]):
                        if a == b and ib <= ia:
                            continue
                        cos = float(ea @ eb)  # resemblyzer embeddings have unit norm
                        (same if a == b else same_base if a[1] == b[1] else other_base).append(cos)
        out[mode] = {"same_speaker": round(float(np.mean(same)), 3),
                     "same_base_other_speaker": round(float(np.mean(same_base)), 3),
                     "other_base": round(float(np.mean(other_base)), 3), "pairs": [len(same), len(same_base), len(other_base)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=24, help="for the cost")
    parser.add_argument("--pseudo", type=int, default=3, help="pseudo-speakers per base voice")
    parser.add_argument("--per-speaker", type=int, default=3)
    args = parser.parse_args()
    have = {v.id for v in available_voices()}
    missing = [v.id for v in BASES if v.id not in have]
    if missing:
        raise SystemExit(f"missing voices: {missing}")
    src = TextSource(0)
    texts = [src.sentence().text for _ in range(max(args.utterances, len(BASES) * args.pseudo * args.per_speaker * 3))]
    rng = np.random.default_rng(0)
    costs = cost(texts[: args.utterances], rng)
    out = {"cost": costs, "afford": afford(costs), "sanity": sanity(texts),
           "resemblyzer_cosine": identity(texts, args.per_speaker, args.pseudo)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
