"""`polyhead serve`: the model behind an HTTP API (FastAPI).

    POST /v1/audio/transcriptions   OpenAI-compatible (the official `openai` client works)
    POST /v1/audio/translations     OpenAI-compatible: English from any language (multilingual decoder)
    POST /v1/audio/analyze          every head, one encoder pass (longer than a pass: long-form);
                                    translate=true adds the English translation
    POST /v1/speakers/verify        two files -> score, decision
    POST /v1/speakers/enroll        name + files -> registry
    POST /v1/speakers/identify      file -> best enrolled match or "unknown"
    POST /v1/audio/diarize          file -> who said what (long-form, clustered speakers)
    GET  /health, /metrics (Prometheus), / (a web page that drives the API)

With a token, /v1/ and /metrics need it. Metrics are labelled with the route template that
matched (``/v1/audio/analyze``), or ``unmatched``: never the raw path, so requests to any number
of unknown paths add no series. The speaker endpoints take recordings of any length (windows of
the encoder's length averaged: inference/speaker.py); a name ``unknown`` cannot be enrolled.

The transcription endpoint answers as Whisper would or says it cannot: ``prompt`` is the
decoder's previous-text prompt, ``temperature`` above 0 samples (and is never cached),
``language`` forces the language token (400 for one the model has no token for); a CTC-only
model refuses all three. In verbose_json, ``avg_logprob`` is the decoder's mean token
log-probability over its window (shared by the window's segments, as Whisper's is),
``no_speech_prob`` is 1 - the VAD head's mean speech probability over the segment's frames,
``tokens`` the decoder's tokens of the segment's words; null where the model has no such head.

One worker thread owns the model (serving/batcher.py): analyses that arrive together are run
as one padded batch; everything else waits its turn on the same queue.

Every endpoint that uses the model answers within ``timeout_s`` (504 past it). The request's
deadline travels with its jobs: the worker drops a job whose request has given up before
running it, stops a forward between layers once nobody waits for it, and long-form work
(transcription over a minute, diarisation, speaker embeddings of long or many recordings)
checks it between chunks; so a request that timed out frees the model within about one
chunk's time. At most ``max_queue`` jobs wait for the model; past that: 503 with Retry-After.

Uploads larger than the limit are refused from the Content-Length header, or as soon as the
streamed body passes the limit, before the body is read whole. Errors are JSON in the shape
OpenAI's API uses: {"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from ..audio import SAMPLE_RATE, AudioError, audio_seconds, load_audio
from ..inference.diarize import METHODS, check_speaker_tokens, transcribe
from ..inference.formats import to_srt, to_vtt
from ..inference.pipeline import GREEDY, Decoding, Polyhead, words_in
from ..inference import speaker
from ..inference.registry import SpeakerRegistry, check_name
from ..model.decoder_tasks import TRANSLATE
from .batcher import (DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_WINDOW_S, Deadline, ModelWorker, WorkerBusy,
                      stop_hooks)

DEFAULT_MAX_UPLOAD_MB = 25.0  # OpenAI's own limit for audio uploads
DEFAULT_TIMEOUT_S = 120.0
CACHE_ENTRIES = 256
LONG_AUDIO_S = 60.0  # longer files go through the chunked long-form path
MAX_AUDIO_S = 3600.0  # decoded length refused beyond this (a small compressed upload can expand)
# The speaker endpoints hold their recordings decoded while they wait for the model (38 MB for
# 10 minutes; an hour of compressed silence would be 230 MB from a 100 kB upload, per request).
MAX_SPEAKER_AUDIO_S = 600.0
MAX_NAME_CHARS = 128
MAX_SPEAKERS = 32  # most speakers a diarisation request may ask for
AUDIO_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")  # what of an upload's name may reach a temp file name
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STATIC = Path(__file__).with_name("static")  # the web page, shipped as package data
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
OVERRUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
MEL_FRAMES_PER_SECOND = 100  # Whisper's unit for a segment's `seek`
UNMATCHED = "unmatched"  # the metrics label of every path no route matches


def _error(status: int, message: str, kind: str = "invalid_request_error",
           headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


class UploadLimit:
    """ASGI middleware: 413 before the handler reads a body over ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _error(413, f"upload of {int(declared)} bytes exceeds the limit of "
                                     f"{self.max_bytes} bytes")(scope, receive, send)
        seen, exceeded, started = 0, False, False
        message_413 = f"upload exceeds the limit of {self.max_bytes} bytes"

        async def limited_receive():
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            # A framework may turn our exception into its own 400; answer 413 instead.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _error(413, message_413)(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _error(413, message_413)(scope, receive, send)


