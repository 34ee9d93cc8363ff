"""Fuzz targets: one generated input in, ACCEPTED or REJECTED out.

Shared by tests/test_fuzz.py (a fast subset in CI) and bench/fuzz.py (10,000+ inputs). A target
returns ACCEPTED when the input was taken and what came out keeps its invariants, REJECTED when
it was refused with a clear error: the documented exception type with a message naming the
culprit (the file, field or override), or for HTTP a 4xx JSON error. Anything else raises: an
unexpected exception type, a message naming nothing, a 5xx, or a bad input let in (``LetIn``).
The runners count those as crashes.

Each target has ``strategy()`` (hypothesis: structured inputs, mutations of valid ones) and
``from_bytes()`` (raw bytes into the same check, for coverage-guided fuzzing with atheris).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml
from hypothesis import strategies as st

ACCEPTED, REJECTED = "accepted", "rejected"


class LetIn(AssertionError):
    """Input that should have been refused came through."""


class Unclear(AssertionError):
    """Refused, but the error does not say which input."""


def _names(message: str, *culprits: str) -> None:
    if not any(c in message for c in culprits):
        raise Unclear(f"error names none of {culprits}: {message!r}")


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


# --- shared strategies ---------------------------------------------------------------------------

NASTY_TEXT = ["", " ", "../../../../etc/passwd", "..", "/etc/passwd", "a" * 300, "\x00", "é€𝄞",
              "${HOME}", "$(id)", "`id`", "a;rm -rf /", "null", "NaN", "-1", "1e400", "\n", "\t"]
texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64),
                         st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)), max_leaves=6)


def sine_wav(seconds: float = 0.5, rate: int = 16000, fmt: str = "WAV", subtype: str = "PCM_16",
             channels: int = 1) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None].repeat(channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


# --- audio decoding ------------------------------------------------------------------------------

FORMATS = [("WAV", "PCM_16"), ("WAV", "PCM_U8"), ("WAV", "FLOAT"), ("WAV", "PCM_24"), ("WAVEX", "PCM_16"),
           ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("AIFF", "PCM_16"), ("AU", "PCM_16"), ("CAF", "PCM_16"),
           ("W64", "PCM_16"), ("RF64", "PCM_16"), ("MP3", "MPEG_LAYER_III")]


@st.composite
def encoded_audio(draw) -> bytes:
    fmt, subtype = draw(st.sampled_from(FORMATS))
    rate = draw(st.sampled_from([8000, 16000, 22050, 44100, 48000]))
    n, channels = draw(st.integers(0, 3000)), draw(st.integers(1, 3))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).uniform(-1, 1, (n, channels)) * draw(
        st.sampled_from([0.0, 0.01, 1.0]))
    buf = io.BytesIO()
    try:
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, ValueError):  # e.g. MP3 at a rate it cannot encode
        sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@st.composite
def wav_header(draw) -> bytes:
    """A RIFF/WAVE header with arbitrary field values, some data, cut anywhere."""
    u16, u32 = st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)
    small = st.one_of(st.sampled_from([0, 1, 2, 8, 16, 24, 32, 64, 0xFFFE, 0xFFFF]), u16)
    fmt = struct.pack("<HHIIHH", draw(st.sampled_from([1, 3, 6, 7, 0xFFFE, 0])) if draw(st.booleans()) else
                      draw(u16), draw(small), draw(st.one_of(st.sampled_from([0, 1, 8000, 16000, 2**31]), u32)),
                      draw(u32), draw(small), draw(small))
    data = draw(st.binary(max_size=600))
    size = draw(st.one_of(st.just(len(data)), u32))
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    whole = b"RIFF" + struct.pack("<I", draw(st.one_of(st.just(len(body)), u32))) + body
    return whole[:draw(st.integers(0, len(whole)))] if draw(st.booleans()) else whole


@st.composite
def mutated(draw, base) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "u32", "insert", "delete"]))
        pos = draw(st.one_of(st.integers(0, 64), st.integers(0, 1 << 16))) % (len(data) + 1)
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "u32":
            data[pos:pos + 4] = struct.pack("<I", draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1])))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


def audio_bytes():
    return st.one_of(st.binary(max_size=2048), wav_header(), mutated(encoded_audio()), encoded_audio())


class AudioTarget:
    """polyhead.audio.load_audio on bytes, as the service calls it."""

    name = "audio"

    def __init__(self, workdir: Path):
        from polyhead.serving.app import MAX_AUDIO_S

        self.max_seconds = MAX_AUDIO_S

    def strategy(self):
        return audio_bytes()

    def from_bytes(self, data: bytes):
        return data

    def check(self, data: bytes) -> str:
        from polyhead.audio import MIN_SAMPLES, AudioError, load_audio

        try:
            y = load_audio(data, name="fuzz.bin", max_seconds=self.max_seconds)
        except AudioError as e:
            _names(str(e), "fuzz.bin")
            return REJECTED
        if not (y.dtype == np.float32 and y.ndim == 1 and len(y) >= MIN_SAMPLES and np.isfinite(y).all()):
            raise LetIn(f"decoded to {y.dtype} {y.shape}")
        return ACCEPTED


# --- manifests and corpus readers ----------------------------------------------------------------

def _check_cuts(cuts) -> None:
    """What every reader promises about the cuts it returns."""
    for cut in cuts:
        if not isinstance(cut.id, str) or not cut.id:
            raise LetIn(f"cut id {cut.id!r}")
        if not _finite_positive(cut.duration) or not (math.isfinite(cut.start) and cut.start >= 0):
            raise LetIn(f"cut {cut.id!r}: start {cut.start!r}, duration {cut.duration!r}")
        if cut.start + cut.duration > cut.recording.duration + 0.06:
            raise LetIn(f"cut {cut.id!r} runs past its recording")
        for s in cut.supervisions:
            for field in ("text", "speaker", "language", "gender"):
                if not isinstance(getattr(s, field), (str, type(None))):
                    raise LetIn(f"cut {cut.id!r}: {field} {getattr(s, field)!r}")
            if not _finite_positive(s.duration):
                raise LetIn(f"cut {cut.id!r}: supervision duration {s.duration!r}")


def _leaf_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaf_paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _leaf_paths(v, (*prefix, i))
    yield prefix


def _mutate_tree(tree, path, value, delete: bool):
    node = tree
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@st.composite
def mutated_json_lines(draw, base: dict, max_lines: int = 3) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, max_lines))):
        tree = json.loads(json.dumps(base))
        for _ in range(draw(st.integers(0, 3))):
            paths = [p for p in _leaf_paths(tree) if p]
            if not paths:
                break
            _mutate_tree(tree, draw(st.sampled_from(paths)), draw(json_values), draw(st.booleans()))
        line = json.dumps(tree)
        if draw(st.integers(0, 9)) == 0:
            line = line[:draw(st.integers(0, len(line)))]  # a line cut short
        lines.append(line)
    return lines


class _ReaderTarget:
    """Shared set-up: a work folder with one real WAV file for entries to point at."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.wav = self.dir / "a.wav"
        self.wav.write_bytes(sine_wav(1.0))

    def from_bytes(self, data: bytes):
        return data.decode("utf-8", errors="replace").splitlines()

    @staticmethod
    def _read_cuts(reader, path: Path, *culprits: str) -> str:
        """Run a corpus reader: a rejection must be a ManifestError naming the culprit, and
        whatever is accepted must be a well-formed CutSet."""
        from polyhead.data.corpus import ManifestError

        try:
            cuts = reader(path)
        except ManifestError as e:
            _names(str(e), str(path), *culprits)
            return REJECTED
        _check_cuts(cuts)
        return ACCEPTED


