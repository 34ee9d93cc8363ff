"""Security promises: no pickle when loading anything (safetensors + JSON, torch.load only with
weights_only=True), bearer tokens compared in constant time, no shell anywhere (argv lists), and
no value from a request ever reaching a file path outside the served folder."""

from __future__ import annotations

import ast
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

import fuzz_targets as ft

SRC = Path(__file__).resolve().parents[1] / "src" / "polyhead"
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _calls(root: Path = SRC):
    """(file, line, dotted name, call node) of every call in the package."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                yield path.relative_to(root.parent), node.lineno, ast.unparse(node.func), node


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_no_shell_and_argv_lists_only():
    found = []
    for where, line, name, call in _calls():
        shell = _kw(call, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            found.append(f"{where}:{line} {name}(shell=...)")
        if name in ("os.system", "os.popen") or name.startswith("os.exec") or name.startswith("os.spawn"):
            found.append(f"{where}:{line} {name}")
        if name.split(".")[-1] in SUBPROCESS_CALLS and name.startswith("subprocess") and call.args and \
                isinstance(call.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
            found.append(f"{where}:{line} {name} with a command string")
    assert not found, found


def test_no_pickle_when_loading():
    """torch.load only with weights_only=True; no pickle, no yaml.load, no np.load with pickles."""
    found = []
    for where, line, name, call in _calls():
        if name == "torch.load":
            wo = _kw(call, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}:{line} torch.load without weights_only=True")
        if name.startswith(("pickle.", "cPickle.", "dill.", "joblib.load", "yaml.load", "yaml.unsafe_load",
                            "yaml.full_load")):
            found.append(f"{where}:{line} {name}")
        if name in ("np.load", "numpy.load"):
            ap = _kw(call, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}:{line} np.load(allow_pickle=...)")
        # configs, tokenizers and feature extractors are JSON; only model weights can be pickles
        json_only = name.split(".")[0].endswith(("Config", "Tokenizer", "TokenizerFast", "FeatureExtractor"))
        if name.endswith("from_pretrained") and not json_only:
            us = _kw(call, "use_safetensors")
            if not (isinstance(us, ast.Constant) and us.value is True):
                found.append(f"{where}:{line} {name} without use_safetensors=True")
    assert not found, found


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/polyhead-pickle-ran",))


def test_a_pickled_payload_in_a_checkpoint_is_refused(tmp_path):
    from polyhead.model import MultiTaskModel
    from polyhead.training import checkpoint as ckpt

    marker = Path("/tmp/polyhead-pickle-ran")
    marker.unlink(missing_ok=True)
    folder = ft.tiny_model(tmp_path / "last")
    torch.save({"step": _Payload()}, folder / ckpt.STATE_FILE)  # a crafted trainer_state.pt
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        ckpt.read_state(folder)
    assert not marker.exists(), "the pickled payload ran"
    # the model itself comes from safetensors + JSON only: a pickled model file is not read
    (folder / "model.safetensors").unlink()
    torch.save({"payload": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MultiTaskModel.load(folder)
    assert not marker.exists()


def test_pretrained_wav2vec2_only_from_safetensors(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from polyhead.model.encoders import Wav2Vec2Encoder

    tiny = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=4))
    tiny.save_pretrained(tmp_path / "safe")
    assert Wav2Vec2Encoder(pretrained=str(tmp_path / "safe")).dim == 32
    # the same folder with the weights as a pickle (what older transformers wrote) is refused
    marker = Path("/tmp/polyhead-pickle-ran")
    marker.unlink(missing_ok=True)
    (tmp_path / "safe" / "model.safetensors").unlink()
    torch.save({**tiny.state_dict(), "payload": _Payload()}, tmp_path / "safe" / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        Wav2Vec2Encoder(pretrained=str(tmp_path / "safe"))
    assert not marker.exists()


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    return ft.HttpTarget(tmp_path_factory.mktemp("security"))


def test_bearer_token_compared_in_constant_time(http, monkeypatch):
    import hmac

    from polyhead.serving import app as app_module

    compared, real = [], hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    files = {"file": ("a.wav", ft.sine_wav(0.3))}
    assert http.client.post("/v1/audio/analyze", files=files, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.client.post("/v1/audio/analyze", files=files,
                            headers={"Authorization": f"Bearer {ft.TOKEN}"}).status_code == 200
    assert [a for a, _ in compared] == [b"Bearer nope", f"Bearer {ft.TOKEN}".encode()]


EVIL = "polyhead-evil-9f3e"
TRAVERSALS = [f"../../../../../../tmp/{EVIL}/x.wav", f"/tmp/{EVIL}/x.wav", f"..\\..\\{EVIL}.wav",
              f"x.wav/../../../{EVIL}", f"{EVIL}/../../../../etc/passwd"]


def test_no_request_value_reaches_a_file_path(http):
    """Every endpoint that takes a name or a path-like value, given '../' values: no file
    is opened, created or listed under any of them (an audit hook sees every open, and
    sqlite, os and shutil calls), and no answer is a 5xx."""
    import io

    import numpy as np
    import soundfile as sf

    seen, active = [], [True]

    def hook(event, args):
        if active[0] and EVIL in repr(args) and not event.startswith(("object.", "sys._getframe", "exec")):
            seen.append((event, repr(args)[:200]))

    sys.addaudithook(hook)  # cannot be removed: switched off below instead
    auth = {"Authorization": f"Bearer {ft.TOKEN}"}
    wav = ft.sine_wav(0.3)
    long = io.BytesIO()  # over 60 s: the long-form path writes the upload to a temporary file
    sf.write(long, np.zeros(8000 * 61, np.float32), 8000, format="WAV", subtype="PCM_U8")
    try:
        for value in TRAVERSALS:
            c = http.client
            answers = [
                c.post("/v1/audio/transcriptions", files={"file": (value, wav)}, data={"model": value}, headers=auth),
                c.post("/v1/audio/transcriptions", files={"file": (value, long.getvalue() + value.encode())},
                       data={"model": value}, headers=auth),
                c.post("/v1/audio/analyze", files={"file": (value, wav)}, headers=auth),
                c.post("/v1/audio/diarize", files={"file": (value, wav)}, headers=auth),
                c.post("/v1/speakers/verify", files={"file_a": (value, wav), "file_b": (value, wav)}, headers=auth),
                c.post("/v1/speakers/enroll", files=[("files", (value, wav))], data={"name": value}, headers=auth),
                c.post("/v1/speakers/identify", files={"file": (value, wav)}, headers=auth),
                c.get(f"/static/{value}"), c.get(f"/{value}"), c.get(f"/v1/audio/{value}", headers=auth),
            ]
            assert all(r.status_code < 500 for r in answers), [(r.status_code, r.text[:100]) for r in answers]
            assert answers[0].status_code == 200 and answers[5].status_code == 200  # transcribed, enrolled
            # a language or prompt that is a path is refused as a value, never opened
            odd = c.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                         data={"language": value, "prompt": value}, headers=auth)
            assert odd.status_code == 400, (odd.status_code, odd.text[:100])
    finally:
        active[0] = False
    assert not seen, seen
    assert not Path(f"/tmp/{EVIL}").exists()
    # the name is a name: it is in the registry as given, not a file anywhere
    assert http.client.post("/v1/speakers/identify", files={"file": ("a.wav", wav)}, data={"top_k": "100"},
                            headers=auth).json()["candidates"]