class _TooLarge(Exception):
    pass


class Service:
    """The model behind its worker thread (one forward at a time: on 2 cores parallel
    forwards only thrash; concurrent analyses are batched instead), a response cache keyed by
    the audio's hash, and the metrics."""

    def __init__(self, model: Polyhead, registry: SpeakerRegistry | None, timeout_s: float,
                 max_batch: int = DEFAULT_MAX_BATCH, window_s: float = DEFAULT_WINDOW_S,
                 max_queue: int | None = DEFAULT_MAX_QUEUE):
        self.model, self.registry, self.timeout_s = model, registry, timeout_s
        self.cache: OrderedDict[str, object] = OrderedDict()
        self.metrics = CollectorRegistry()
        self.requests = Counter("polyhead_requests", "requests by endpoint and status",
                                ["endpoint", "status"], registry=self.metrics)
        self.latency = Histogram("polyhead_latency_seconds", "request latency by endpoint", ["endpoint"],
                                 registry=self.metrics)
        self.cache_hits = Counter("polyhead_cache_hits", "responses served from the cache", registry=self.metrics)
        self.batch_size = Histogram("polyhead_batch_size", "analyses per encoder forward", buckets=BATCH_BUCKETS,
                                    registry=self.metrics)
        self.late = Histogram("polyhead_deadline_overrun_seconds",
                              "how long the model went on with requests past their deadline before it "
                              "stopped (or finished)", buckets=OVERRUN_BUCKETS, registry=self.metrics)
        self.dropped = Counter("polyhead_jobs_dropped", "jobs dropped unrun: their request had given up",
                               registry=self.metrics)
        self.worker = ModelWorker(model, max_batch, window_s, on_batch=self.batch_size.observe,
                                  max_queue=max_queue, on_late=self.late.observe, on_drop=self.dropped.inc)
        self.hooks = stop_hooks(getattr(model, "model", None), self.worker)

    async def run(self, key: str | None, compute):
        """``await compute(deadline)`` within the timeout, answered from the cache when it can
        be (never with ``key`` None: a sampled answer is drawn anew each time). However it
        ends, the deadline is then cancelled: what of the request is still queued or running
        on the model's thread stops at its next check."""
        if key is not None and key in self.cache:
            self.cache.move_to_end(key)
            self.cache_hits.inc()
            return self.cache[key]
        self.worker.check_room()  # 503 before decoding an upload the model has no room for
        deadline = Deadline(self.timeout_s)
        try:
            result = await asyncio.wait_for(compute(deadline), timeout=self.timeout_s)
        finally:
            deadline.cancel()
        if key is not None:
            self.cache[key] = result
            if len(self.cache) > CACHE_ENTRIES:
                self.cache.popitem(last=False)
        return result

    def between_chunks(self, deadline: Deadline | None):
        """What long work calls between its chunks (on the model's thread): stop once the
        request has given up, else first let the short requests waiting now through."""
        deadline = deadline or Deadline()

        def check():
            deadline.check()
            self.worker.run_waiting_analyses()
            deadline.check()
        return check

    async def call(self, fn, *args, deadline: Deadline | None = None):
        """``fn(*args)`` on the model's thread, in turn with everything else (dropped unrun
        once ``deadline`` has passed)."""
        return await asyncio.wrap_future(self.worker.call(fn, *args, deadline=deadline))

    def _is_long(self, seconds: float) -> bool:
        """Longer than one encoder pass should take: the encoder's window (Whisper: 30 s), or
        LONG_AUDIO_S for an encoder without one (attention's memory grows with the square of
        the length: one 10-minute pass of even the tiny test model holds 4 GB, an hour would
        not fit in memory). Such uploads go through the chunked long-form path, which reads
        the upload chunk by chunk: they are checked (``_seconds``) but never held decoded."""
        return seconds > min(LONG_AUDIO_S, self.model.max_seconds)

    async def analysis(self, data: bytes, name: str, deadline: Deadline | None = None,
                       translate: bool = False) -> dict:
        """Every head on one upload, batched with whatever else arrives meanwhile; decoding
        and features are computed on a pool thread while the model works on other requests.
        A long upload (``_is_long``) is transcribed in chunks, by speaker, as `polyhead
        analyze` does with a file longer than the window (``analyze_file``). ``translate``:
        the English translation too."""
        if self._is_long(await asyncio.to_thread(_seconds, data, name)):
            return await self.call(_long_analysis, self.model, data, name, self.between_chunks(deadline),
                                   translate, deadline=deadline)
        return await self._analyze_samples(await asyncio.to_thread(_decode, data, name), GREEDY, deadline,
                                           translate)

    async def transcript(self, data: bytes, name: str, decoding: Decoding = GREEDY,
                         deadline: Deadline | None = None) -> dict:
        if self._is_long(await asyncio.to_thread(_seconds, data, name)):
            return await self.call(_long_form, self.model, data, name, decoding, self.between_chunks(deadline),
                                   deadline=deadline)
        samples = await asyncio.to_thread(_decode, data, name)
        return _transcript_of(await self._analyze_samples(samples, decoding, deadline))

    async def _analyze_samples(self, samples, decoding: Decoding = GREEDY, deadline: Deadline | None = None,
                               translate: bool = False) -> dict:
        features = await asyncio.to_thread(self.model.features, samples, SAMPLE_RATE, decoding, translate)
        return await asyncio.wrap_future(self.worker.analyze(features, deadline))




