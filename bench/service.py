"""Service throughput with and without dynamic batching: `polyhead serve` on loopback, N
concurrent clients posting a clip of a few seconds to /v1/audio/transcriptions.

    .venv/bin/python bench/service.py --run runs/demo_bn --clients 16 --seconds 60

For each mode a fresh server process is started on a free port, warmed up with one request
per client, then loaded for a fixed time (or number of requests). Every clip is cut to the
same length (so batching is not judged on padding) and every request differs in one sample
(so none is answered from the response cache). Writes bench/out/service.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
CLIP_POOL = 16  # distinct source clips, cycled through by the clients
START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 300.0
MODES = {"batching": "on", "no batching": "off"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/demo_bn", help="run or checkpoint folder to serve")
    p.add_argument("--corpus", default="corpora/demo", help="clips come from <corpus>/audio/<set>")
    p.add_argument("--set", default="speech_test")
    p.add_argument("--clip-s", type=float, default=3.0, help="every request's audio length")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0, help="load time per mode")
    p.add_argument("--requests", type=int, default=None, help="stop a mode after this many requests")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-window-ms", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: its own)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--out", default="bench/out/service.json")
    return p.parse_args()


def source_clips(corpus: str, set_name: str, clip_s: float) -> tuple[list[np.ndarray], str]:
    """CLIP_POOL int16 clips of exactly ``clip_s`` seconds: corpus recordings (looped when
    shorter), or generated voiced sounds when there is no corpus."""
    n = int(clip_s * SAMPLE_RATE)
    paths = sorted((Path(corpus) / "audio" / set_name).rglob("*.wav"))[:CLIP_POOL]
    if paths:
        from polyhead.audio import load_audio

        clips = [np.resize(load_audio(p), n) for p in paths]
        source = f"{corpus}/audio/{set_name} ({len(paths)} recordings)"
    else:
        rng = np.random.default_rng(0)
        t = np.arange(n) / SAMPLE_RATE
        clips = []
        for _ in range(CLIP_POOL):  # a gliding pitch with harmonics, syllable-rate envelope, noise
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            voice = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
            clips.append(0.1 * voice + 0.005 * rng.normal(size=n))
        source = "generated (no corpus found)"
    return [(np.clip(c, -1, 1) * 32767).astype(np.int16) for c in clips], source


def wav_bytes(clip: np.ndarray, request: int) -> bytes:
    """The clip as WAV with the request number in its first two samples: a distinct upload
    per request, so the server's response cache never answers."""
    pcm = clip.copy()
    pcm[0], pcm[1] = divmod(request % (1 << 30), 1 << 15)
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, batching: bool, workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [sys.executable, "-m", "polyhead.cli", "serve", "--model", args.run, "--host", "127.0.0.1",
            "--port", str(port), "--registry", str(workdir / "speakers.sqlite")]
    argv += ["--max-batch", str(args.max_batch), "--batch-window-ms", str(args.batch_window_ms)] if batching \
        else ["--no-batching"]
    argv += ["--threads", str(args.threads)] if args.threads else []
    log = workdir / f"server-{'on' if batching else 'off'}.log"
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"server did not answer /health within {START_TIMEOUT_S:g} s")


def batch_stats(url: str) -> tuple[float, float]:
    """(encoder forwards, analyses) so far, from the server's polyhead_batch_size histogram."""
    values = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("polyhead_batch_size_count ", "polyhead_batch_size_sum ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("polyhead_batch_size_count", 0.0), values.get("polyhead_batch_size_sum", 0.0)


async def load(url: str, clips: list[np.ndarray], clients: int, seconds: float, limit: int | None,
               first_request: int) -> tuple[list[float], float, int]:
    """Run ``clients`` loops posting clips until time or the request limit is up; returns
    the latencies, the elapsed time and the number of failed requests."""
    counter = {"next": first_request, "issued": 0, "failed": 0}
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def client(http: httpx.AsyncClient):
        while time.perf_counter() < deadline and (limit is None or counter["issued"] < limit):
            n = counter["next"]
            counter["next"] += 1
            counter["issued"] += 1
            body = wav_bytes(clips[n % len(clips)], n)
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/audio/transcriptions", files={"file": (f"{n}.wav", body)},
                                data={"model": "polyhead"})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                counter["failed"] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies, time.perf_counter() - start, counter["failed"]


def measure(args, clips, batching: bool, workdir: Path) -> dict:
    proc, url = start_server(args, batching, workdir)
    try:
        # Warm-up: one request per client (first calls allocate, fill caches, start threads).
        asyncio.run(load(url, clips, args.clients, REQUEST_TIMEOUT_S, args.clients, first_request=0))
        forwards0, analyses0 = batch_stats(url)
        latencies, elapsed, failed = asyncio.run(load(url, clips, args.clients, args.seconds, args.requests,
                                                      first_request=1_000_000))
        forwards1, analyses1 = batch_stats(url)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    forwards = forwards1 - forwards0
    return {"requests": len(latencies), "failed": failed, "seconds": round(elapsed, 2),
            "throughput_rps": round(len(latencies) / elapsed, 2),
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
            "mean_batch": round((analyses1 - analyses0) / forwards, 2) if forwards else None}


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"{cfg['clients']} clients, {cfg['clip_s']:g} s clips, {cfg['seconds']:g} s per mode, "
             f"max batch {cfg['max_batch']}, window {cfg['batch_window_ms']:g} ms, {cfg['cpus']} CPUs "
             f"(load average {cfg['load_average']:.2f} before)", "",
             "| mode | requests | req/s | p50 latency (s) | p95 latency (s) | mean batch |",
             "|---|---|---|---|---|---|"]
    for mode, r in result["modes"].items():
        lines.append(f"| {mode} | {r['requests']} | {r['throughput_rps']:.2f} | {r['latency_p50_s']:.3f} "
                     f"| {r['latency_p95_s']:.3f} | {r['mean_batch']} |")
    if result.get("speedup") is not None:
        lines += ["", f"Throughput with batching / without: **{result['speedup']:.2f}x**"]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    clips, source = source_clips(args.corpus, args.set, args.clip_s)
    result = {"config": {"run": args.run, "clips": source, "clip_s": args.clip_s, "clients": args.clients,
                         "seconds": args.seconds, "requests": args.requests, "max_batch": args.max_batch,
                         "batch_window_ms": args.batch_window_ms, "threads": args.threads,
                         "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]},
              "modes": {}}
    with tempfile.TemporaryDirectory(prefix="polyhead-bench-") as tmp:
        for mode in args.modes:
            print(f"{mode}: serving {args.run} to {args.clients} clients for {args.seconds:g} s ...", flush=True)
            r = measure(args, clips, MODES[mode] == "on", Path(tmp))
            result["modes"][mode] = r
            print(f"  {r}", flush=True)
    modes = result["modes"]
    if {"batching", "no batching"} <= set(modes) and modes["no batching"]["throughput_rps"]:
        result["speedup"] = round(modes["batching"]["throughput_rps"] / modes["no batching"]["throughput_rps"], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
