"""Service under load: `polyhead serve` on loopback, many concurrent clients, nothing may break.

    .venv/bin/python bench/load.py                                  # 32 clients, 5 minutes
    .venv/bin/python bench/load.py --clients 8 --duration 20        # a quick check

Starts the server (a random free port on 127.0.0.1, a fresh speaker registry) and drives it
with --clients concurrent clients for --duration seconds:

  * most post short utterances (corpora/demo test sets, or generated tones when absent) to
    /v1/audio/transcriptions and /v1/audio/analyze, each upload slightly rescaled so that
    the server's cache does not answer it;
  * about one in eight enrol speakers under new names and identify, concurrently;
  * about one in ten open an upload and hang up half way through it.

Then it enrols --clients more names all at once and counts, in the registry's SQLite file,
every name the server acknowledged but did not keep (lost writes). Reports requests, answers
by status (a 5xx is a failure), p50/p95 latency per endpoint, the server's resident memory at
start and end (and its peak), and writes bench/out/load.json. Exit status 1 on any 5xx, lost
write, transport error or a dead server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
TEST_SETS = ("speech_test", "speaker_test", "ood_test")


from tiny_server import free_port, rss_mb  # noqa: E402  (one definition for the service benches)


def clips(corpus: Path, count: int, max_s: float = 6.0) -> list[np.ndarray]:
    """Short utterances from the corpus test sets, or tones when there is no corpus."""
    files = [f for s in TEST_SETS for f in sorted((corpus / "audio" / s).rglob("*.wav"))] \
        if (corpus / "audio").is_dir() else []
    rng = random.Random(0)
    rng.shuffle(files)
    out = []
    for f in files:
        x, rate = sf.read(f, dtype="float32", always_2d=True)
        if rate == 16000 and len(x) <= max_s * rate:
            out.append(x[:, 0])
        if len(out) == count:
            return out
    t = np.arange(16000 * 2) / 16000
    while len(out) < count:  # no corpus: tones of different pitch and length
        f0 = 120 + 40 * len(out)
        out.append((0.2 * np.sin(2 * np.pi * f0 * t[: 8000 * (2 + len(out) % 3)])).astype(np.float32))
    return out


def wav_bytes(x: np.ndarray, rng: random.Random) -> bytes:
    """The clip at a random gain: different bytes every time, so no cache hit."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(x * rng.uniform(0.5, 1.0), -1, 1), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class Stats:
    def __init__(self):
        self.status: Counter = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.transport_errors: Counter = Counter()
        self.disconnects = 0
        self.enrolled: set[str] = set()

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        self.status[status] += 1
        self.latency[endpoint].append(seconds)


async def post(client: httpx.AsyncClient, stats: Stats, endpoint: str, **kwargs) -> httpx.Response | None:
    start = time.perf_counter()
    try:
        r = await client.post(endpoint, **kwargs)
    except httpx.HTTPError as e:
        stats.transport_errors[type(e).__name__] += 1
        return None
    stats.record(endpoint, r.status_code, time.perf_counter() - start)
    return r