class LhotseTarget(_ReaderTarget):
    """polyhead.data.readers.read_lhotse on a cuts manifest (JSONL, plain or gzipped)."""

    name = "lhotse"

    def base_cut(self) -> dict:
        from lhotse import MonoCut, Recording, SupervisionSegment

        rec = Recording.from_file(self.wav, recording_id="a")
        sup = SupervisionSegment(id="a", recording_id="a", start=0.0, duration=1.0, channel=0, text="hi there",
                                 speaker="s1", language="en", custom={"session": "x"})
        return MonoCut(id="a", start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[sup]).to_dict()

    def strategy(self):
        return st.tuples(mutated_json_lines(self.base_cut()), st.booleans())

    def from_bytes(self, data: bytes):
        return super().from_bytes(data), False

    def check(self, item) -> str:
        from polyhead.data.readers import read_lhotse

        lines, gz = item
        path = self.dir / ("cuts.jsonl.gz" if gz else "cuts.jsonl")
        text = "".join(line + "\n" for line in lines).encode("utf-8", errors="surrogatepass")
        path.write_bytes(gzip.compress(text) if gz else text)
        return self._read_cuts(read_lhotse, path)


class NemoTarget(_ReaderTarget):
    """polyhead.data.readers.read_nemo on a NeMo JSONL manifest."""

    name = "nemo"

    def strategy(self):
        base = {"audio_filepath": "a.wav", "duration": 1.0, "offset": 0.0, "text": "hi", "label": "s1",
                "lang": "en"}
        return mutated_json_lines(base, max_lines=4)

    def check(self, lines) -> str:
        from polyhead.data.readers import read_nemo

        path = self.dir / "manifest.json"
        path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", errors="surrogatepass"))
        return self._read_cuts(read_nemo, path, str(self.wav))


