"""The HTTP service: driven with the official `openai` client on loopback, plus malformed,
oversized and unauthenticated uploads; the server keeps serving through all of them."""

import io

import httpx
import numpy as np
import pytest
import soundfile as sf
from liveserver import serving

TOKEN = "s3cret-token"
LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    from polyhead.serving import create_app

    folder, run = tiny_run
    app = create_app(run, token=TOKEN, max_upload_mb=LIMIT_MB,
                     registry_path=tmp_path_factory.mktemp("reg") / "speakers.sqlite")
    with serving(app) as (url, _):
        yield url, folder


def _wav_bytes(rate=16000, channels=1, seconds=1.5):
    buf = io.BytesIO()
    t = np.arange(int(rate * seconds)) / rate
    x = 0.1 * np.sin(2 * np.pi * 220 * t)[:, None].repeat(channels, axis=1)
    sf.write(buf, x, rate, format="WAV")
    return buf.getvalue()


def _speech(folder):
    return sorted((folder / "audio" / "speech_test").rglob("*.wav"))


def test_openai_client_every_response_format(server):
    from openai import OpenAI

    url, folder = server
    client = OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    wav = _speech(folder)[0]
    with open(wav, "rb") as f:
        res = client.audio.transcriptions.create(model="polyhead", file=f)
    assert isinstance(res.text, str)
    with open(wav, "rb") as f:
        verbose = client.audio.transcriptions.create(model="polyhead", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
    assert verbose.duration > 0 and verbose.language
    assert isinstance(verbose.segments, list) and isinstance(verbose.words, list)
    for fmt, marker in (("text", ""), ("srt", "-->"), ("vtt", "WEBVTT")):
        with open(wav, "rb") as f:
            out = client.audio.transcriptions.create(model="polyhead", file=f, response_format=fmt)
        assert isinstance(out, str) and marker in out


def test_auth_is_required_and_checked(server):
    url, folder = server
    files = {"file": ("a.wav", _wav_bytes(), "audio/wav")}
    r = httpx.post(f"{url}/v1/audio/transcriptions", files=files, data={"model": "x"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(f"{url}/v1/audio/transcriptions", files=files, data={"model": "x"},
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200  # health needs no token


@pytest.mark.parametrize("payload,status,needle", [
    (b"this is not audio at all", 400, "not a readable audio file"),
    (b"", 400, "empty"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt garbage", 400, "readable"),
])
def test_malformed_uploads_get_json_4xx_and_server_keeps_serving(server, payload, status, needle):
    url, _ = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("x.wav", payload)}, data={"model": "m"}, headers=h)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_missing_field_and_bad_format_are_400(server):
    url, _ = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "m"}, headers=h)
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", _wav_bytes())},
                   data={"response_format": "docx"}, headers=h)
    assert r.status_code == 400 and "response_format" in r.json()["error"]["message"]


def test_upload_over_the_limit_is_refused_before_reading(server):
    url, _ = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    big = b"\0" * int(LIMIT_MB * 1024 * 1024 + 10)
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("big.wav", big)}, data={"model": "m"}, headers=h)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunked():  # a valid multipart start, no Content-Length: the streaming guard must stop it
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(int(LIMIT_MB * 4)):
            yield b"\0" * (512 * 1024)

    r = httpx.post(f"{url}/v1/audio/analyze", content=chunked(), headers={**h, "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413
    assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2), (48000, 2)])
def test_other_rates_and_stereo_are_handled(server, rate, channels):
    url, _ = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{url}/v1/audio/analyze", files={"file": ("a.wav", _wav_bytes(rate, channels))}, headers=h)
    assert r.status_code == 200, r.text
    assert abs(r.json()["duration"] - 1.5) < 0.01


