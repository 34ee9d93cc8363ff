"""Hostile uploads against `polyhead serve`: every codec, sample rate and channel count the
decoder accepts, long and short, compressed silence; 64 requests at a time.

    .venv/bin/python bench/hostile_upload.py --quick     # about a minute
    .venv/bin/python bench/hostile_upload.py             # the full cross product (several minutes)

Builds the tests' tiny model (bench/tiny_server.py) into a temporary folder, serves it on
127.0.0.1 (one torch thread, ``--timeout 600`` so that queueing behind the long uploads is
not what is measured; bench/deadlines.py measures that) and sends, ``--concurrency`` (64) at a
time:

  codec     every (format, subtype) soundfile writes and polyhead's decoder reads back
            (1 s of noise, 16 kHz mono) -> /v1/audio/analyze
  rate      sample rates 1 kHz to 768 kHz (the decoder's range) -> analyze; quick: WAV, FLAC,
            OGG and MP3, each at the rates it can hold; full: every codec
  channels  1 to 1024 channels -> analyze; quick: WAV and FLAC; full: every codec
  short     30 ms (just above the 25 ms minimum) and 10 ms (refused: 400) in every codec
  long      5 minutes of noise (WAV, FLAC, OGG, MP3; full: 10 minutes, Opus too) ->
            /v1/audio/transcriptions and analyze (both the chunked long-form path)
  silence   an hour of compressed silence (FLAC: 176 kB for 57.6 M samples; OGG; full: MP3,
            Opus, FLAC at 96 kHz stereo) -> transcriptions, analyze and identify (past the
            speaker endpoints' 10-minute limit: 400); 10 minutes of 8-channel 384 kHz FLAC
            silence; two hours (past the service's 1-hour limit: 400)

MP3: libsndfile's own MP3 encoder writes files its decoder then refuses ("bad data offset"),
so the MP3 cases here are 400s; MP3 from other encoders decodes. libvorbis's encoder crashes
(SIGSEGV) at 384 kHz and above and at 256 channels and more, so every file is written in a
child process and such crashes count as "cannot write".

Reports, per kind, the answers by status and the latency, and the server's resident memory at
start, its peak (sampled every 0.1 s) and at the end; writes bench/out/hostile_upload.json.
Exit status 1 on any 5xx, transport error, server traceback or a dead server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_server import ROOT, serve, tiny_model  # noqa: E402

sys.path.insert(0, str(ROOT / "src"))
from polyhead.audio import AudioError, load_audio  # noqa: E402

RATES = (1000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000, 384000, 768000)
CHANNELS = (1, 2, 3, 6, 8, 16, 64, 256, 1024)
QUICK_RATE_CODECS = (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"))
QUICK_CHANNEL_CODECS = (("WAV", "PCM_16"), ("FLAC", "PCM_16"))
SUFFIX = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff"}


@dataclass
class Case:
    kind: str
    label: str
    endpoint: str
    name: str
    data: bytes


def encode(fmt: str, *args, **kwargs) -> bytes | None:
    """``_encode``; OGG (Vorbis, Opus) in a child process: libvorbis's encoder crashes this
    process outright (SIGSEGV) at some rates and channel counts it does not take (384 kHz,
    256 channels); a crash there means "cannot write", as an error does."""
    if fmt != "OGG":
        return _encode(fmt, *args, **kwargs)
    args = (fmt, *args)
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_encode_into, args=(send, args, kwargs))
    child.start()
    send.close()
    try:
        data = receive.recv()
    except EOFError:  # the child died
        data = None
    child.join()
    return data


def _encode_into(pipe, args, kwargs) -> None:
    pipe.send(_encode(*args, **kwargs))


def _encode(fmt: str, subtype: str, rate: int, seconds: float, channels: int = 1, silent: bool = False,
            seed: int = 0) -> bytes | None:
    """``seconds`` of noise (or silence) in that codec, written block by block; None when
    soundfile cannot write it (a rate or channel count the codec does not take)."""
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    frames = int(round(rate * seconds))
    try:
        with sf.SoundFile(buf, "w", rate, channels, subtype, format=fmt) as f:
            block = max(1, min(frames, (1 << 20) // channels))
            zeros = np.zeros((block, channels), np.float32)
            done = 0
            while done < frames:
                n = min(block, frames - done)
                f.write(zeros[:n] if silent else rng.uniform(-0.3, 0.3, (n, channels)).astype(np.float32))
                done += n
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        return None
    return buf.getvalue()


def decodes(data: bytes | None) -> bool:
    """Whether polyhead's decoder reads it (what the service would accept)."""
    if data is None:
        return False
    try:
        load_audio(data, max_seconds=3600)
        return True
    except AudioError:
        return False


