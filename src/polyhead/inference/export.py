"""Deployment: int8 dynamic quantisation and ONNX export of the whole model.

    polyhead export RUN --format onnx|onnx-int8|int8 --out DIR

The ONNX graph holds the encoder and every head: inputs ``features`` [B, T, F] (fbank and
log-mel encoders; ``waveform`` [B, S] for wav2vec2) and ``lengths`` [B]; outputs one tensor
per task (CTC log-probabilities, speaker embedding, classifier logits, VAD frame logits; for
a Whisper decoder head its encoder states ``memory`` and its CTC branch) and
``frame_lengths`` [B], with batch and time dynamic. A Whisper decoder adds two graphs with a
key/value cache (``onnx_decoder.py``) and its tokenizer. An export folder also holds the
run's config.json (label vocabularies), calibration.json (and cohort.safetensors, the AS-norm
cohort, where the run has one), and export.json saying what is
in it and how close each graph came to PyTorch (``fp32``, and ``shipped``: measured on the
files as written, int8 ones included), so ``polyhead.load(DIR)`` answers through the same
``Polyhead`` API.

int8 is dynamic quantisation of every nn.Linear (int8 weights, activations quantised per
call): no calibration data needed, and it covers the feed-forward layers that dominate the
encoder's cost. Attention projections stay fp32 (torch leaves MultiheadAttention's out_proj
out on purpose), as do convolutions, which dynamic quantisation does not cover. The PyTorch
int8 format covers models without a Whisper decoder (whose loop needs the ONNX graphs).
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import read_config_json, save_config
from ..model.adapters import merge_lora, without_lora
from ..features import FeatureExtractor, from_spec
from ..model import MultiTaskModel
from ..runs import (CALIBRATION_FILE, COHORT_FILE, CONFIG_FILE, TOKENIZER_DIR, apply_calibration, checkpoint_folder,
                    read_calibration)
from ..tasks import task_kinds

FORMATS = ("onnx", "onnx-int8", "int8")
QUANTIZE_CHOICES = ("int8",)
EXPORT_FILE = "export.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.pt"
FRAME_LENGTHS = "frame_lengths"
# Tracing input: batch 2 so the batch axis is not specialised to 1, unequal lengths so the
# padding masks are traced, 4 s so every layer sees a real sequence.
EXAMPLE_FRAMES = 400
EXAMPLE_SAMPLES = 64_000
MIN_TIME = 2  # shortest input (frames or samples) the graph is exported for
PARITY_TOLERANCE = 1e-3  # max |ONNX - PyTorch| accepted right after export (fp32 graph)
DECODER_TOLERANCE = 1e-2  # the same for the decoder's vocabulary logits (values of order 10)


# --- int8 (PyTorch) ------------------------------------------------------------------------

def quantize_int8(model: MultiTaskModel) -> MultiTaskModel:
    """Dynamic int8 quantisation of every nn.Linear (a copy; the model itself is kept)."""
    from torch.ao.quantization import quantize_dynamic

    # torch.ao.quantization is deprecated in favour of torchao (not installed here); the
    # pinned torch still ships it and its fbgemm/x86 int8 kernels.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False).eval()


def quantize(model: MultiTaskModel, how: str | None) -> MultiTaskModel:
    if how is None:
        return model
    if how not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown quantisation {how!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    if not isinstance(model, MultiTaskModel):
        raise ValueError("quantize applies to a PyTorch checkpoint; for ONNX export with --format onnx-int8")
    return quantize_int8(model)


# --- ONNX graph ------------------------------------------------------------------------------

def output_names(config) -> list[tuple[str, str, str]]:
    """(ONNX output name, task, key in that task's output dict), in graph order: each task
    kind's ``export_outputs``; outputs named *log_probs get a log-softmax in the graph."""
    return [(f"{kind.name}.{suffix}", kind.name, key)
            for kind in task_kinds(config) for suffix, key in kind.export_outputs()]


def _as_exported(name: str, value: torch.Tensor) -> torch.Tensor:
    # CTC decoders (greedy, beam search, k2, pyctcdecode) take log-probabilities.
    return value.log_softmax(-1) if name.endswith("log_probs") else value


class ExportGraph(nn.Module):
    """The model with flat tensor outputs, as an ONNX graph wants them."""

    def __init__(self, model: MultiTaskModel):
        super().__init__()
        self.model = model
        self.names = output_names(model.config)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(inputs, lengths)
        flat = [_as_exported(n, out[t][k]) for n, t, k in self.names]
        frames = next((o["lengths"] for o in out.values() if "lengths" in o), None)
        return (*flat, frames if frames is not None else lengths)


def input_name(kind: str) -> str:
    return "waveform" if kind == "waveform" else "features"


def example_inputs(model: MultiTaskModel) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if model.encoder.features.dim is None:  # the waveform
        x = 0.1 * torch.randn(2, EXAMPLE_SAMPLES, generator=gen)
    else:
        x = torch.randn(2, EXAMPLE_FRAMES, model.encoder.features.dim, generator=gen)
    n = x.shape[1]
    return x, torch.tensor([n, n * 3 // 4])


def export_onnx(model: MultiTaskModel, path: str | Path) -> list[str]:
    """Write the whole model as one ONNX file; returns its output names.

    The dynamo exporter (torch.export + onnxscript), not the legacy TorchScript one: tracing
    bakes the example's sequence length into nn.MultiheadAttention's reshapes (torch 2.13:
    a graph traced at 75 frames fails at 130), while torch.export keeps time symbolic.
    """
    model = model.eval()
    graph = ExportGraph(model)
    names = [n for n, _, _ in graph.names] + [FRAME_LENGTHS]
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=MIN_TIME)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # it warns about every torchvision op it cannot register
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, example_inputs(model), str(path), dynamo=True, verbose=False,
                              input_names=[input_name(model.encoder.input_kind), "lengths"], output_names=names,
                              dynamic_shapes=({0: batch, 1: time}, {0: batch}), external_data=False)
    finally:
        onnx_log.setLevel(level)
    return names


def quantize_onnx(src: str | Path, dst: str | Path) -> None:
    """onnxruntime's dynamic int8 quantisation (MatMul/Gemm weights) of an exported graph."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(src))
    # The quantiser re-runs onnx shape inference, which rejects some of the shapes the
    # exporter annotated; they are optional hints, so they go and inference starts afresh.
    del proto.graph.value_info[:]
    plain = Path(dst).with_suffix(".fp32.onnx")
    onnx.save(proto, str(plain))
    try:
        quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8)
    finally:
        plain.unlink(missing_ok=True)


# --- export folders --------------------------------------------------------------------------

def export_model(run: str | Path, fmt: str, out: str | Path) -> dict:
    """``polyhead export``: write an export folder; returns what export.json says."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = checkpoint_folder(run)
    model = MultiTaskModel.load(folder)
    merged = merge_lora(model)
    if merged:  # adapters folded into their layers: an export has the plain structure
        model.config = without_lora(model.config)
    decoders = [t for t in model.config.tasks if model.heads[t].reads_encoder_source]
    if len(decoders) > 1:
        raise ValueError(f"{folder}: tasks {decoders} each have a Whisper decoder; an export holds one")
    if decoders and fmt == "int8":
        raise ValueError(f"{folder}: task {decoders[0]!r} has a Whisper decoder head; export it with "
                         "--format onnx or onnx-int8 (its decoding loop runs on the exported graphs)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_FILE).unlink(missing_ok=True)  # written last: a failed export is no export
    if merged:
        save_config(without_lora(read_config_json(folder / CONFIG_FILE)), out / CONFIG_FILE)
    else:
        shutil.copyfile(folder / CONFIG_FILE, out / CONFIG_FILE)
    calibration, cal_dir = read_calibration(folder)
    if cal_dir is not None:
        shutil.copyfile(cal_dir / CALIBRATION_FILE, out / CALIBRATION_FILE)
        if (cal_dir / COHORT_FILE).is_file():  # the AS-norm cohort goes with its threshold
            shutil.copyfile(cal_dir / COHORT_FILE, out / COHORT_FILE)
        apply_calibration(model, calibration)  # the ONNX graph gets the VAD threshold
    info = {"format": fmt, "source": str(folder), "features": model.encoder.features.spec(),
            "frames_per_second": model.encoder.frames_per_second,
            "max_input_seconds": getattr(model.encoder, "max_input_seconds", None)}
    if fmt == "int8":
        torch.save(quantize_int8(model).state_dict(), out / INT8_FILE)
        info["file"] = INT8_FILE
    else:
        target = out / ONNX_FILE
        info["outputs"] = export_onnx(model, target)
        files = [ONNX_FILE]
        if decoders:
            from .onnx_decoder import export_decoder

            shutil.copytree(folder / TOKENIZER_DIR, out / TOKENIZER_DIR, dirs_exist_ok=True)
            info["decoder"] = {"task": decoders[0], "in_dim": model.encoder.dim,
                               "files": export_decoder(model.heads[decoders[0]], out)}
            files += info["decoder"]["files"]
        # the fp32 graphs must match PyTorch before anything else is done with them
        info["fp32"] = check_parity(model, OnnxModel(out, info=info))
        if info["fp32"]["max_abs_diff"] > PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX export differs from PyTorch by {info['fp32']['max_abs_diff']:.2g}")
        if decoders and not (info["fp32"]["decoder_max_abs_diff"] <= DECODER_TOLERANCE
                             and info["fp32"]["decoder_greedy_equal"] and info["fp32"]["decoder_beam_equal"]):
            raise RuntimeError(f"the exported decoder differs from PyTorch: {info['fp32']}")
        if fmt == "onnx-int8":
            for name in files:
                quantize_onnx(out / name, out / name)
        # what is measured on the files shipped (int8: the quantised ones), not assumed
        info["shipped"] = info["fp32"] if fmt == "onnx" else check_parity(model, OnnxModel(out, info=info))
        info["max_abs_diff"] = info["shipped"]["max_abs_diff"]
        info["file"], info["files"] = ONNX_FILE, files
    info["bytes"] = sum((out / f).stat().st_size for f in info.get("files", [info["file"]]))
    (out / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def is_export(folder: str | Path) -> bool:
    return (Path(folder) / EXPORT_FILE).is_file()


def load_export(folder: str | Path, threads: int | None = None):
    """The model in an export folder: an OnnxModel, or a quantised MultiTaskModel."""
    folder = Path(folder)
    info = json.loads((folder / EXPORT_FILE).read_text())
    if info["format"] != "int8":
        return OnnxModel(folder, info=info, threads=threads)
    config = read_config_json(folder / CONFIG_FILE)
    model = quantize_int8(MultiTaskModel(config).eval())
    with warnings.catch_warnings():  # torch's own qint8 unpickling touches TypedStorage
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        state = torch.load(folder / INT8_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def check_parity(model: MultiTaskModel, onnx_model: "OnnxModel") -> dict:
    """Parity of the encoder graph (and of the decoder graphs where there are some)."""
    result = {"max_abs_diff": parity(model, onnx_model)}
    for task, head in onnx_model.heads.items():
        from .onnx_decoder import decoder_parity

        result.update(decoder_parity(model.heads[task], head))
    return result


@torch.no_grad()
def parity(model: MultiTaskModel, onnx_model: "OnnxModel") -> float:
    """Largest |ONNX - PyTorch| over every output, on an input shorter than the traced one."""
    x, lengths = example_inputs(model)
    x, lengths = x[:, : x.shape[1] * 3 // 4], lengths * 3 // 4
    ref, got = model(x, lengths), onnx_model(x, lengths)
    return max(float((_as_exported(n, ref[t][k]) - got[t][k]).abs().max()) for n, t, k in onnx_model.names)


@dataclass(frozen=True)
class EncoderInfo:
    """What Polyhead asks of an encoder: what to feed it and its output frame rate."""

    features: FeatureExtractor
    frames_per_second: float
    max_input_seconds: float | None = None

    @property
    def input_kind(self) -> str:
        return self.features.name


class OnnxModel:
    """An exported graph on onnxruntime, behind the part of MultiTaskModel's interface that
    inference uses (``config``, ``encoder``, ``tasks_with``, ``model(inputs, lengths, tasks)``),
    so ``Polyhead`` runs it unchanged. CTC "logits" are log-probabilities: the same softmax."""

    tasks_with = MultiTaskModel.tasks_with  # reads self.config only

    def __init__(self, folder: str | Path, info: dict | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("ONNX models need onnxruntime: pip install 'polyhead[deploy]'") from None
        folder = Path(folder)
        info = info or json.loads((folder / EXPORT_FILE).read_text())
        self.config = read_config_json(folder / CONFIG_FILE)
        # exports written before features had a spec name their kind only
        self.encoder = EncoderInfo(from_spec(info.get("features") or info["input_kind"]),
                                   float(info["frames_per_second"]), info.get("max_input_seconds"))
        self.names = output_names(self.config)
        self.per_frame = {k.name for k in task_kinds(self.config) if k.per_frame}
        opts = ort.SessionOptions()
        # Same thread budget as torch, so torch.set_num_threads governs both back ends.
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1

        def session(name: str):
            return ort.InferenceSession(str(folder / name), opts, providers=["CPUExecutionProvider"])

        self.session = session(ONNX_FILE)
        self.input_names = [i.name for i in self.session.get_inputs()]
        # decoder heads only: the other heads' outputs come whole from the encoder graph
        self.heads = {}
        if "decoder" in info:
            from ..model.multitask import num_classes
            from .onnx_decoder import OnnxDecoderHead

            task = info["decoder"]["task"]
            cfg = self.config.tasks[task]
            self.heads[task] = OnnxDecoderHead(
                tuple(session(f) for f in info["decoder"]["files"]),
                in_dim=info["decoder"]["in_dim"],
                num_classes=num_classes(self.config, task), dims=cfg.head.dims,
                **dict(cfg.head.options, pretrained=None,
                       whisper_config=getattr(self.config.encoder, "whisper_config", {}),
                       tokenizer=str(folder / TOKENIZER_DIR))).eval()

    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, inputs: torch.Tensor, lengths: torch.Tensor, tasks=None, return_states: bool = False):
        if return_states:
            raise ValueError("an ONNX export gives head outputs only, no encoder states "
                             "(layer probes need the PyTorch checkpoint)")
        feed = {self.input_names[0]: np.ascontiguousarray(inputs.numpy(), dtype=np.float32),
                self.input_names[1]: lengths.numpy().astype(np.int64)}
        values = self.session.run(None, feed)
        frames = torch.from_numpy(values[-1])
        wanted = set(tasks or self.config.tasks)
        out: dict[str, dict] = {}
        for (_, task, key), value in zip(self.names, values):
            if task not in wanted:
                continue
            out.setdefault(task, {})[key] = torch.from_numpy(value)
            if task in self.per_frame:
                out[task].update(lengths=frames, frames_per_second=self.encoder.frames_per_second)
        return out
