"""Whisper's temperature fallback and no-speech rule around one decoding (``search``).

Each row is decoded at the first temperature; the rows whose text loops (compresses too
well) or whose decoder is unsure (low average log-probability) are decoded again, together,
at the next temperature, and so on; a row that looks like silence (high no-speech
probability while the decoder is unsure) gets no transcript.
"""

from __future__ import annotations

import zlib
from dataclasses import replace

import torch

from ..model.decoder_tasks import WHISPER_TASKS
from ..text import normalize_text
from .options import GREEDY, DecodingOptions
from .search import DEFAULT_FRAMES_PER_SECOND, decode_batch


def compression_ratio(text: str) -> float:
    """Whisper's loop detector: how well the text compresses (a decoder repeating itself
    writes text that compresses far better than language does)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


LOOP_REPEATS = 4  # the same one to LOOP_MAX_WORDS words this many times in a row: a stuck decoder
LOOP_MAX_WORDS = 4


def repeated_run(text: str) -> tuple[int, int, int] | None:
    """(first word, words per repeat, repeats) of the first run of one to LOOP_MAX_WORDS words
    said LOOP_REPEATS or more times in a row, compared on their scoring form; None if none.
    Catches the short loops that compression ratio misses on a short segment ("the nervous
    hotel hotel hotel hotel ..." compresses little worse than language)."""
    words = [normalize_text(w) for w in text.split()]
    for n in range(1, LOOP_MAX_WORDS + 1):
        for i in range(len(words) - n * LOOP_REPEATS + 1):
            gram, count = words[i:i + n], 1
            if not any(gram):
                continue
            while words[i + count * n:i + (count + 1) * n] == gram:
                count += 1
            if count >= LOOP_REPEATS:
                return i, n, count
    return None


def cut_loops(text: str) -> str:
    """``text`` with every repeated run (``repeated_run``) said once."""
    words = text.split()
    while (run := repeated_run(" ".join(words))) is not None:
        i, n, count = run
        words = words[:i + n] + words[i + n * count:]
    return " ".join(words)


def needs_fallback(result: dict, no_speech: float | None, options: DecodingOptions) -> bool:
    """Whisper's rule for decoding a segment again at the next temperature: its text loops
    (compression ratio above the threshold) or the decoder is unsure (average log-probability
    below the threshold), unless the segment is silence (no-speech probability above the
    threshold while the decoder is unsure)."""
    d = options
    unsure = d.logprob_threshold is not None and result["avg_logprob"] < d.logprob_threshold
    loops = (d.compression_ratio_threshold is not None and result["compression_ratio"] > d.compression_ratio_threshold
             ) or repeated_run(result["text"]) is not None
    silence = d.no_speech_threshold is not None and no_speech is not None and no_speech > d.no_speech_threshold
    return (loops or unsure) and not (silence and unsure)


def is_silence(result: dict, no_speech: float | None, options: DecodingOptions) -> bool:
    """Whisper's rule for skipping a segment: no-speech probability above the threshold,
    unless the decoder's average log-probability is above its threshold."""
    d = options
    if d.no_speech_threshold is None or no_speech is None or no_speech <= d.no_speech_threshold:
        return False
    return d.logprob_threshold is None or result["avg_logprob"] <= d.logprob_threshold


def decode_with_fallback(head, memory: torch.Tensor, lengths: torch.Tensor, options: DecodingOptions = GREEDY, *,
                         frames_per_second: float = DEFAULT_FRAMES_PER_SECOND,
                         no_speech: list[float | None] | None = None, ctc_logits: torch.Tensor | None = None,
                         vocab: list[str] | None = None, task: str | None = None) -> list[dict]:
    """A decoder head's transcripts of a batch, Whisper's way: every row decoded at the first
    temperature, the rows that ``needs_fallback`` again at the next, together, and so on;
    each row keeps the first result that passes, else its last.
    ``no_speech``: each row's no-speech probability where the caller has one (the VAD head's);
    else the decoder's own (``no_speech_probs``), as Whisper's. ``task``: overrides
    ``options.task``. Per row: ``text``, ``tokens``, ``avg_logprob``, ``temperature``,
    ``compression_ratio``, ``no_speech_prob`` (None where not known) and ``silence`` (the
    text then empty); ``language`` where a multilingual decoder without a language detected
    it. ``ctc_logits`` [B, T, V] and ``vocab``: the CTC branch of a beam search."""
    if task is not None and task != options.task:
        options = replace(options, task=task)
    b = memory.shape[0]
    language = options.language or getattr(head, "language", None)
    if language is None and getattr(head, "multilingual", False) and options.task in WHISPER_TASKS:
        # plain multilingual Whisper with no language asked for: detected per row, as Whisper does
        detected = [r["language"] for r in head.detect_language(memory, lengths)]
        results: list[dict] = [{} for _ in range(b)]
        for code in dict.fromkeys(detected):
            rows = [i for i in range(b) if detected[i] == code]
            idx = torch.tensor(rows)
            sub = decode_with_fallback(head, memory[idx], lengths[idx], replace(options, language=code),
                                       frames_per_second=frames_per_second, vocab=vocab,
                                       no_speech=None if no_speech is None else [no_speech[i] for i in rows],
                                       ctc_logits=None if ctc_logits is None else ctc_logits[idx])
            for i, r in zip(rows, sub):
                results[i] = dict(r, language=code)
        return results
    if no_speech is None:  # Whisper's own: its no-speech token after <|startoftranscript|>
        no_speech = [None if p is None else round(p, 4)
                     for p in head.no_speech_probs(memory, lengths, prompt_text=options.prompt) or [None] * b]
    options = replace(options, language=language)
    results = [{} for _ in range(b)]
    pending = list(range(b))
    temperatures = options.temperatures
    for k, t in enumerate(temperatures):
        idx = torch.tensor(pending)
        attempt = decode_batch(head, memory[idx], lengths[idx], options, temperature=t,
                               frames_per_second=frames_per_second,
                               ctc_logits=None if ctc_logits is None else ctc_logits[idx], vocab=vocab)
        for i, r in zip(pending, attempt):
            results[i] = dict(r, temperature=t, compression_ratio=round(compression_ratio(r["text"]), 4))
        if k + 1 == len(temperatures):
            break
        pending = [i for i in pending if needs_fallback(results[i], no_speech[i], options)]
        if not pending:
            break
    for i, r in enumerate(results):
        r["no_speech_prob"] = no_speech[i]
        r["silence"] = is_silence(r, no_speech[i], options)
        if r["silence"]:
            r["text"], r["tokens"] = "", []
        elif repeated_run(r["text"]) is not None:  # still looping at the last temperature
            r["text"] = cut_loops(r["text"])
            r["loop_cut"] = True
            if getattr(head, "tokenizer", None) is not None:  # the tokens spell the text that is kept
                r["tokens"] = head.tokenizer(" " + r["text"].strip(), add_special_tokens=False).input_ids
    return results