def codecs() -> list[tuple[str, str]]:
    """Every (format, subtype) soundfile writes and the decoder reads back."""
    found = []
    for fmt in sf.available_formats():
        for subtype in sf.available_subtypes(fmt):
            if decodes(encode(fmt, subtype, 16000, 0.5)):
                found.append((fmt, subtype))
    return found


def name_of(fmt: str) -> str:
    return f"upload.{SUFFIX.get(fmt, fmt.lower())}"


def cases(quick: bool) -> tuple[list[Case], dict]:
    out: list[Case] = []
    accepted = codecs()
    analyze, transcribe, identify = "/v1/audio/analyze", "/v1/audio/transcriptions", "/v1/speakers/identify"
    for fmt, sub in accepted:
        out.append(Case("codec", f"{fmt}/{sub}", analyze, name_of(fmt), encode(fmt, sub, 16000, 1.0)))
        for seconds, label in ((0.030, "30 ms"), (0.010, "10 ms")):
            data = encode(fmt, sub, 16000, seconds)
            if data is not None:
                out.append(Case("short", f"{fmt}/{sub} {label}", analyze, name_of(fmt), data))
    rate_codecs = [c for c in accepted if not quick or c in QUICK_RATE_CODECS]
    rates_taken = defaultdict(list)
    for fmt, sub in rate_codecs:
        for rate in RATES:
            data = encode(fmt, sub, rate, 1.0)
            if decodes(data):
                rates_taken[f"{fmt}/{sub}"].append(rate)
                out.append(Case("rate", f"{fmt}/{sub} {rate} Hz", analyze, name_of(fmt), data))
    channel_codecs = [c for c in accepted if not quick or c in QUICK_CHANNEL_CODECS]
    channels_taken = defaultdict(list)
    for fmt, sub in channel_codecs:
        for channels in CHANNELS:
            data = encode(fmt, sub, 16000, 0.5 if channels <= 64 else 0.1, channels)
            if decodes(data):
                channels_taken[f"{fmt}/{sub}"].append(channels)
                out.append(Case("channels", f"{fmt}/{sub} {channels} ch", analyze, name_of(fmt), data))
    minutes = 5 if quick else 10
    long_codecs = [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]
    if not quick:
        long_codecs.append(("OGG", "OPUS"))
    for fmt, sub in long_codecs:
        data = encode(fmt, sub, 16000, 60 * minutes, seed=1)
        if data is not None and len(data) < 25 * 2**20:
            for endpoint in (transcribe, analyze):
                out.append(Case("long", f"{fmt}/{sub} {minutes} min", endpoint, name_of(fmt), data))
    silences = [("FLAC", "PCM_16", 16000, 1), ("OGG", "VORBIS", 16000, 1)]
    if not quick:
        silences += [("MP3", "MPEG_LAYER_III", 16000, 1), ("OGG", "OPUS", 16000, 1), ("FLAC", "PCM_16", 96000, 2)]
    for fmt, sub, rate, channels in silences:
        data = encode(fmt, sub, rate, 3600, channels, silent=True)
        if data is not None:
            label = f"{fmt}/{sub} 1 h silence {rate} Hz {channels} ch ({len(data) // 1024} kB)"
            for endpoint in (transcribe, analyze, identify):
                out.append(Case("silence", label, endpoint, name_of(fmt), data))
    wide = encode("FLAC", "PCM_16", 384000, 600, 8, silent=True)
    if wide is not None:
        out.append(Case("silence", f"FLAC 10 min silence 384 kHz 8 ch ({len(wide) // 1024} kB)", transcribe,
                        "upload.flac", wide))
    two_hours = encode("FLAC", "PCM_16", 16000, 7200, silent=True)
    out.append(Case("silence", f"FLAC 2 h silence ({len(two_hours) // 1024} kB): over the limit", transcribe,
                    "upload.flac", two_hours))
    return out, {"codecs": [f"{f}/{s}" for f, s in accepted], "rates": dict(rates_taken),
                 "channels": dict(channels_taken)}