KALDI_TOKENS = ["a", "b", "utt1", "utt2", "rec1", "a.wav", "../a.wav", "/nonexistent.wav", "sox a.wav -t wav - |",
                "0", "0.5", "1.0", "-1", "2.0", "1e9", "nan", "inf", "s1", "m", "f", "en", "hello", "x" * 40]


@st.composite
def mutated_lines(draw, valid: str, pool: list[str]) -> str:
    """A valid whitespace-separated table with tokens replaced, lines dropped or repeated;
    sometimes any text at all."""
    if draw(st.integers(0, 4)) == 0:
        line = st.lists(st.one_of(st.sampled_from(pool), texts.filter(lambda s: "\n" not in s)),
                        max_size=5).map(" ".join)
        return "\n".join(draw(st.lists(line, max_size=4)))
    lines = [line.split() for line in valid.splitlines()]
    for _ in range(draw(st.integers(0, 3))):
        kind, i = draw(st.sampled_from(["token", "drop", "repeat"])), draw(st.integers(0, len(lines) - 1))
        if kind == "token" and lines[i]:
            lines[i][draw(st.integers(0, len(lines[i]) - 1))] = draw(st.one_of(st.sampled_from(pool), texts))
        elif kind == "drop":
            lines[i] = []
        else:
            lines.append(list(lines[i]))
    return "\n".join(" ".join(tokens) for tokens in lines)


class KaldiTarget(_ReaderTarget):
    """polyhead.data.readers.read_kaldi on a data dir: wav.scp, segments, text, utt2spk."""

    name = "kaldi"
    FILES = ("wav.scp", "segments", "text", "utt2spk")

    def strategy(self):
        valid = (f"rec1 {self.wav}\nrec2 {self.wav}", "utt1 rec1 0.0 0.5\nutt2 rec2 0.2 -1",
                 "utt1 hello there\nutt2 hi", "utt1 s1\nutt2 s2")
        pool = [*KALDI_TOKENS, str(self.wav)]
        return st.tuples(*(st.one_of(st.none(), mutated_lines(v, pool)) for v in valid))

    def from_bytes(self, data: bytes):
        parts = data.decode("utf-8", errors="replace").split("\x00")
        return tuple(parts[i] if i < len(parts) else None for i in range(len(self.FILES)))

    def check(self, contents) -> str:
        from polyhead.data.readers import read_kaldi

        d = self.dir / "data"
        d.mkdir(exist_ok=True)
        for name, text in zip(self.FILES, contents):
            (d / name).unlink(missing_ok=True)
            if text is not None:
                (d / name).write_bytes(text.encode("utf-8", errors="surrogatepass"))
        return self._read_cuts(read_kaldi, d)


