"""The service under concurrent use, on loopback (bench/load.py is the long version): clients
that hang up half way through an upload, and concurrent enrolments and identifications, while
the server keeps answering and loses no acknowledged registry write."""

from __future__ import annotations

import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import fuzz_targets as ft
from liveserver import serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from polyhead.serving import create_app

    work = tmp_path_factory.mktemp("load")
    registry = work / "registry" / "speakers.sqlite"
    app = create_app(ft.tiny_model(work / "model"), registry_path=registry)
    with serving(app) as (url, port):
        yield url, port, registry


def _hang_up_mid_upload(port: int, cut: float) -> None:
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            + ft.sine_wav(1.0) + b"\r\n--b--\r\n")
    head = (f"POST /v1/audio/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head + body[: int(len(body) * cut)])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset


def test_mid_upload_disconnects_and_concurrent_enrol_identify(server):
    url, port, registry = server
    names = [f"speaker-{k}" for k in range(12)]
    wav = ft.sine_wav(0.5)

    def enroll(name):
        return httpx.post(f"{url}/v1/speakers/enroll", data={"name": name}, files=[("files", ("a.wav", wav))],
                          timeout=60).status_code

    def identify(_):
        return httpx.post(f"{url}/v1/speakers/identify", files={"file": ("a.wav", wav)}, timeout=60).status_code

    def analyze(_):
        return httpx.post(f"{url}/v1/audio/analyze", files={"file": ("a.wav", ft.sine_wav(0.4))},
                          timeout=60).status_code

    with ThreadPoolExecutor(16) as pool:
        hang_ups = [pool.submit(_hang_up_mid_upload, port, cut) for cut in (0.05, 0.3, 0.5, 0.7, 0.95) * 2]
        enrolled = list(pool.map(enroll, names))
        identified = list(pool.map(identify, range(8)))
        analysed = list(pool.map(analyze, range(4)))
        [h.result() for h in hang_ups]
    assert enrolled == [200] * len(names) and identified == [200] * 8 and analysed == [200] * 4
    with sqlite3.connect(registry) as db:
        kept = {name for (name,) in db.execute("SELECT DISTINCT name FROM enrolment")}
    assert set(names) <= kept
    # the server is still healthy and answers normally after the hang-ups
    assert httpx.get(f"{url}/health").status_code == 200
    r = httpx.post(f"{url}/v1/speakers/identify", files={"file": ("a.wav", wav)}, data={"top_k": "20"}, timeout=60)
    assert r.status_code == 200 and {c["speaker"] for c in r.json()["candidates"]} == set(names)
