"""Deployment: ONNX export (fp32 and int8) and int8 dynamic quantisation of the tiny model
answer like the PyTorch model, through `polyhead.load` and the `polyhead export` command."""

import json

import numpy as np
import pytest
import torch

import polyhead
from polyhead.features import N_MELS
from polyhead.cli import main
from polyhead.inference.export import EXPORT_FILE, export_model, load_export, output_names
from polyhead.runs import apply_calibration
from polyhead.model import MultiTaskModel

LENGTHS = (173, 611)  # fbank frames: two lengths, neither the traced one (400)
ONNX_ATOL = 1e-4
INT8_MIN_COSINE = 0.98  # speaker embedding, int8 vs fp32


def _needs_onnx():
    for module in ("onnxruntime", "onnxscript", "onnx"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install 'polyhead[deploy]')")


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def onnx_export(tiny_run, tmp_path_factory):
    _needs_onnx()
    _, run = tiny_run
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_onnx_matches_pytorch_on_two_lengths(tiny_run, onnx_export):
    _, run = tiny_run
    model = MultiTaskModel.load(run / "best")
    # the graph carries the run's calibrated VAD threshold, as a loaded run applies it
    apply_calibration(model, json.loads((run / "calibration.json").read_text()))
    assert "vad_threshold" in json.loads((onnx_export / "calibration.json").read_text())
    exported = load_export(onnx_export)
    info = json.loads((onnx_export / EXPORT_FILE).read_text())
    assert info["outputs"][:-1] == [name for name, _, _ in output_names(model.config)]
    gen = torch.Generator().manual_seed(1)
    for frames in LENGTHS:
        x, lengths = torch.randn(1, frames, N_MELS, generator=gen), torch.tensor([frames])
        with torch.no_grad():
            ref = model(x, lengths)
        got = exported(x, lengths)
        assert set(got) == set(ref)
        for task, out in got.items():
            want = ref[task]
            if model.config.tasks[task].head.type == "ctc":
                want = dict(want, logits=want["logits"].log_softmax(-1))
            for key in ("logits", "embedding"):
                if key in out:
                    torch.testing.assert_close(out[key], want[key], atol=ONNX_ATOL, rtol=1e-4)
            if "lengths" in out:
                assert out["lengths"].tolist() == want["lengths"].tolist()


def test_onnx_padded_batch_matches_each_utterance(onnx_export):
    """The dynamic batch axis: a padded batch of both lengths answers as each one alone."""
    exported = load_export(onnx_export)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, max(LENGTHS), N_MELS, generator=gen)
    batch = exported(x, torch.tensor([LENGTHS[0], LENGTHS[1]]))
    alone = exported(x[:1, : LENGTHS[0]], torch.tensor([LENGTHS[0]]))
    for task, out in alone.items():
        key = "embedding" if "embedding" in out else "logits"
        want, got = out[key][0], batch[task][key][0]
        if "lengths" in out:  # frame-level output: the real frames only
            n = int(out["lengths"][0])
            want, got = want[:n], got[:n]
        torch.testing.assert_close(got, want, atol=ONNX_ATOL, rtol=1e-4)


def test_load_onnx_analyzes_like_pytorch(tiny_run, onnx_export):
    folder, run = tiny_run
    wav = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))[0]
    ref, got = polyhead.load(run).analyze(wav), polyhead.load(onnx_export).analyze(wav)
    assert got["text"] == ref["text"] and got.get("language") == ref.get("language")
    assert _cosine(got["speaker_embedding"], ref["speaker_embedding"]) > 0.9999
    assert polyhead.load(onnx_export).threshold == pytest.approx(polyhead.load(run).threshold)
    with pytest.raises(ValueError, match="PyTorch checkpoint"):
        polyhead.load(onnx_export, quantize="int8")