# --- trial lists ---------------------------------------------------------------------------------

TRIAL_TOKENS = ["0", "1", "target", "nontarget", "a", "b", "c", "id1/v/00001.wav", "2", "-1", "True", "x" * 50]


class TrialsTarget(_ReaderTarget):
    """polyhead.data.corpus.read_trials, with and without a set of known utterance ids."""

    name = "trials"
    KNOWN = ("a", "b", "c")

    def strategy(self):
        return st.tuples(mutated_lines("1 a b\n0 a c\nb c target\nc a nontarget", TRIAL_TOKENS), st.booleans())

    def from_bytes(self, data: bytes):
        return data.decode("utf-8", errors="replace"), bool(data[:1] and data[0] & 1)

    def check(self, item) -> str:
        from polyhead.data.corpus import ManifestError, read_trials

        text, known = item
        path = self.dir / "trials.txt"
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        try:
            trials = read_trials(path, self.KNOWN if known else None)
        except ManifestError as e:
            _names(str(e), str(path))
            return REJECTED
        for t in trials:
            if not isinstance(t.target, bool) or (known and not {t.enrol, t.test} <= set(self.KNOWN)):
                raise LetIn(repr(t))
        return ACCEPTED


# --- configs -------------------------------------------------------------------------------------

OVERRIDE_KEYS = ["train.lr", "train.steps", "train.schedule", "encoder.dim", "encoder.name", "tasks.asr.head",
                 "tasks.asr.train_sets", "tasks.speaker.crop", "train.weighting.options", "vocab", "corpus",
                 "tasks", "train", "base", "nosuch.key", "tasks.asr.train_sets.x", ""]
OVERRIDE_VALUES = ["3e-4", "-1", "0", "[1, 2", "{a: 1}", "null", "", ".nan", "1e400", "[0.1, 0.4, 0.5]",
                   "conformer", "nosuch", "!!python/object:os.system {}", "&a [*a]", "'", "{{}}", "~"]


@st.composite
def overrides(draw) -> list[str]:
    key, value = st.sampled_from(OVERRIDE_KEYS), st.one_of(st.sampled_from(OVERRIDE_VALUES), texts)
    one = st.one_of(st.builds(lambda k, v: f"{k}={v}", key, value), key.map(lambda k: "~" + k), texts)
    return draw(st.lists(one, max_size=3))


class ConfigTarget(_ReaderTarget):
    """polyhead.config.load_config: a YAML file (mutations of the demo config, or any text,
    with ``base:`` chains, loops included) plus dotted overrides."""

    name = "config"

    def base_tree(self) -> dict:
        from polyhead.config import CONFIG_DIR

        return yaml.safe_load((CONFIG_DIR / "scratch.yaml").read_text())

    def strategy(self):
        tree_text = mutated_json_lines(self.base_tree(), max_lines=1).map(
            lambda lines: yaml.safe_dump(json.loads(lines[0])) if _is_json(lines[0]) else lines[0])
        base = st.sampled_from(["base: demo\n", "base: self.yaml\n", "base: other.yaml\n", "base: [1]\n",
                                "base: nosuch\n", "base: '\\0'\n", ""])
        text = st.one_of(tree_text, st.tuples(base, tree_text).map("".join), texts,
                         st.sampled_from(["a: &a [*a]\n", "- 1\n- 2\n", ": : :\n", "tasks: !!binary AAAA\n"]))
        return st.tuples(text, overrides())

    def from_bytes(self, data: bytes):
        text, _, rest = data.decode("utf-8", errors="replace").partition("\x00")
        return text, [o for o in rest.split("\x00") if o]

    def check(self, item) -> str:
        from polyhead.config import Config, load_config

        text, overrides_ = item
        path = self.dir / "self.yaml"
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        (self.dir / "other.yaml").write_text("base: self.yaml\n")  # a loop through two files
        try:
            config = load_config(str(path), overrides_)
        except (ValueError, FileNotFoundError) as e:  # pydantic's ValidationError is a ValueError
            if not str(e).strip():
                raise Unclear(f"{type(e).__name__} without a message") from None
            return REJECTED
        if not isinstance(config, Config):
            raise LetIn(type(config).__name__)
        return ACCEPTED


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