async def send(client: httpx.AsyncClient, case: Case) -> tuple[int | str, float, str]:
    files = {"file": (case.name, case.data)}
    data = {"model": "polyhead"} if case.endpoint.endswith("transcriptions") else None
    start = time.perf_counter()
    try:
        r = await client.post(case.endpoint, files=files, data=data)
    except httpx.HTTPError as e:
        return type(e).__name__, time.perf_counter() - start, str(e)[:200]
    message = ""
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"][:160]
        except (ValueError, KeyError, TypeError):
            message = r.text[:160]
    return r.status_code, time.perf_counter() - start, message


async def drive(url: str, all_cases: list[Case], concurrency: int, server) -> tuple[list, float]:
    peak = [server.rss_mb() or 0.0]
    done = asyncio.Event()

    async def sample():
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_mb() or 0.0)
            await asyncio.sleep(0.1)

    gate = asyncio.Semaphore(concurrency)
    # a fresh connection per request: a pooled one the server closes as idle (uvicorn: after 5 s)
    # just as a request goes out on it is a client-side race, not what is measured here
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        async def one(case):
            async with gate:
                return await send(client, case)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(one(c) for c in all_cases))
        done.set()
        await sampler
    return results, peak[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a subset of the rates, channels and long files")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "hostile_upload.json"))
    args = parser.parse_args()

    start = time.time()
    all_cases, accepted = cases(args.quick)
    built = time.time() - start
    print(f"{len(all_cases)} requests built in {built:.0f} s ({len(accepted['codecs'])} codecs)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "model")
        with serve(model, Path(tmp) / "speakers.sqlite", ["--timeout", "600"]) as server:
            rss_start = server.rss_mb()
            wall = time.time()
            results, peak = asyncio.run(drive(server.url, all_cases, args.concurrency, server))
            wall = time.time() - wall
            rss_end, alive = server.rss_mb(), server.alive
            health = httpx.get(f"{server.url}/health", timeout=10).status_code if alive else None
        log = server.log.read_text()

    by_kind: dict[str, list] = defaultdict(list)
    rows = []
    for case, (status, seconds, message) in zip(all_cases, results):
        by_kind[case.kind].append((status, seconds))
        rows.append({"kind": case.kind, "case": case.label, "endpoint": case.endpoint, "bytes": len(case.data),
                     "status": status, "seconds": round(seconds, 3), "error": message})
    server_errors = [r for r in rows if isinstance(r["status"], int) and r["status"] >= 500]
    transport = [r for r in rows if not isinstance(r["status"], int)]
    print(f"\n{len(rows)} requests, {args.concurrency} at a time, in {wall:.1f} s\n")
    print("| kind | requests | answers | p50 (s) | max (s) |")
    print("|---|---:|---|---:|---:|")
    for kind in ("codec", "rate", "channels", "short", "long", "silence"):
        got = by_kind.get(kind, [])
        if not got:
            continue
        counts = Counter(str(s) for s, _ in got)
        answers = ", ".join(f"{k} x {v}" for k, v in sorted(counts.items()))
        secs = [s for _, s in got]
        print(f"| {kind} | {len(got)} | {answers} | {np.percentile(secs, 50):.2f} | {max(secs):.2f} |")
    print(f"\nserver RSS: {rss_start:.0f} MB at start, peak {peak:.0f} MB, {rss_end or 0:.0f} MB at the end; "
          f"5xx: {len(server_errors)}; transport errors: {len(transport)}; tracebacks: {log.count('Traceback')}; "
          f"alive: {alive}")
    refused = Counter(r["error"].split(": ", 1)[-1][:60] for r in rows if r["status"] == 400)
    for message, n in refused.most_common(8):
        print(f"  400 x {n}: {message}")
    report = {"quick": args.quick, "concurrency": args.concurrency, "wall_s": round(wall, 1),
              "requests": len(rows), "server_rss_mb": {"start": rss_start, "peak": round(peak, 1), "end": rss_end},
              "server_errors_5xx": len(server_errors), "transport_errors": len(transport),
              "server_tracebacks": log.count("Traceback"), "server_alive": alive, "health_after": health,
              "accepted": accepted, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = alive and health == 200 and not server_errors and not transport and "Traceback" not in log
    if not ok:
        for r in (server_errors + transport)[:10]:
            print("FAILED:", r, file=sys.stderr)
        print(log[-3000:], file=sys.stderr)
    print("OK" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
