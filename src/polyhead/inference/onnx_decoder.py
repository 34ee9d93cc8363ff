"""Whisper's decoder as two ONNX graphs with a key/value cache, beside the encoder graph.

    decoder_cross.onnx  memory [B, T, D] -> cross_k, cross_v [N, B, H, T, d]
    decoder_step.onnx   ids [B, L], memory_lengths [B], past_k, past_v [N, B, H, P, d],
                        cross_k, cross_v -> logits [B, V] (after the last id),
                        present_k, present_v [N, B, H, P + L, d]

The cross-attention keys and values of the encoder states are computed once per utterance
(N layers, H heads of d dimensions); the step graph then reads the prompt (P = 0, an empty
cache) and every later token (L = 1) on the cache it returns. One step graph for both keeps
one copy of the decoder's weights (the vocabulary table is most of them). The graphs are
written here from the decoder's own weights (plain attention arithmetic) because
transformers' layers take a Python cache object that no exporter can trace.

On onnxruntime, ``OnnxDecoderHead`` is the PyTorch head with its network swapped for the
graphs: the tokenizer, prompts, greedy/sampled and beam decoding loops are the head's own
(``WhisperDecoderHead.steps``), its weights sit on the meta device and hold no memory.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.decoder import WhisperDecoderHead

CROSS_FILE, STEP_FILE = "decoder_cross.onnx", "decoder_step.onnx"
PAST_NAMES, PRESENT_NAMES = ("past_k", "past_v"), ("present_k", "present_v")  # ONNX names are unique
CROSS_NAMES = ("cross_k", "cross_v")
# Tracing shapes: none of them 1, so torch.export does not specialise a dynamic axis to it.
EXAMPLE_BATCH, EXAMPLE_PROMPT, EXAMPLE_PAST, EXAMPLE_FRAMES = 2, 3, 5, 60


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _attend(attn: nn.Module, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            mask: torch.Tensor | None) -> torch.Tensor:
    """One attention block of the decoder (``attn``: a transformers WhisperAttention) on
    keys/values already projected and split into heads."""
    q = _heads(attn.q_proj(q_in) * attn.scaling, attn.num_heads)
    scores = q @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores + mask
    out = scores.softmax(-1) @ v
    b, _, n, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class _DecoderGraph(nn.Module):
    def __init__(self, head: WhisperDecoderHead):
        super().__init__()
        self.decoder = head.decoder

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed_tokens(ids) + self.decoder.embed_positions.weight.index_select(0, positions)

    def _cross_mask(self, memory_lengths: torch.Tensor, frames: int, dtype) -> torch.Tensor:
        pad = torch.arange(frames, device=memory_lengths.device)[None, :] >= memory_lengths[:, None]
        return torch.where(pad, torch.finfo(dtype).min, 0.0).to(dtype)[:, None, None, :]

    def _layers(self, h, self_mask, cross_mask, self_kv, cross_kv):
        """Every layer on ``h``, given each layer's full self-attention keys/values (a function
        of the layer's normed input, which holds the new positions) and cross keys/values."""
        new_k, new_v = [], []
        for i, layer in enumerate(self.decoder.layers):
            x = layer.self_attn_layer_norm(h)
            k, v = self_kv(i, layer, x)
            new_k.append(k)
            new_v.append(v)
            h = h + _attend(layer.self_attn, x, k, v, self_mask)
            ck, cv = cross_kv(i, layer)
            h = h + _attend(layer.encoder_attn, layer.encoder_attn_layer_norm(h), ck, cv, cross_mask)
            h = h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))
        logits = self.decoder.layer_norm(h[:, -1]) @ self.decoder.embed_tokens.weight.T
        return logits, torch.stack(new_k), torch.stack(new_v)


class CrossKeys(nn.Module):
    """Encoder states -> every layer's cross-attention keys and values (once per utterance)."""

    def __init__(self, head: WhisperDecoderHead):
        super().__init__()
        self.decoder = head.decoder

    def forward(self, memory):
        heads = self.decoder.layers[0].encoder_attn.num_heads
        return (torch.stack([_heads(layer.encoder_attn.k_proj(memory), heads) for layer in self.decoder.layers]),
                torch.stack([_heads(layer.encoder_attn.v_proj(memory), heads) for layer in self.decoder.layers]))


class DecoderStep(_DecoderGraph):
    """L new tokens after P cached ones (P = 0 for the prompt): their positions are P..P+L-1,
    and token i sees the P cached positions and the new ones up to itself."""

    def forward(self, ids, memory_lengths, past_k, past_v, cross_k, cross_v):
        heads = self.decoder.layers[0].self_attn.num_heads
        length, past = ids.shape[1], past_k.shape[3]
        h = self._embed(ids, torch.arange(length, device=ids.device) + past)
        rows = torch.arange(length, device=ids.device)[:, None] + past
        later = torch.arange(past + length, device=ids.device)[None, :] > rows
        causal = torch.where(later, torch.finfo(h.dtype).min, 0.0).to(h.dtype)

        def self_kv(i, layer, x):
            return (torch.cat([past_k[i], _heads(layer.self_attn.k_proj(x), heads)], 2),
                    torch.cat([past_v[i], _heads(layer.self_attn.v_proj(x), heads)], 2))

        return self._layers(h, causal, self._cross_mask(memory_lengths, cross_k.shape[3], h.dtype),
                            self_kv, lambda i, layer: (cross_k[i], cross_v[i]))