def test_analyze_verify_enroll_identify_metrics(server):
    url, folder = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    wavs = _speech(folder)
    a, b = wavs[0].read_bytes(), wavs[1].read_bytes()
    r = httpx.post(f"{url}/v1/audio/analyze", files={"file": ("a.wav", a)}, headers=h)
    assert r.status_code == 200 and {"text", "language", "segments"} <= set(r.json())
    r = httpx.post(f"{url}/v1/speakers/verify", files={"file_a": ("a.wav", a), "file_b": ("b.wav", b)}, headers=h)
    assert r.status_code == 200 and "same_speaker" in r.json()
    r = httpx.post(f"{url}/v1/speakers/enroll", files=[("files", ("a.wav", a))], data={"name": "alice"}, headers=h)
    assert r.status_code == 200 and r.json()["enrolled_utterances"] == 1
    r = httpx.post(f"{url}/v1/speakers/identify", files={"file": ("a.wav", a)}, headers=h)
    assert r.status_code == 200 and r.json()["speaker"] == "alice"
    # the second identical analyze is a cache hit
    httpx.post(f"{url}/v1/audio/analyze", files={"file": ("a.wav", a)}, headers=h)
    assert httpx.get(f"{url}/metrics").status_code == 401  # with a token, /metrics needs it too
    text = httpx.get(f"{url}/metrics", headers=h).text
    assert "polyhead_requests_total" in text and "polyhead_cache_hits_total" in text
    assert 'status="401"' in text or "polyhead_latency_seconds" in text


def test_diarize_and_the_web_page(server):
    url, folder = server
    h = {"Authorization": f"Bearer {TOKEN}"}
    samples, rate = sf.read(next((folder / "audio" / "conversations_test").glob("*.wav")))
    buf = io.BytesIO()
    sf.write(buf, samples[:rate * 20], rate, format="WAV")  # 20 s: under this server's upload limit
    conversation = buf.getvalue()
    r = httpx.post(f"{url}/v1/audio/diarize", files={"file": ("c.wav", conversation)}, data={"num_speakers": "2"},
                   headers=h, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration"] > 0 and all({"start", "end", "speaker", "text"} <= set(s) for s in body["segments"])
    assert {s["speaker"] for s in body["segments"]} <= set(body["speakers"]) and len(body["speakers"]) <= 2
    r = httpx.post(f"{url}/v1/audio/diarize", files={"file": ("c.wav", conversation)}, data={"num_speakers": "0"},
                   headers=h)
    assert r.status_code == 400 and "num_speakers" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/audio/diarize", files={"file": ("x.wav", b"not audio")}, headers=h)
    assert r.status_code == 400 and "x.wav" in r.json()["error"]["message"]
    page = httpx.get(f"{url}/")  # the page and its assets need no token: the page asks for it
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert httpx.get(f"{url}/static/app.js").status_code == 200
    assert httpx.get(f"{url}/health").json()["auth"] is True


BATCH_WINDOW_MS = 500.0  # long, so concurrent requests meet in one batch even on a busy machine
CONCURRENT = 6


def _batch_histogram(url) -> tuple[float, float]:
    """(forwards, analyses) from the polyhead_batch_size histogram."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    value = lambda name: float(next(ln.split()[-1] for ln in lines if ln.startswith(name + " ")))  # noqa: E731
    return value("polyhead_batch_size_count"), value("polyhead_batch_size_sum")


@pytest.mark.parametrize("max_batch", [8, 1])
def test_concurrent_requests_are_batched_and_answered_as_alone(tiny_run, live_server, max_batch):
    from concurrent.futures import ThreadPoolExecutor

    from polyhead.inference import load
    from polyhead.serving import create_app

    folder, run = tiny_run
    url = live_server(create_app(run, max_batch=max_batch, batch_window_ms=BATCH_WINDOW_MS))
    wavs = _speech(folder)[:CONCURRENT]

    def post(path):
        r = httpx.post(f"{url}/v1/audio/analyze", files={"file": (path.name, path.read_bytes())}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(post, wavs))
    forwards, analyses = _batch_histogram(url)
    assert analyses == CONCURRENT
    if max_batch == 1:
        assert forwards == CONCURRENT
    else:
        assert forwards < CONCURRENT  # at least two requests shared an encoder pass
    model = load(run)
    for path, answer in zip(wavs, answers):
        alone = model.analyze(path)
        assert answer["text"] == alone["text"] and answer["segments"] == alone["segments"]
        assert answer["language"] == alone["language"]
        np.testing.assert_allclose(answer["speaker_embedding"], alone["speaker_embedding"], atol=1e-4)