def _key(endpoint: str, data: bytes, **params) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps([endpoint, params], sort_keys=True).encode())
    return h.hexdigest()


def _decode(data: bytes, name: str, max_seconds: float = MAX_AUDIO_S):
    if not data:
        raise AudioError(f"{name}: empty upload")
    return load_audio(data, name=name, max_seconds=max_seconds)


def _seconds(data: bytes, name: str) -> float:
    """An upload's duration, checked as ``_decode`` checks it, without holding it decoded."""
    if not data:
        raise AudioError(f"{name}: empty upload")
    return audio_seconds(data, name=name, max_seconds=MAX_AUDIO_S)


def _suffix(name: str) -> str:
    """The upload's extension for the temporary file, if it looks like one; never a path."""
    suffix = Path(name).suffix
    return suffix if AUDIO_SUFFIX.fullmatch(suffix) else ".wav"


def _speaker_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise HTTPException(400, f"speaker name must be 1 to {MAX_NAME_CHARS} printable characters")
    try:
        return check_name(name)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None


def _route_label(app: FastAPI, scope) -> str:
    """The template of the route this request matches (also a route it has the wrong method
    for), or UNMATCHED: a bounded set of metric labels whatever paths clients send."""
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return route.path
    return UNMATCHED


def _diarize(model: Polyhead, data: bytes, name: str, num_speakers: int | None = None,
             decoding: Decoding = GREEDY, method: str = "clustering", check=None) -> dict:
    """Chunked long-form transcription by speaker (it reads a file: bounded memory).
    ``check()``, called after every chunk, raises to stop (the request's deadline)."""
    with tempfile.NamedTemporaryFile(suffix=_suffix(name)) as tmp:
        tmp.write(data)
        tmp.flush()
        return transcribe(model, tmp.name, num_speakers=num_speakers, decoding=decoding, method=method,
                          advance=None if check is None else lambda _seconds: check())