async def audio_client(i, client, stats, audio, deadline) -> None:
    rng = random.Random(i)
    while time.monotonic() < deadline:
        data = wav_bytes(rng.choice(audio), rng)
        if rng.random() < 0.5:
            await post(client, stats, "/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                       data={"model": "polyhead"})
        else:
            await post(client, stats, "/v1/audio/analyze", files={"file": ("a.wav", data)})


async def speaker_client(i, client, stats, audio, deadline) -> None:
    rng, n = random.Random(1000 + i), 0
    while time.monotonic() < deadline:
        if n == 0 or rng.random() < 0.4:
            name = f"load-{i}-{n}"
            r = await post(client, stats, "/v1/speakers/enroll", data={"name": name},
                           files=[("files", ("a.wav", wav_bytes(rng.choice(audio), rng)))])
            if r is not None and r.status_code == 200:
                stats.enrolled.add(name)
            n += 1
        else:
            await post(client, stats, "/v1/speakers/identify",
                       files={"file": ("a.wav", wav_bytes(rng.choice(audio), rng))})


async def disconnect_client(i, port, stats, audio, deadline) -> None:
    """Announce a whole upload, send half of it, hang up (with a reset, not a clean close)."""
    rng = random.Random(2000 + i)
    while time.monotonic() < deadline:
        data = wav_bytes(rng.choice(audio), rng)
        body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                b"Content-Type: audio/wav\r\n\r\n" + data + b"\r\n--b--\r\n")
        head = (f"POST /v1/audio/analyze HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body[: rng.randint(1, len(body) - 1)])
            await writer.drain()
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.close()
            stats.disconnects += 1
        except OSError as e:
            stats.transport_errors[f"disconnect client: {type(e).__name__}"] += 1
        await asyncio.sleep(rng.uniform(0.1, 0.5))


async def enroll_burst(client, stats, audio, n: int) -> set[str]:
    """n new names enrolled at once; the names the server acknowledged."""
    rng = random.Random(3000)
    names = [f"burst-{k}" for k in range(n)]
    answers = await asyncio.gather(*(post(client, stats, "/v1/speakers/enroll", data={"name": name},
                                          files=[("files", ("a.wav", wav_bytes(rng.choice(audio), rng)))])
                                     for name in names))
    return {name for name, r in zip(names, answers) if r is not None and r.status_code == 200}


async def drive(args, port: int, audio, pid: int) -> tuple[Stats, dict]:
    stats, peak, timeline = Stats(), [rss_mb(pid) or 0.0], []
    n_disconnect = max(1, args.clients // 10)
    n_speaker = max(1, args.clients // 8)
    n_audio = max(1, args.clients - n_disconnect - n_speaker)
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=args.client_timeout,
                                 limits=limits) as client:
        deadline = time.monotonic() + args.duration

        async def sample_memory():  # growth that does not level off would be a leak
            tick = 0
            while time.monotonic() < deadline:
                rss = rss_mb(pid) or 0.0
                peak[0] = max(peak[0], rss)
                if tick % 10 == 0:
                    timeline.append(round(rss))
                tick += 1
                await asyncio.sleep(1.0)

        await asyncio.gather(sample_memory(),
                             *(audio_client(i, client, stats, audio, deadline) for i in range(n_audio)),
                             *(speaker_client(i, client, stats, audio, deadline) for i in range(n_speaker)),
                             *(disconnect_client(i, port, stats, audio, deadline) for i in range(n_disconnect)))
        burst = await enroll_burst(client, stats, audio, args.clients)
        stats.enrolled |= burst
        health = (await client.get("/health")).status_code
    mix = {"audio": n_audio, "speaker": n_speaker, "disconnect": n_disconnect}
    return stats, {"peak_rss_mb": round(peak[0], 1), "rss_every_10s_mb": timeline, "health_after": health,
                   "client_mix": mix, "burst_enrolled": len(burst)}


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo_bn", help="run or checkpoint folder to serve")
    parser.add_argument("--corpus", default="corpora/demo", help="where the test utterances come from")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--client-timeout", type=float, default=180.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "load.json"))
    parser.add_argument("serve_args", nargs="*", help="extra `polyhead serve` options, after --")
    args = parser.parse_args()

    audio = clips(Path(args.corpus), 40)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        registry, log = Path(tmp) / "speakers.sqlite", Path(tmp) / "server.log"
        argv = [sys.executable, "-m", "polyhead.cli", "serve", "--model", args.run, "--host", "127.0.0.1",
                "--port", str(port), "--registry", str(registry), *args.serve_args]
        with open(log, "w") as log_file:
            server = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    sys.exit(f"server exited at start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            rss_start = rss_mb(server.pid)
            wall = time.time()
            stats, extra = asyncio.run(drive(args, port, audio, server.pid))
            wall = time.time() - wall
            rss_end = rss_mb(server.pid)
            alive = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        with sqlite3.connect(registry) as db:
            kept = {name for (name,) in db.execute("SELECT DISTINCT name FROM enrolment")}
        server_log = log.read_text()

    lost = sorted(stats.enrolled - kept)
    all_latency = [s for v in stats.latency.values() for s in v]
    server_errors = sum(n for code, n in stats.status.items() if code >= 500)
    report = {
        "run": args.run, "clients": args.clients, "duration_s": args.duration, "wall_s": round(wall, 1),
        "requests": sum(stats.status.values()), "by_status": {str(k): v for k, v in sorted(stats.status.items())},
        "server_errors_5xx": server_errors, "transport_errors": dict(stats.transport_errors),
        "mid_upload_disconnects": stats.disconnects,
        "latency_ms": {"all": {"p50": percentile(all_latency, 50), "p95": percentile(all_latency, 95)},
                       **{ep: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95)}
                          for ep, v in sorted(stats.latency.items())}},
        "server_rss_mb": {"start": rss_start and round(rss_start, 1), "end": rss_end and round(rss_end, 1),
                          "peak": extra.pop("peak_rss_mb"), "every_10s": extra.pop("rss_every_10s_mb")},
        "registry": {"acknowledged": len(stats.enrolled), "present": len(stats.enrolled & kept), "lost": lost},
        "server_alive": alive, **extra,
        "server_tracebacks": server_log.count("Traceback"),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = alive and not server_errors and not lost and not stats.transport_errors and extra["health_after"] == 200
    print("OK" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
