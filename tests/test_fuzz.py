"""Property-based fuzzing of every input surface (the fast CI subset; bench/fuzz.py runs
10,000+ of the same inputs): audio decoding, manifests and corpus readers, trial lists,
configs with overrides, HTTP uploads. Each input is accepted with its invariants kept, or
refused with a clear error (a specific exception naming the culprit, or a 4xx JSON error);
never another exception, a 5xx or a hang. The targets live in tests/fuzz_targets.py.
Below them, the inputs that once crashed, kept as regression tests."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings

import fuzz_targets as ft

EXAMPLES = 40  # per target; bench/fuzz.py --examples N for the long run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def http(workdir):
    return ft.HttpTarget(workdir)


@pytest.mark.parametrize("target_cls", [t for t in ft.TARGETS if t is not ft.HttpTarget], ids=lambda t: t.name)
def test_fuzz_readers_and_decoders(target_cls, workdir):
    target = target_cls(workdir)

    @FUZZ
    @given(target.strategy())
    def check(item):
        assert target.check(item) in (ft.ACCEPTED, ft.REJECTED)

    check()


@pytest.mark.parametrize("endpoint", [None, *ft.ENDPOINTS], ids=lambda e: e or "any")
def test_fuzz_http(http, endpoint):
    """Any request at all, then well-formed requests to each endpoint (fuzzed audio, values)."""
    @settings(FUZZ, max_examples=EXAMPLES if endpoint is None else EXAMPLES // 2)
    @given(http.strategy(endpoint))
    def check(req):
        assert http.check(req) in (ft.ACCEPTED, ft.REJECTED)

    check()


# --- regressions: inputs that crashed before the fix ---------------------------------------------

def _wav(samples, rate=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, np.float32), rate, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize("data,needle", [
    (_wav(np.zeros(1)), "too short"),  # 0 feature frames: the encoder's convolution failed
    (_wav(np.zeros(50)), "too short"),
    (ft.sine_wav(0.1)[:40], "not a readable audio file"),  # a truncated header
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x02\x00\x00\x00"
     b"\x02\x00\x10\x00data\xff\xff\xff\x7f" + b"\x00" * 64, "sample rate"),  # 1 Hz
])
def test_audio_regressions(workdir, data, needle):
    from polyhead.audio import AudioError, load_audio

    with pytest.raises(AudioError, match=needle):
        load_audio(data, name="x.wav")
    assert ft.AudioTarget(workdir).check(data) == ft.REJECTED


def test_decoding_stops_at_the_length_limit():
    from polyhead.audio import AudioError, load_audio

    data = _wav(np.zeros(16000 * 3))
    assert len(load_audio(data, max_seconds=3.5)) == 16000 * 3
    with pytest.raises(AudioError, match="longer than the limit of 2 s"):
        load_audio(data, name="long.wav", max_seconds=2)


@pytest.mark.parametrize("text,overrides,needle", [
    ("base: self.yaml\n", [], "loops back"),  # RecursionError before
    ("base: other.yaml\n", [], "loops back"),  # through two files
    ("base: [1, 2]\n", [], "'base' must name"),  # TypeError before
    ("- a\n- b\n", [], "expected a mapping"),  # AttributeError before
    (": : :\n", [], "not valid YAML"),  # yaml.ParserError before
    ("base: demo\n", ["train.lr=[1"], "not valid YAML"),
    ("base: demo\n", ["tasks.asr.train_sets.x=1"], "is not a section"),
])
def test_config_regressions(workdir, text, overrides, needle):
    from polyhead.config import ConfigError, load_config

    target = ft.ConfigTarget(workdir)
    assert target.check((text, overrides)) == ft.REJECTED
    with pytest.raises(ConfigError, match=needle):
        load_config(str(target.dir / "self.yaml"), overrides)


def test_lhotse_manifest_regressions(workdir):
    """Types JSON lets through (a dict as id, a list as duration) and audio sources lhotse would
    run in a shell or download: refused, naming the manifest."""
    from polyhead.data.corpus import ManifestError, load_cuts
    from polyhead.data.readers import read_lhotse

    target = ft.LhotseTarget(workdir)
    base = target.base_cut()
    bad = [dict(base, id={"a": 1}), dict(base, duration=[False]), dict(base, duration=True),
           dict(base, supervisions=[dict(base["supervisions"][0], text={"x": 1})]),
           dict(base, recording=dict(base["recording"], duration=100.0)),
           dict(base, recording=dict(base["recording"], sources=[
               {"type": "command", "channels": [0], "source": "touch /tmp/polyhead-pwned"}])),
           dict(base, recording=dict(base["recording"], sources=[
               {"type": "url", "channels": [0], "source": "http://example.com/a.wav"}]))]
    for cut in bad:
        assert target.check(([json.dumps(cut)], False)) == ft.REJECTED, cut
    path = target.dir / "command_cuts.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(bad[-2]) + "\n").encode()))
    with pytest.raises(ManifestError, match="'command' is not allowed"):
        load_cuts(path)  # also when a corpus set is loaded for training
    with pytest.raises(ManifestError, match="'command' is not allowed"):
        read_lhotse(path)


@pytest.mark.parametrize("entry", [
    {"audio_filepath": {"a" * 300: 1}, "duration": 1.0},  # OSError 'File name too long' before
    {"audio_filepath": "a.wav", "duration": 1.0, "text": {}},  # let in before
    {"audio_filepath": "a.wav", "duration": 1.0, "lang": [{}]},
    {"audio_filepath": "a.wav", "duration": [1]},
    {"audio_filepath": "a.wav", "duration": "nan"},
])
def test_nemo_regressions(workdir, entry):
    assert ft.NemoTarget(workdir).check([json.dumps(entry)]) == ft.REJECTED


@pytest.mark.parametrize("form,needle", [
    ({"top_k": "0"}, "top_k"),  # IndexError (500) before
    ({"top_k": "-3"}, "top_k"),
])
def test_identify_regressions(http, form, needle):
    r = http.client.post("/v1/speakers/identify", files={"file": ("a.wav", ft.sine_wav(0.3))}, data=form,
                         headers={"Authorization": f"Bearer {ft.TOKEN}"})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


@pytest.mark.parametrize("temperature", ["nan", "inf", "-1"])  # NaN in the JSON answer: 500 before
def test_transcription_temperature_is_checked(http, temperature):
    r = http.client.post("/v1/audio/transcriptions", files={"file": ("a.wav", ft.sine_wav(0.3))},
                         data={"temperature": temperature, "response_format": "verbose_json"},
                         headers={"Authorization": f"Bearer {ft.TOKEN}"})
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]


def test_unknown_routes_get_the_json_error_shape(http):
    for method, path in (("GET", "/nosuch"), ("DELETE", "/health")):
        r = http.client.request(method, path)
        assert r.status_code in (404, 405) and r.json()["error"]["message"]


def test_speaker_endpoints_without_a_speaker_head_are_400(tmp_path):
    """A speech-only model: verify / enroll / identify say so (a ValueError, a 500, before)."""
    import torch
    from fastapi.testclient import TestClient

    from polyhead.config import Config
    from polyhead.model import MultiTaskModel
    from polyhead.serving import create_app
    from polyhead.data.labels import CHARS

    config = Config.model_validate(dict(
        corpus="unused", encoder=dict(name="conformer", dim=32, layers=1, heads=2, ff_mult=2),
        tasks=dict(asr=dict(head=dict(type="ctc"), target="text", train_sets=["x"])), vocab=dict(text=CHARS)))
    torch.manual_seed(0)
    MultiTaskModel(config).save(tmp_path / "model")
    client = TestClient(create_app(tmp_path / "model", registry_path=tmp_path / "reg.sqlite"))
    wav = ft.sine_wav(0.3)
    for path, files, data in (("/v1/speakers/verify", {"file_a": ("a.wav", wav), "file_b": ("b.wav", wav)}, None),
                              ("/v1/speakers/enroll", {"files": ("a.wav", wav)}, {"name": "alice"}),
                              ("/v1/speakers/identify", {"file": ("a.wav", wav)}, None)):
        r = client.post(path, files=files, data=data)
        assert r.status_code == 400 and "no speaker head" in r.json()["error"]["message"], (path, r.text)
