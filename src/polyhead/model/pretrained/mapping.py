"""CTranslate2 Whisper names -> transformers' ``WhisperForConditionalGeneration``: the
weights, the config, the generation config and the tokenizer."""

from __future__ import annotations

import re

import numpy as np

from ...audio import SAMPLE_RATE
from .ct2 import PretrainedError

# Scalars of the CT2 decoder whose value must be what Whisper uses: any other value means a
# different architecture, which the mapping below would convert silently wrong.
GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
EXPECTED_FLAGS = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                  "decoder/alibi": 0, "decoder/start_from_zero_embedding": 0}

# Whisper conventions
MULTILINGUAL_VOCAB = 51_865  # openai-whisper's rule: English-only models have one token fewer
CHUNK_SECONDS = 30  # the encoder takes exactly 30 s of features (3000 frames, 1500 positions)
MAX_INITIAL_TIMESTAMP_INDEX = 50  # openai-whisper's default (1 s), as in transformers' configs
SPECIAL_TOKENS = {
    "eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "translate": "<|translate|>",
    "transcribe": "<|transcribe|>", "startoflm": "<|startoflm|>", "startofprev": "<|startofprev|>",
    "nocaptions": "<|nocaptions|>", "notimestamps": "<|notimestamps|>",
}
LANGUAGE_TOKEN = re.compile(r"<\|[a-z]{2,3}\|>|<\|haw\|>")  # <|en|>, <|haw|>, <|yue|>


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


def build_tokenizer(folder: Path, vocabulary: list[str]):
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


def build_model(config, state_dict, generation_config):
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
