"""What the service benchmarks share: the tests' tiny model (untrained, every head: CTC speech,
speaker, language, VAD; as ``tests/fuzz_targets.tiny_model``) built into a folder, and
``polyhead serve`` started on it on 127.0.0.1 (a free port), with the server's resident
memory read from /proc.

    with serve(model_folder, registry, ["--timeout", "10"]) as server:
        httpx.get(server.url + "/health"); server.rss_mb()
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MEMORY_CAP_GB = 12.0  # the server's address space: a runaway allocation fails there, not in the machine


def tiny_model(folder: Path) -> Path:
    """The tests' untrained tiny model with every head, saved in ``folder`` (one definition:
    ``tests/fuzz_targets.tiny_model``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fuzz_targets import tiny_model as build

    return build(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def rss_mb(self) -> float | None:
        return rss_mb(self.process.pid)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def _cap_memory():
    cap = int(MEMORY_CAP_GB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


@contextlib.contextmanager
def serve(model: Path, registry: Path, extra: list[str] = (), threads: int = 1):
    """``polyhead serve`` on 127.0.0.1 until the block ends (its log beside the registry)."""
    port = free_port()
    log = Path(registry).with_suffix(".log")
    argv = [sys.executable, "-m", "polyhead.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--registry", str(registry), "--threads", str(threads), *extra]
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_cap_memory,
                                   cwd=ROOT)
    server = Server(f"http://127.0.0.1:{port}", port, process, log)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