def test_int8_runs_and_stays_close(tiny_run, tmp_path):
    folder, run = tiny_run
    wav = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))[0]
    fp32, int8 = polyhead.load(run), polyhead.load(run, quantize="int8")
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    ref, got = fp32.analyze(wav), int8.analyze(wav)
    assert set(got) == set(ref)
    assert _cosine(got["speaker_embedding"], ref["speaker_embedding"]) > INT8_MIN_COSINE
    # the exported int8 folder holds the same quantised weights
    assert main(["export", str(run), "--format", "int8", "--out", str(tmp_path / "int8")]) == 0
    again = polyhead.load(tmp_path / "int8").analyze(wav)
    assert again["speaker_embedding"] == pytest.approx(got["speaker_embedding"], abs=1e-6)
    with pytest.raises(ValueError, match="unknown quantisation"):
        polyhead.load(run, quantize="int4")


def test_onnx_int8_export_runs_and_stays_close(tiny_run, onnx_export, tmp_path):
    folder, run = tiny_run
    out = tmp_path / "onnx-int8"
    assert main(["export", str(run), "--format", "onnx-int8", "--out", str(out)]) == 0
    assert (out / "model.onnx").stat().st_size < (onnx_export / "model.onnx").stat().st_size
    wav = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))[0]
    ref, got = polyhead.load(run).analyze(wav), polyhead.load(out).analyze(wav)
    assert set(got) == set(ref)
    assert _cosine(got["speaker_embedding"], ref["speaker_embedding"]) > INT8_MIN_COSINE


@pytest.mark.parametrize("fmt", ["onnx", "onnx-int8"])
def test_whisper_model_exports_with_its_decoder_and_reloads_elsewhere(tmp_path, fmt):
    """Encoder graph + the decoder graphs (cross keys, cached step) + tokenizer: the export, moved away from
    its run and its pretrained source, transcribes as the PyTorch model does (fp32: the same
    tokens), and export.json's parity is measured on the files shipped, int8 ones included."""
    _needs_onnx()
    import shutil

    import soundfile as sf
    from test_whisper_serving import saved, whisper_config
    from tiny_whisper import make_tiny_whisper

    from polyhead.inference.diarize import transcribe

    pretrained = make_tiny_whisper(tmp_path / "tiny")
    run = saved(whisper_config(pretrained), tmp_path / "model")
    wav = tmp_path / "clip.wav"
    sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(24_000).astype(np.float32), 16_000)
    ref = polyhead.load(run).analyze(wav)
    ref_speakers = transcribe(polyhead.load(run), wav, num_speakers=1)
    assert main(["export", run, "--format", fmt, "--out", str(tmp_path / "export")]) == 0
    info = json.loads((tmp_path / "export" / EXPORT_FILE).read_text())
    assert info["decoder"]["files"] == ["decoder_cross.onnx", "decoder_step.onnx"]
    assert info["fp32"]["decoder_greedy_equal"] and info["fp32"]["decoder_beam_equal"]
    assert info["fp32"]["decoder_max_abs_diff"] < 1e-3
    assert info["max_input_seconds"] == 30.0 and set(info["shipped"]) == set(info["fp32"])
    with pytest.raises(ValueError, match="--format onnx"):  # torch int8 has no decoder loop
        export_model(run, "int8", tmp_path / "int8")
    moved = shutil.move(tmp_path / "export", tmp_path / "elsewhere" / "export")
    shutil.rmtree(run)
    shutil.rmtree(pretrained)
    exported = polyhead.load(moved)
    got = exported.analyze(wav)
    assert exported.max_seconds == 30.0
    by_speaker = transcribe(exported, wav, num_speakers=1)  # pieces, passes and decoder on onnxruntime
    assert by_speaker["speakers"] == ref_speakers["speakers"]
    if fmt == "onnx":
        assert info["shipped"] == info["fp32"]
        assert got["text"] == ref["text"] and got["avg_logprob"] == pytest.approx(ref["avg_logprob"], abs=1e-3)
        assert [s["text"] for s in by_speaker["segments"]] == [s["text"] for s in ref_speakers["segments"]]
    else:  # quantised: another model, but a working one, and it was measured as shipped
        assert info["shipped"]["max_abs_diff"] > info["fp32"]["max_abs_diff"]
        assert isinstance(got["text"], str)