def _long_form(model: Polyhead, data: bytes, name: str, decoding: Decoding = GREEDY, check=None) -> dict:
    """Files over LONG_AUDIO_S: chunked transcription (bounded memory), no speaker labels;
    each segment's ``seek`` is where the encoder window that wrote it began."""
    res = _diarize(model, data, name, decoding=decoding, check=check)
    for s in res["segments"]:
        s["seek"] = int(round(s.pop("window_start") * MEL_FRAMES_PER_SECOND))
        s.pop("speaker", None)
        for w in s["words"]:
            w.pop("speaker", None)
    words = [w for s in res["segments"] for w in s["words"]]
    return {"text": " ".join(s["text"] for s in res["segments"]), "words": words,
            "segments": res["segments"], "duration": res["duration"]}


def _long_analysis(model: Polyhead, data: bytes, name: str, check=None, translate: bool = False) -> dict:
    """A long upload's analysis: its transcript by speaker, in chunks (as ``analyze_file``),
    and with ``translate`` its English, translated in the same chunks."""
    res = _diarize(model, data, name, check=check)
    res["text"] = " ".join(s["text"] for s in res["segments"])
    if translate:
        english = _long_form(model, data, name, replace(GREEDY, task=TRANSLATE), check)
        res["translation"] = english["text"]
    return res


def _transcript_of(res: dict) -> dict:
    """An analysis as a transcript: VAD segments carry the words that begin inside them, the
    utterance's avg_logprob (one decoding window, as in Whisper) and their no_speech_prob."""
    whole = {"start": 0.0, "end": res["duration"], "no_speech_prob": res.get("no_speech_prob")}
    words = res.get("words", [])
    segments = []
    for s in res.get("segments") or [whole]:
        inner = words_in(words, s["start"], s["end"])
        segments.append({"start": s["start"], "end": s["end"], "seek": 0, "words": inner,
                         "text": " ".join(w["word"] for w in inner), "avg_logprob": res.get("avg_logprob"),
                         "no_speech_prob": s.get("no_speech_prob")})
    return {"text": res.get("text", ""), "words": words, "segments": segments, "duration": res["duration"],
            "language": res.get("language"), "confidence": res.get("confidence")}


def _verbose_segment(i: int, s: dict, temperature: float) -> dict:
    """A segment in OpenAI's verbose_json shape; what the model cannot give is null.
    ``tokens``: the decoder's tokens of the segment's words (null without a decoder)."""
    tokens = [w.get("tokens") for w in s["words"]]
    text = s["text"].encode()
    return {"id": i, "seek": s["seek"], "start": s["start"], "end": s["end"], "text": s["text"],
            "tokens": None if None in tokens else [t for ts in tokens for t in ts],
            "temperature": temperature, "avg_logprob": s.get("avg_logprob"),
            # Whisper's: text bytes over their zlib-compressed bytes (high = repetitive)
            "compression_ratio": round(len(text) / len(zlib.compress(text)), 4),
            "no_speech_prob": s.get("no_speech_prob")}