# --- HTTP uploads --------------------------------------------------------------------------------

TOKEN = "fuzz-token"
ENDPOINTS = ["/v1/audio/transcriptions", "/v1/audio/analyze", "/v1/audio/diarize", "/v1/speakers/verify",
             "/v1/speakers/enroll", "/v1/speakers/identify"]
OTHER_PATHS = ["/health", "/metrics", "/v1/../health", "/v1/audio/%2e%2e/%2e%2e/etc/passwd", "/nosuch", "/v1/"]
FIELDS = ["model", "response_format", "temperature", "language", "prompt", "timestamp_granularities[]",
          "top_k", "name", "file", "files", "file_a", "file_b"]


def tiny_model(folder: Path) -> Path:
    """An untrained tiny model with every head (ASR, speaker, language, VAD): fast to run, and
    its outputs are as arbitrary as fuzzing wants."""
    import torch

    from polyhead.config import Config
    from polyhead.model import MultiTaskModel
    from polyhead.data.labels import CHARS

    config = Config.model_validate(dict(
        corpus="unused", encoder=dict(name="conformer", dim=32, layers=1, heads=2, ff_mult=2, dropout=0.0),
        tasks=dict(asr=dict(head=dict(type="ctc"), target="text", train_sets=["x"]),
                   speaker=dict(head=dict(type="speaker", options=dict(pooling="mean", emb_dim=16)),
                                target="speaker", train_sets=["x"]),
                   lid=dict(head=dict(type="classifier", options=dict(hidden=16)), target="language",
                            train_sets=["x"]),
                   vad=dict(head=dict(type="frame"), target="vad", train_sets=["x"])),
        vocab=dict(text=CHARS, speaker=["s1", "s2"], language=["en", "de"])))
    torch.manual_seed(0)
    MultiTaskModel(config).save(folder)
    return folder


