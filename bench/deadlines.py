"""Deadlines under mixed load: clients sending long files while others send 4 s clips.

    .venv/bin/python bench/deadlines.py --quick     # 40 s of load (about a minute in all)
    .venv/bin/python bench/deadlines.py             # 120 s

Builds the tests' tiny model (bench/tiny_server.py), serves it on 127.0.0.1 with ``--timeout``
(5 s) and drives it for ``--duration`` seconds with

  * ``--long-clients`` (2) clients, each posting 10-minute recordings (16 kHz WAV, 19 MB, a
    sample changed each time so that the response cache cannot answer) to
    /v1/audio/transcriptions, one after another: the chunked long-form path, which takes
    longer than the timeout, so each should be answered 504 at the deadline and its work
    stopped at the next chunk (or layer);
  * ``--short-clients`` (6) clients, each posting 4 s clips (a new gain each time, so the
    cache cannot answer) to /v1/audio/transcriptions, one after another.

Reports the answers by status, p50 / p95 / max latency of the short clips (they must not time
out behind the long ones), the long uploads' answers and latency, and, from the server's
/metrics: how long the model went on with timed-out requests past their deadline
(``polyhead_deadline_overrun_seconds``: the target is under 2 s) and how many queued jobs were
dropped unrun. Writes bench/out/deadlines.json. Exit status 1 on a short clip answered other
than 200, a 500, a transport error, or an overrun of 2 s or more.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_server import ROOT, serve, tiny_model  # noqa: E402

TARGET_FREED_S = 2.0


def wav(seconds: float, seed: int, gain: float = 0.1) -> bytes:
    buf = io.BytesIO()
    x = np.random.default_rng(seed).normal(0, gain, int(16000 * seconds))
    sf.write(buf, np.clip(x, -1, 1), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def client_loop(client, data_of, stop_at: float, results: list, kind: str) -> None:
    k = 0
    while time.monotonic() < stop_at:
        data = data_of(k)
        k += 1
        start = time.perf_counter()
        try:
            r = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                                  data={"model": "polyhead"})
            status = r.status_code
        except httpx.HTTPError as e:
            status = type(e).__name__
        results.append((kind, status, time.perf_counter() - start))


def histogram(metrics: str, name: str) -> dict:
    buckets = {float(le) if le != "+Inf" else float("inf"): float(v)
               for le, v in re.findall(rf'{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)', metrics)}
    count = re.search(rf"^{name}_count ([0-9.e+]+)", metrics, re.M)
    total = re.search(rf"^{name}_sum ([0-9.e+]+)", metrics, re.M)
    return {"buckets": buckets, "count": float(count.group(1)) if count else 0.0,
            "sum": float(total.group(1)) if total else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 s of load")
    parser.add_argument("--duration", type=float, default=None, help="seconds of load (default 120; quick 40)")
    parser.add_argument("--timeout", type=float, default=5.0, help="the server's --timeout")
    parser.add_argument("--long-clients", type=int, default=2)
    parser.add_argument("--short-clients", type=int, default=6)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "deadlines.json"))
    args = parser.parse_args()
    duration = args.duration or (40.0 if args.quick else 120.0)

    long_file = wav(60 * args.long_minutes, seed=100)

    def long_upload(k: int) -> bytes:
        """The long recording with one sample changed: new bytes each time, so the response
        cache never answers it."""
        data = bytearray(long_file)
        data[100:104] = k.to_bytes(4, "little")
        return bytes(data)

    clip = np.random.default_rng(7).normal(0, 0.1, 16000 * 4)

    def short_clip(k: int) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, clip * (0.5 + 0.5 * ((k * 7919) % 1000) / 1000), 16000, format="WAV", subtype="PCM_16")
        return buf.getvalue()

    results: list = []
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "model")
        with serve(model, Path(tmp) / "speakers.sqlite", ["--timeout", str(args.timeout)]) as server:
            async def drive():
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
                async with httpx.AsyncClient(base_url=server.url, timeout=args.timeout * 4 + 60,
                                             limits=limits) as client:
                    stop_at = time.monotonic() + duration
                    await asyncio.gather(
                        *(client_loop(client, lambda k, i=i: long_upload(1000 * i + k), stop_at, results, "long")
                          for i in range(args.long_clients)),
                        *(client_loop(client, lambda k, i=i: short_clip(1000 * i + k), stop_at, results, "short")
                          for i in range(args.short_clients)))
                    return (await client.get("/metrics")).text

            rss_start = server.rss_mb()
            metrics = asyncio.run(drive())
            rss_end, alive = server.rss_mb(), server.alive
        log = server.log.read_text()

    short = [s for k, _, s in results if k == "short"]
    statuses = {kind: Counter(str(st) for k, st, _ in results if k == kind) for kind in ("short", "long")}
    long_secs = [s for k, _, s in results if k == "long"]
    overrun = histogram(metrics, "polyhead_deadline_overrun_seconds")
    dropped = re.search(r"^polyhead_jobs_dropped_total ([0-9.e+]+)", metrics, re.M)
    within = overrun["buckets"].get(TARGET_FREED_S, 0.0)
    worst = min((le for le, v in overrun["buckets"].items() if v >= overrun["count"]), default=None)

    def ms(values, q):
        return round(float(np.percentile(values, q)) * 1000) if values else None

    report = {"quick": args.quick, "duration_s": duration, "timeout_s": args.timeout,
              "long_clients": args.long_clients, "short_clients": args.short_clients,
              "long_minutes": args.long_minutes,
              "short": {"n": len(short), "answers": dict(statuses["short"]), "p50_ms": ms(short, 50),
                        "p95_ms": ms(short, 95), "max_ms": ms(short, 100)},
              "long": {"n": len(long_secs), "answers": dict(statuses["long"]), "p50_ms": ms(long_secs, 50),
                       "max_ms": ms(long_secs, 100)},
              "overrun": {"count": overrun["count"], "mean_s": round(overrun["sum"] / overrun["count"], 3)
                          if overrun["count"] else None, f"within_{TARGET_FREED_S:g}s": within,
                          "all_within_s": worst, "buckets": {str(k): v for k, v in overrun["buckets"].items()}},
              "jobs_dropped": float(dropped.group(1)) if dropped else 0.0,
              "server_rss_mb": {"start": rss_start, "end": rss_end}, "server_alive": alive,
              "server_tracebacks": log.count("Traceback")}
    print(f"\n{duration:g} s of load, timeout {args.timeout:g} s: {args.long_clients} clients posting "
          f"{args.long_minutes:g}-minute files, {args.short_clients} posting 4 s clips\n")
    print("| what | value |")
    print("|---|---|")
    print(f"| 4 s clips | {len(short)}: {', '.join(f'{k} x {v}' for k, v in sorted(statuses['short'].items()))} |")
    print(f"| 4 s clips p50 / p95 / max | {report['short']['p50_ms']} / {report['short']['p95_ms']} / "
          f"{report['short']['max_ms']} ms |")
    print(f"| long files | {len(long_secs)}: {', '.join(f'{k} x {v}' for k, v in sorted(statuses['long'].items()))}"
          f"; answered after p50 {report['long']['p50_ms']} ms, max {report['long']['max_ms']} ms |")
    print(f"| model kept past the deadline | {overrun['count']:g} jobs, mean {report['overrun']['mean_s']} s, "
          f"{within:g} within {TARGET_FREED_S:g} s, all within {worst} s |")
    print(f"| queued jobs dropped unrun | {report['jobs_dropped']:g} |")
    print(f"| server RSS start / end | {rss_start:.0f} / {rss_end or 0:.0f} MB |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    bad_short = sum(v for k, v in statuses["short"].items() if k != "200")
    bad_long = sum(v for k, v in statuses["long"].items() if k not in ("200", "504"))
    ok = alive and not bad_short and not bad_long and within == overrun["count"] and "Traceback" not in log
    print("OK" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