def _examples(head: WhisperDecoderHead):
    gen = torch.Generator().manual_seed(0)
    cfg = head.config
    b, layers, heads = EXAMPLE_BATCH, cfg.decoder_layers, cfg.decoder_attention_heads
    d = cfg.d_model // heads
    memory = torch.randn(b, EXAMPLE_FRAMES, cfg.d_model, generator=gen)
    lengths = torch.tensor([EXAMPLE_FRAMES, EXAMPLE_FRAMES * 2 // 3])
    ids = torch.randint(0, head.eot, (b, EXAMPLE_PROMPT), generator=gen)
    past = [torch.randn(layers, b, heads, EXAMPLE_PAST, d, generator=gen) for _ in PAST_NAMES]
    cross = [torch.randn(layers, b, heads, EXAMPLE_FRAMES, d, generator=gen) for _ in CROSS_NAMES]
    return (memory,), (ids, lengths, *past, *cross)


def export_decoder(head: WhisperDecoderHead, folder: str | Path) -> list[str]:
    """Write the two decoder graphs into ``folder``; returns their file names."""
    head = head.eval()
    cross_example, step_example = _examples(head)
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=2)
    new, past = torch.export.Dim("new", min=1), torch.export.Dim("past", min=0)
    cache, cross = {1: batch, 3: past}, {1: batch, 3: time}
    graphs = [
        (CROSS_FILE, CrossKeys(head), cross_example, ["memory"], list(CROSS_NAMES), ({0: batch, 1: time},)),
        (STEP_FILE, DecoderStep(head), step_example, ["ids", "memory_lengths", *PAST_NAMES, *CROSS_NAMES],
         ["logits", *PRESENT_NAMES], ({0: batch, 1: new}, {0: batch}, cache, cache, cross, cross)),
    ]
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        for name, graph, example, inputs, outputs, shapes in graphs:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, example, str(Path(folder) / name), dynamo=True, verbose=False,
                                  input_names=inputs, output_names=outputs, dynamic_shapes=shapes,
                                  external_data=False)
    finally:
        onnx_log.setLevel(level)
    return [CROSS_FILE, STEP_FILE]


class OnnxSteps:
    """``CachedSteps`` on the graphs: the cache is the arrays they pass along."""

    def __init__(self, head: "OnnxDecoderHead", memory: torch.Tensor, lengths: torch.Tensor):
        self.head = head
        self.lengths = lengths.numpy().astype(np.int64)
        self.cross = head.cross.run(None, {"memory": np.ascontiguousarray(memory.float().numpy())})
        layers, b, heads, _, d = self.cross[0].shape
        self.cache = [np.zeros((layers, b, heads, 0, d), dtype=np.float32) for _ in PAST_NAMES]

    def __call__(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        if offset != self.cache[0].shape[3]:
            raise ValueError(f"decoder step at position {offset} after {self.cache[0].shape[3]} cached tokens")
        logits, *self.cache = self.head.step.run(None, {
            "ids": ids.numpy().astype(np.int64), "memory_lengths": self.lengths,
            **dict(zip(PAST_NAMES, self.cache)), **dict(zip(CROSS_NAMES, self.cross))})
        return torch.from_numpy(logits)

    def reorder(self, rows: torch.Tensor) -> None:
        idx = rows.numpy()
        self.lengths = self.lengths[idx]
        self.cache = [np.ascontiguousarray(a[:, idx]) for a in self.cache]
        self.cross = [np.ascontiguousarray(a[:, idx]) for a in self.cross]


class OnnxDecoderHead(WhisperDecoderHead):
    """The decoder head of an ONNX export: the PyTorch head's text side on the graphs."""

    def __init__(self, sessions: tuple, **options):
        with torch.device("meta"):  # the weights live in the graphs
            super().__init__(**options)
        self.cross, self.step = sessions

    def steps(self, memory: torch.Tensor, lengths: torch.Tensor) -> OnnxSteps:
        return OnnxSteps(self, memory, lengths)


@torch.no_grad()
def decoder_parity(head: WhisperDecoderHead, onnx_head: OnnxDecoderHead) -> dict:
    """Largest |ONNX - PyTorch| of the logits over a prompt step and four cached steps, and
    whether greedy and beam decoding write the same tokens, on random encoder states."""
    gen = torch.Generator().manual_seed(1)
    memory = torch.randn(2, 40, head.config.d_model, generator=gen)
    lengths = torch.tensor([40, 27])
    prompt = torch.tensor([head.prompt()] * 2)
    ref, got = head.steps(memory, lengths), onnx_head.steps(memory, lengths)
    diff = float((ref(prompt, 0) - got(prompt, 0)).abs().max())
    for step in range(4):
        ids = torch.tensor([[head.eot - 1 - step]] * 2)
        diff = max(diff, float((ref(ids, prompt.shape[1] + step) - got(ids, prompt.shape[1] + step)).abs().max()))
    want = [r["tokens"] for r in head.generate(memory, lengths, max_new_tokens=8)]
    have = [r["tokens"] for r in onnx_head.generate(memory, lengths, max_new_tokens=8)]
    beams = [h.beam_search(memory[:1], lengths[:1], beam_size=3, max_new_tokens=8)["tokens"] for h in (head, onnx_head)]
    return {"decoder_max_abs_diff": diff, "decoder_greedy_equal": want == have, "decoder_beam_equal": beams[0] == beams[1]}

