"""The CTranslate2 (faster-whisper) Whisper format, read and written without ctranslate2:
``model.bin`` (a flat binary, so no pickle is needed), its vocabulary and folder layout.
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np

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


class PretrainedError(ValueError):
    """A model folder, file or download that cannot be used; the message names it and says why.

    A ValueError, so the command line prints it as one line instead of a traceback."""


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



def read_vocabulary(folder: Path) -> list[str]:
    """The CT2 vocabulary, one token per id: vocabulary.json (a list) or vocabulary.txt."""
    if (folder / "vocabulary.json").is_file():
        return json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    lines = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines  # split on \n only: a token may hold \r


def is_ct2_folder(folder: Path) -> bool:
    return (Path(folder) / "model.bin").is_file()


def check_ct2_folder(folder: Path) -> None:
    missing = [f for f in CT2_FILES if not (folder / f).is_file()]
    if not any((folder / v).is_file() for v in CT2_VOCABULARIES):
        missing.append(" or ".join(CT2_VOCABULARIES))
    if missing:
        raise PretrainedError(f"{folder}: not a CTranslate2 Whisper folder: missing {', '.join(missing)} "
                              f"(expected {', '.join(CT2_FILES)} and {' or '.join(CT2_VOCABULARIES)})")