@st.composite
def http_requests(draw, endpoint: str | None = None) -> dict:
    """Half well-formed (the endpoint's fields, a valid token: the handlers are reached, with
    fuzzed audio and values), half anything (paths, methods, tokens, raw bodies). With
    ``endpoint``: well-formed requests to that endpoint only."""
    well_formed = endpoint is not None or draw(st.booleans())
    if well_formed:
        path, method, auth = endpoint or draw(st.sampled_from(ENDPOINTS)), "POST", f"Bearer {TOKEN}"
    else:
        path = draw(st.sampled_from(ENDPOINTS + OTHER_PATHS))
        method = draw(st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE"]))
        auth = draw(st.sampled_from([f"Bearer {TOKEN}", None, "Bearer wrong", "Basic x", TOKEN, "Bearer "]))
    headers = {"Authorization": auth} if auth else {}
    if not well_formed and draw(st.integers(0, 3)) == 0:  # a raw body: broken multipart, JSON, nothing
        ctype = draw(st.sampled_from(["multipart/form-data", "multipart/form-data; boundary=x", "application/json",
                                      "text/plain", "application/x-www-form-urlencoded"]))
        body = draw(st.one_of(st.binary(max_size=300), st.just(b'--x\r\nContent-Disposition: form-data; name="file"'
                                                                b'; filename="a.wav"\r\n\r\nRIFF')))
        return dict(method=method, path=path, headers={**headers, "Content-Type": ctype}, content=body)
    names = st.one_of(st.sampled_from(["a.wav", "../../../../etc/passwd", "..", "x.wav/../../y", "", "a" * 300,
                                       "a.\x01b", "C:\\\\x.wav", "a.flac"]), texts)
    if well_formed:
        fields = {"/v1/speakers/verify": ["file_a", "file_b"], "/v1/speakers/enroll": ["files", "files"]}.get(
            path, ["file"])
    else:
        fields = draw(st.lists(st.sampled_from(["file", "files", "file_a", "file_b", "other"]), max_size=3))
    files = []
    for field in fields:
        content = draw(st.one_of(st.just(sine_wav(0.3)), st.just(sine_wav(0.5, 8000, channels=2)), audio_bytes()))
        files.append((field, (draw(names), content, "audio/wav")))
    values = st.one_of(st.sampled_from(["json", "text", "srt", "vtt", "verbose_json", "word", "3", "0", "-1", "nan",
                                        "1e9", "0.5", "polyhead", "alice", "../../etc/passwd"]), texts)
    if well_formed:  # the endpoint's own form fields, each present half the time, edge values first
        data = {field: draw(FORM_VALUES.get(field, values))
                for field in ENDPOINT_FIELDS.get(path, []) if draw(st.booleans())}
        if path.endswith("enroll"):
            data["name"] = draw(FORM_VALUES["name"])
    else:
        data = {field: draw(values) for field in draw(st.lists(st.sampled_from(FIELDS[:8]), max_size=4, unique=True))}
    return dict(method=method, path=path, headers=headers, files=files or None, data=data or None)


NUMBERS = ["0", "-1", "1", "3", "100", "101", "2147483648", "1e9", "0.5", "-0.0", "nan", "inf", "-inf", "", "x"]
FORM_VALUES = {
    "top_k": st.sampled_from(NUMBERS), "temperature": st.sampled_from(NUMBERS), "num_speakers": st.sampled_from(NUMBERS),
    "response_format": st.sampled_from(["json", "text", "srt", "vtt", "verbose_json", "docx", ""]),
    "timestamp_granularities[]": st.sampled_from(["word", "segment", "char", ""]),
    "name": st.one_of(st.sampled_from(["alice", "bob", "../../x", " ", "a" * 200, "a\x00b", "é"]), texts),
}
ENDPOINT_FIELDS = {
    "/v1/audio/transcriptions": ["model", "response_format", "temperature", "language", "prompt",
                                 "timestamp_granularities[]"],
    "/v1/speakers/identify": ["top_k"],
    "/v1/audio/diarize": ["num_speakers"],
}


class HttpTarget:
    """The FastAPI app in-process (starlette's TestClient), a tiny model and a speaker registry."""

    name = "http"

    def __init__(self, workdir: Path, max_upload_mb: float = 0.5):
        from fastapi.testclient import TestClient

        from polyhead.serving import create_app

        workdir = Path(workdir) / "http"
        workdir.mkdir(parents=True, exist_ok=True)
        from polyhead.inference.registry import SpeakerRegistry

        self.served = tiny_model(workdir / "model")
        registry = workdir / "registry" / "speakers.sqlite"
        rng = np.random.default_rng(0)  # enrolled speakers from the start: identify has something to rank
        SpeakerRegistry(registry).enroll("seed-a", [rng.normal(size=16)])
        SpeakerRegistry(registry).enroll("seed-b", [rng.normal(size=16)])
        self.app = create_app(self.served, token=TOKEN, max_upload_mb=max_upload_mb, registry_path=registry)
        self.client = TestClient(self.app, raise_server_exceptions=True)

    def strategy(self, endpoint: str | None = None):
        return http_requests(endpoint)

    def from_bytes(self, data: bytes):
        """Raw bytes as the uploaded file of an analyze request."""
        return dict(method="POST", path="/v1/audio/analyze", headers={"Authorization": f"Bearer {TOKEN}"},
                    files=[("file", ("upload.bin", data, "audio/wav"))], data=None)

    def check(self, req: dict) -> str:
        kwargs = {k: req[k] for k in ("headers", "files", "data", "content") if req.get(k) is not None}
        r = self.client.request(req["method"], req["path"], **kwargs)
        if r.status_code >= 500:
            raise AssertionError(f"{r.status_code}: {r.text[:300]}")
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                raise Unclear(f"{r.status_code} without a JSON error: {r.text[:200]}") from None
            if not isinstance(message, str) or not message:
                raise Unclear(f"{r.status_code} with an empty message")
            return REJECTED
        return ACCEPTED


TARGETS = [AudioTarget, LhotseTarget, NemoTarget, KaldiTarget, TrialsTarget, ConfigTarget, HttpTarget]