def create_app(model_path: str | Path, token: str | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               timeout_s: float = DEFAULT_TIMEOUT_S, registry_path: str | Path | None = None,
               max_batch: int = DEFAULT_MAX_BATCH, batch_window_ms: float = 1000 * DEFAULT_WINDOW_S,
               max_queue: int | None = DEFAULT_MAX_QUEUE) -> FastAPI:
    """``max_batch=1`` switches batching off; ``batch_window_ms`` is how long the worker waits
    for more analyses after the first before it runs the batch; ``max_queue``: most jobs that
    wait for the model (more: 503 with Retry-After)."""
    model = Polyhead.load(model_path)
    registry = SpeakerRegistry(registry_path) if registry_path else None
    svc = Service(model, registry, timeout_s, max_batch, batch_window_ms / 1000, max_queue)

    @asynccontextmanager
    async def lifespan(_app):
        if registry is not None:  # read into memory beside serving: identify waits only if it comes first
            threading.Thread(target=registry.load, name="polyhead-registry-load", daemon=True).start()
        yield
        await asyncio.to_thread(svc.worker.close)

    app = FastAPI(title="polyhead", description="One speech model, many answers.", lifespan=lifespan)
    app.state.service = svc
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        endpoint, start = _route_label(app, request.scope), time.perf_counter()
        if token and (request.url.path.startswith("/v1/") or endpoint == "/metrics"):
            given = request.headers.get("authorization", "")
            # constant-time comparison: response time must not reveal how much of a token matched
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                svc.requests.labels(endpoint, "401").inc()
                return _error(401, "missing or invalid bearer token", "authentication_error")
        response = await call_next(request)
        svc.requests.labels(endpoint, str(response.status_code)).inc()
        svc.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(AudioError)
    async def audio_error(_request, exc: AudioError):
        return _error(400, str(exc))

    @app.exception_handler(asyncio.TimeoutError)
    async def timeout_error(_request, _exc):
        return _error(504, f"processing took longer than {timeout_s:g} s", "timeout")

    @app.exception_handler(WorkerBusy)
    async def busy_error(_request, exc: WorkerBusy):
        return _error(503, str(exc), "server_busy", headers={"Retry-After": str(exc.retry_after_s)})

    # starlette's class, so the router's own 404 / 405 get the same JSON shape as ours
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) + ": " + e["msg"] for e in exc.errors())
        return _error(400, f"bad request: {fields}")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    try:
        model.check_translation()
        translates = True
    except ValueError:
        translates = False

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": str(model_path), "tasks": list(model.config.tasks),
                "auth": bool(token), "max_batch": max_batch, "translates": translates}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(svc.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model_name: str = Form("polyhead", alias="model"),
                             language: str | None = Form(None), prompt: str | None = Form(None),
                             temperature: float = Form(0.0, ge=0.0, le=1.0), response_format: str = Form("json"),
                             granularities: list[str] = Form([], alias="timestamp_granularities[]")):
        return await speech(file, Decoding(language or None, prompt or None, temperature), response_format,
                            granularities)

    @app.post("/v1/audio/translations")
    async def translations(file: UploadFile = File(...), model_name: str = Form("polyhead", alias="model"),
                           prompt: str | None = Form(None), temperature: float = Form(0.0, ge=0.0, le=1.0),
                           response_format: str = Form("json")):
        # OpenAI's translations take no language: the decoder detects what it translates from
        try:
            model.check_translation()
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return await speech(file, Decoding(None, prompt or None, temperature, task=TRANSLATE), response_format, [])

    async def speech(file: UploadFile, decoding: Decoding, response_format: str, granularities: list[str]):
        """A transcription or translation (``decoding.task``) in OpenAI's response formats."""
        if response_format not in RESPONSE_FORMATS:
            raise HTTPException(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        try:
            model.check_decoding(decoding)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        data = await file.read()
        name = file.filename or "upload"
        temperature = decoding.temperature
        key = _key(decoding.task, data, **vars(decoding)) if temperature == 0 else None
        res = await svc.run(key, lambda deadline: svc.transcript(data, name, decoding, deadline))
        if response_format == "text":
            return PlainTextResponse(res["text"] + "\n")
        if response_format in ("srt", "vtt"):
            body = (to_srt if response_format == "srt" else to_vtt)(res["segments"])
            return PlainTextResponse(body)
        if response_format == "json":
            return {"text": res["text"]}
        body = {"task": decoding.task, "language": model.decoding_language(decoding) or res.get("language"),
                "duration": res["duration"], "text": res["text"],
                "segments": [_verbose_segment(i, s, temperature) for i, s in enumerate(res["segments"])]}
        if "word" in granularities:
            body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in res["words"]]
        return body

    @app.post("/v1/audio/analyze")
    async def analyze(file: UploadFile = File(...), translate: bool = Form(False)):
        if translate:
            try:
                model.check_translation()
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        data = await file.read()
        return await svc.run(_key("analyze", data, translate=translate),
                             lambda deadline: svc.analysis(data, file.filename or "upload", deadline, translate))

    @app.post("/v1/audio/diarize")
    async def diarize(file: UploadFile = File(...), num_speakers: int | None = Form(None, ge=1, le=MAX_SPEAKERS),
                      method: str = Form("clustering")):
        if method not in METHODS:
            raise HTTPException(400, f"method must be one of {', '.join(METHODS)}")
        if method == "tokens":
            try:
                check_speaker_tokens(model)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        data = await file.read()
        name = file.filename or "upload"

        async def compute(deadline):
            await asyncio.to_thread(_seconds, data, name)  # a clear 400 for what is not audio
            return await svc.call(_diarize, model, data, name, num_speakers, GREEDY, method,
                                  svc.between_chunks(deadline), deadline=deadline)

        return await svc.run(_key("diarize", data, n=num_speakers, method=method), compute)

    def _need_speaker_head():
        if not any(k.embeds for k in model.kinds):
            raise HTTPException(400, "this model has no speaker head")

    @app.post("/v1/speakers/verify")
    async def verify(file_a: UploadFile = File(...), file_b: UploadFile = File(...)):
        _need_speaker_head()
        a, b = await file_a.read(), await file_b.read()

        async def compute(deadline):
            sa, sb = await asyncio.gather(
                asyncio.to_thread(_decode, a, file_a.filename or "file_a", MAX_SPEAKER_AUDIO_S),
                asyncio.to_thread(_decode, b, file_b.filename or "file_b", MAX_SPEAKER_AUDIO_S))
            return await svc.call(speaker.verify, model, sa, sb, svc.between_chunks(deadline), deadline=deadline)

        return await svc.run(_key("verify", a + b, n=len(a)), compute)

    @app.post("/v1/speakers/enroll")
    async def enroll(name: str = Form(...), files: list[UploadFile] = File(...)):
        if registry is None:
            raise HTTPException(400, "this server has no speaker registry (start it with --registry)")
        name = _speaker_name(name)
        _need_speaker_head()
        blobs = [(await f.read(), f.filename or "upload") for f in files]

        async def compute(deadline):
            samples = await asyncio.to_thread(lambda: [_decode(d, n, MAX_SPEAKER_AUDIO_S) for d, n in blobs])
            check = svc.between_chunks(deadline)
            return await svc.call(lambda: [speaker.embed(model, x, check) for x in samples], deadline=deadline)

        embs = await svc.run(None, compute)
        # SQLite off the event loop: other requests go on while it waits on the file. The
        # write is not under the deadline: begun, it commits (milliseconds), and a 504 then
        # would leave the client unsure whether the name was enrolled.
        return {"speaker": name, "enrolled_utterances": await asyncio.to_thread(registry.enroll, name, embs)}

    @app.post("/v1/speakers/identify")
    async def identify(file: UploadFile = File(...), top_k: int = Form(3, ge=1, le=100)):
        if registry is None:
            raise HTTPException(400, "this server has no speaker registry (start it with --registry)")
        _need_speaker_head()
        data = await file.read()

        async def compute(deadline):
            samples = await asyncio.to_thread(_decode, data, file.filename or "upload", MAX_SPEAKER_AUDIO_S)
            emb = await svc.call(speaker.embed, model, samples, svc.between_chunks(deadline), deadline=deadline)
            return await asyncio.to_thread(registry.identify, emb, model.threshold, top_k)

        return await svc.run(None, compute)

    return UploadLimit(app, int(max_upload_mb * 1024 * 1024))
