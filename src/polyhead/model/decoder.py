"""Whisper's pretrained decoder as the speech head, trained jointly with a CTC head.

    L = a * CTC + (1 - a) * attention        (joint CTC/attention, a = ``ctc_weight``)

The CTC branch (characters, on the same encoder states) regularises the encoder towards
monotonic alignments and gives word times; the decoder writes the transcript. Whisper's
task prompt comes first: ``<|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>``
(English-only models have no language or task token).

The decoder layers run one by one, as the encoder's do, because transformers'
``WhisperDecoder.forward`` has no mask for the encoder states: a batch of utterances of
different lengths would attend to each other's padding. Decoding is batched, with a
key/value cache (transformers' ``EncoderDecoderCache``): the searches (greedy, sampled,
beam, joint CTC/attention) are the ``decoding`` package's, over this head's cached steps.

Besides transcription the decoder can learn the tasks of ``decoder_tasks`` (intent and
slots, speaker turns, the language: ``decoder_tasks.py``), chosen by a task token in the
prompt; a batch may mix them, row by row (``TextTarget.tasks``). CTC learns the transcribe
rows only: the other tasks' targets are not the audio's characters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..runs import TOKENIZER_DIR
from .decoder_tasks import (INTENT_SEP, LANGUAGE, SLU, SPEAKER_TOKEN, SPEAKERS, TASK_TOKENS, TRANSCRIBE, TRANSLATE,
                            WHISPER_TASKS, decoder_tasks_of, speaker_token)
from .heads import HEADS, Head, HeadInput, pad_mask
from .pretrained import MULTILINGUAL_VOCAB
from .encoders.whisper import WHISPER_FRAMES_PER_SECOND

IGNORE = -100  # cross-entropy ignore index: prompt and padding positions
DEFAULT_MAX_NEW_TOKENS = 200
DEFAULT_CTC_WEIGHT = 0.3  # seed 000 section 15's joint CTC/attention weight
# The synthetic conversations have 2 to 4 speakers (data/synth/build.py); a training window
# with more is skipped.
MAX_SPEAKERS = 4
# New task tokens start as <|transcribe|> plus noise of this share of the table's spread:
# the noise only tells them apart (an unmeasured choice).
NEW_TOKEN_NOISE = 0.1


def text_to_target(text: str) -> str:
    """Whisper's tokens carry their leading space: the first word is " word"."""
    return " " + " ".join(text.split())


@HEADS.register("whisper_decoder")
class WhisperDecoderHead(Head):
    reads_encoder_source = True  # built from the same Whisper checkpoint as the encoder
    blank = True  # its CTC branch's classes

    def __init__(self, in_dim: int, num_classes: int, pretrained: str | None = None,
                 whisper_config: dict | None = None, tokenizer: str | None = None,
                 ctc_weight: float = DEFAULT_CTC_WEIGHT, language: str = "en", freeze: bool = False,
                 label_smoothing: float = 0.0, dropout: float = 0.1,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, beam_size: int = 1,
                 decoder_tasks: list[str] | None = None, max_speakers: int = MAX_SPEAKERS,
                 multilingual: bool | None = None, **common):
        super().__init__(in_dim, **common)
        from transformers import WhisperTokenizerFast
        from transformers.models.whisper.modeling_whisper import WhisperDecoder

        from .pretrained import load_whisper_weights, whisper_config as build_config, whisper_folder

        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"whisper_decoder: ctc_weight={ctc_weight} must be in [0, 1)")
        # The decoder was trained on the encoder's final layer norm output: no extra norm here.
        self.norm = nn.Identity()
        self.config = build_config(pretrained, whisper_config)
        self.decoder = WhisperDecoder(self.config)
        if pretrained:
            load_whisper_weights(self.decoder, pretrained, "decoder")
        if freeze:
            self.decoder.requires_grad_(False)
        source = tokenizer or (str(whisper_folder(pretrained)) if pretrained else None)
        if source is None:
            raise ValueError("whisper_decoder: needs a tokenizer folder or a pretrained model")
        self.tokenizer = WhisperTokenizerFast.from_pretrained(source, local_files_only=True)
        # the checkpoint's own Whisper config carries the list; a transformers folder may keep
        # it in its generation config only
        listed = [int(t) for t in getattr(self.config, "suppress_tokens", None) or []] or non_speech_tokens(Path(source))
        self.non_speech = [t for t in listed if t < self.config.vocab_size]
        self.ctc_weight, self.label_smoothing = ctc_weight, label_smoothing
        self.has_ctc = ctc_weight > 0  # a CTC head too: word times, blank decisions
        # beam_size: the configured default when the caller gives no DecodingOptions; decoding
        # choices travel in DecodingOptions, not by changing the head
        self.language, self.max_new_tokens, self.beam_size = language, max_new_tokens, beam_size
        self.ctc_norm = nn.LayerNorm(self.width)
        self.ctc_dropout = nn.Dropout(dropout)
        self.ctc = nn.Linear(self.width, num_classes)
        tok = self.tokenizer.convert_tokens_to_ids
        self.sot, self.eot = tok("<|startoftranscript|>"), tok("<|endoftext|>")
        self.no_timestamps = tok("<|notimestamps|>")
        # Whisper's English-only vocabularies hold the language tokens too: the table's size
        # tells the two apart (``multilingual`` overrides it, for small test models)
        self.multilingual = self.config.vocab_size >= MULTILINGUAL_VOCAB if multilingual is None else multilingual
        self.tasks = decoder_tasks_of({"decoder_tasks": decoder_tasks})
        if TRANSLATE in self.tasks and not self.multilingual:
            raise ValueError("whisper_decoder: an English-only model cannot learn to translate "
                             "(it has no language tokens); start from a multilingual one")
        self.max_speakers = max_speakers
        self._add_task_tokens()
        self.speaker_ids = [tok(speaker_token(i + 1)) for i in range(max_speakers)] if SPEAKERS in self.tasks else []

    # --- task tokens --------------------------------------------------------------------------

    def _add_task_tokens(self) -> None:
        """Tokens the configured tasks need and the tokenizer lacks, appended to the tokenizer
        and to the embedding table (tied: the output projection grows with it). A reloaded
        checkpoint's tokenizer has them already: the table grows to fit, and its saved rows
        replace the fresh ones."""
        wanted = [TASK_TOKENS[t] for t in self.tasks if t not in WHISPER_TASKS and t in TASK_TOKENS]
        if SPEAKERS in self.tasks:
            wanted += [speaker_token(i + 1) for i in range(self.max_speakers)]
        vocab = self.tokenizer.get_vocab()
        missing = [t for t in wanted if t not in vocab]
        embed = self.decoder.embed_tokens
        if missing and len(self.tokenizer) != embed.num_embeddings:
            raise ValueError(f"whisper_decoder: the tokenizer has {len(self.tokenizer)} tokens but the embedding "
                             f"table {embed.num_embeddings} rows; new tokens would reuse rows that mean something else")
        self.tokenizer.add_tokens(missing, special_tokens=True)
        n = len(self.tokenizer)
        if n <= embed.num_embeddings:
            return
        grown = nn.Embedding(n, embed.embedding_dim, padding_idx=embed.padding_idx)
        with torch.no_grad():
            grown.weight[: embed.num_embeddings] = embed.weight
            seed = embed.weight[self.tokenizer.convert_tokens_to_ids(TASK_TOKENS[TRANSCRIBE])]
            noise = torch.randn(n - embed.num_embeddings, embed.embedding_dim) * embed.weight.std() * NEW_TOKEN_NOISE
            grown.weight[embed.num_embeddings:] = seed + noise
        grown.weight.requires_grad_(embed.weight.requires_grad)
        self.decoder.embed_tokens = grown

    def _task_id(self, task: str) -> int:
        if task == TRANSLATE and not self.multilingual:
            raise ValueError("whisper_decoder: an English-only model cannot translate (it has no language tokens)")
        if task not in WHISPER_TASKS and task not in self.tasks:
            raise ValueError(f"whisper_decoder: not trained for the {task!r} task (decoder_tasks: {self.tasks})")
        return self.tokenizer.convert_tokens_to_ids(TASK_TOKENS[task])

    def language_id(self, language: str | None) -> int:
        if language is None:  # a multilingual model configured with no language of its own
            raise ValueError("whisper_decoder: no language given, and the model has none configured: "
                             "give one, or detect it first (detect_language)")
        lang_id = self.tokenizer.convert_tokens_to_ids(f"<|{language}|>")
        if lang_id is None or lang_id == self.tokenizer.unk_token_id:
            raise ValueError(f"whisper_decoder: no language token for {language!r}")
        return lang_id

    def language_ids(self) -> list[int]:
        """Whisper's language tokens: every token between <|startoftranscript|> and <|translate|>."""
        return list(range(self.sot + 1, self.tokenizer.convert_tokens_to_ids("<|translate|>")))

    # --- prompt and targets -------------------------------------------------------------------

    def prompt(self, language: str | None = None, task: str = TRANSCRIBE) -> list[int]:
        if task == LANGUAGE:  # the language token is the answer (pretrained Whisper's own skill)
            if not self.multilingual:
                raise ValueError("whisper_decoder: an English-only model has no language tokens")
            return [self.sot]
        ids = [self.sot]
        if not self.multilingual and language not in (None, "en"):
            raise ValueError(f"whisper_decoder: an English-only model cannot write {language!r}")
        if self.multilingual:
            ids += [self.language_id(language or self.language), self._task_id(task)]
        elif task != TRANSCRIBE:  # English-only Whisper has no task token for transcription
            ids.append(self._task_id(task))
        return ids + [self.no_timestamps]

    def _target_tokens(self, text: str, task: str) -> list[int]:
        if task != SPEAKERS:
            return self.tokenizer.encode(text_to_target(text), add_special_tokens=False)
        ids = []
        for i, piece in enumerate(SPEAKER_TOKEN.split(text)):
            if i % 2:  # a speaker number
                if int(piece) > self.max_speakers:
                    raise ValueError(f"whisper_decoder: {speaker_token(int(piece))} is beyond "
                                     f"max_speakers={self.max_speakers}")
                ids.append(self.tokenizer.convert_tokens_to_ids(speaker_token(int(piece))))
            elif piece.strip():
                ids += self.tokenizer.encode(text_to_target(piece), add_special_tokens=False)
        return ids

    def encode_texts(self, texts: list[str], device, tasks: list[str] | None = None,
                     languages: list[str | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt + target + <|endoftext|> per row -> (ids [B, L], labels [B, L]) with labels
        IGNORE on the prompt and the padding, so only the target and its end are learnt.
        ``tasks``: the decoder task of each row (default: all transcribe); a language row's
        text is its language code, and its one label the language token after <|sot|>.
        ``languages``: the language spoken in each row, for a multilingual model's prompt
        (default: the head's ``language``); an English-only model's prompt has none."""
        rows = []
        languages = languages if self.multilingual and languages else [None] * len(texts)
        for text, task, lang in zip(texts, tasks or [TRANSCRIBE] * len(texts), languages):
            prompt = self.prompt(lang, task=task)
            if task == LANGUAGE:
                rows.append((prompt, [self.language_id(text)]))
                continue
            limit = self.config.max_target_positions - len(prompt) - 1
            rows.append((prompt, self._target_tokens(text, task)[:limit] + [self.eot]))
        length = max(len(p) + len(t) for p, t in rows)
        ids = torch.full((len(rows), length), self.eot, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
        for i, (prompt, target) in enumerate(rows):
            seq = prompt + target
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(prompt): len(seq)] = torch.tensor(target)
        return ids.to(device), labels.to(device)

    # --- the network --------------------------------------------------------------------------

    def forward(self, inp: HeadInput) -> dict:
        x = self.prepare(inp.x)
        # explicit split (paper 1): the decoder's cross-attention needs its full width, so the
        # dimensions outside this head's slice reach it as zeros rather than being cut away
        memory = F.pad(x, (self.dims[0], inp.x.shape[-1] - self.dims[1])) if self.dims else x
        out = {"memory": memory, "lengths": inp.lengths, "frames_per_second": inp.frames_per_second}
        if self.ctc_weight > 0:
            out["logits"] = self.ctc(self.ctc_dropout(self.ctc_norm(x)))
        return out

    def logits(self, ids: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor,
               cache=None, offset: int = 0) -> torch.Tensor:
        """Next-token logits [B, L, vocab] for ``ids`` at positions offset..offset+L-1."""
        dec = self.decoder
        length = ids.shape[1]
        h = dec.embed_tokens(ids) + dec.embed_positions.weight[offset: offset + length].to(memory.dtype)
        h = F.dropout(h, p=dec.dropout, training=self.training)
        neg = torch.finfo(h.dtype).min
        causal = None
        if length > 1:  # a cached single step may see everything before it
            causal = torch.full((length, length), neg, dtype=h.dtype, device=h.device).triu(1)
            if offset:
                causal = torch.cat([torch.zeros(length, offset, dtype=h.dtype, device=h.device), causal], 1)
            causal = causal[None, None]
        cross = torch.zeros(memory.shape[:2], dtype=h.dtype, device=h.device)
        cross = cross.masked_fill(pad_mask(memory_lengths, memory.shape[1]), neg)[:, None, None, :]
        for layer in dec.layers:
            h = layer(h, attention_mask=causal, encoder_hidden_states=memory,
                      encoder_attention_mask=cross, cache=cache, use_cache=cache is not None)
        return dec.layer_norm(h) @ dec.embed_tokens.weight.T  # Whisper ties the output projection

    def steps(self, memory: torch.Tensor, lengths: torch.Tensor) -> "CachedSteps":
        """The decoder as a step function for decoding loops (an ONNX export swaps in its graphs)."""
        return CachedSteps(self, memory, lengths)

    def teacher_forced(self, out: dict, texts: list[str], tasks: list[str] | None = None,
                       languages: list[str | None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits [B, L, vocab] (fp32) of the decoder fed the target texts, and the
        labels [B, L] they predict (IGNORE on the prompt and the padding)."""
        memory = out["memory"]
        ids, labels = self.encode_texts(texts, memory.device, tasks, languages)
        # The teacher-forced decoder runs here, after the model's forward and so outside the
        # trainer's autocast: it follows the precision the encoder's output came in (bf16
        # memory: a bf16 decoder); what it returns is fp32 either way.
        with torch.autocast(memory.device.type, dtype=torch.bfloat16, enabled=memory.dtype == torch.bfloat16):
            logits = self.logits(ids[:, :-1], memory, out["lengths"])
        return logits.float(), labels[:, 1:]

    def attention_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                               label_smoothing=self.label_smoothing)

    def loss(self, out: dict, target) -> torch.Tensor:
        tasks = getattr(target, "tasks", None)
        attention = self.attention_loss(*self.teacher_forced(out, target.texts, tasks, getattr(target, "languages", None)))
        if self.ctc_weight == 0:
            return attention
        logp = out["logits"].float().log_softmax(-1).transpose(0, 1)
        ctc_ids, ctc_lengths, frames = target.ids, target.lengths, out["lengths"]
        if tasks is not None:
            rows = torch.tensor([t == TRANSCRIBE for t in tasks], device=logp.device)
            if not bool(rows.any()):
                return (1 - self.ctc_weight) * attention
            logp, ctc_ids, ctc_lengths, frames = logp[:, rows], ctc_ids[rows], ctc_lengths[rows], frames[rows]
        ctc = F.ctc_loss(logp, ctc_ids, frames, ctc_lengths, blank=0, zero_infinity=True)
        return self.ctc_weight * ctc + (1 - self.ctc_weight) * attention

    # --- decoding -----------------------------------------------------------------------------

    def _suppress(self, logits: torch.Tensor) -> torch.Tensor:
        """No special token but the end: timestamps and task tokens are not text. Nor the
        model's non-speech tokens (brackets, music signs: the "[BLANK_AUDIO]" and "(music)"
        captions of its subtitle training data), as Whisper and faster-whisper decode."""
        logits[..., self.eot + 1:] = -math.inf
        if self.non_speech:
            logits[..., self.non_speech] = -math.inf
        return logits

    def next_logp(self, logits: torch.Tensor, task: str = TRANSCRIBE) -> torch.Tensor:
        """Next-token log-probabilities: text and the end, and in the speakers task the
        speaker tokens too."""
        raw = logits.float()
        allowed = self._suppress(raw.clone())
        if task == SPEAKERS:
            allowed[..., self.speaker_ids] = raw[..., self.speaker_ids]
        return allowed.log_softmax(-1)

    @torch.no_grad()
    def detect_language(self, memory: torch.Tensor, lengths: torch.Tensor) -> list[dict]:
        """The language token the decoder writes after <|startoftranscript|>, per utterance:
        ``{"language": code, "probs": {code: p}}`` over Whisper's language tokens."""
        self.prompt(task=LANGUAGE)  # an English-only model raises here
        ids = torch.tensor([[self.sot]] * memory.shape[0], device=memory.device)
        lang_ids = self.language_ids()
        probs = self.steps(memory, lengths)(ids, 0)[:, lang_ids].float().softmax(-1)
        codes = [t[2:-2] for t in self.tokenizer.convert_ids_to_tokens(lang_ids)]
        return [{"language": codes[int(p.argmax())], "probs": dict(zip(codes, p.tolist()))} for p in probs]

    @torch.no_grad()
    def closed_slu(self, memory: torch.Tensor, lengths: torch.Tensor, intents: list[str],
                   language: str | None = None, frames_per_second: float = WHISPER_FRAMES_PER_SECOND) -> list[dict]:
        """``<|slu|>`` with the intent chosen from a closed set (the intents it was trained on):
        each intent's tokens are scored by the decoder, followed by the slot separator or the
        end, whichever it prefers; the best intent is forced and the slots are written after
        it. Free decoding may write an intent that does not exist, or a near miss of one.
        Returns ``{"text", "intent", "intent_logprob"}`` per utterance."""
        prompt = self.prompt(language, SLU)
        cands = [self.tokenizer.encode(text_to_target(i), add_special_tokens=False) for i in intents]
        sep = self.tokenizer.encode(" " + INTENT_SEP, add_special_tokens=False)
        b, k, longest = memory.shape[0], len(cands), max(len(c) for c in cands)
        ids = torch.full((k, longest), self.eot, dtype=torch.long, device=memory.device)
        for j, c in enumerate(cands):
            ids[j, :len(c)] = torch.tensor(c)
        scores = torch.zeros(b, k, device=memory.device)
        ends = torch.zeros(b, k, dtype=torch.bool, device=memory.device)  # the end beats the separator
        for i in range(b):  # one utterance's intents as the rows of one cached decoding (any back end)
            steps = self.steps(memory[i:i + 1].expand(k, -1, -1), lengths[i:i + 1].expand(k))
            logp = self.next_logp(steps(torch.tensor([prompt] * k, device=memory.device), 0), SLU)
            for t in range(longest + 1):
                for j, c in enumerate(cands):
                    if t < len(c):
                        scores[i, j] += logp[j, c[t]]
                    elif t == len(c):
                        stop, more = logp[j, self.eot], logp[j, sep[0]]
                        scores[i, j] += torch.logaddexp(stop, more)
                        ends[i, j] = stop > more
                if t < longest:
                    logp = self.next_logp(steps(ids[:, t:t + 1], len(prompt) + t), SLU)
        best = scores.argmax(-1).tolist()
        out: list[dict] = [{} for _ in range(b)]
        for j in sorted(set(best)):
            rows = [i for i in range(b) if best[i] == j]
            open_rows = [i for i in rows if not bool(ends[i, j])]
            for i in rows:
                out[i] = {"text": intents[j], "intent": intents[j], "intent_logprob": round(float(scores[i, j]), 4)}
            if open_rows:
                idx = torch.tensor(open_rows, device=memory.device)
                for i, r in zip(open_rows, self.generate(memory[idx], lengths[idx], language=language, task=SLU,
                                                         frames_per_second=frames_per_second, forced=cands[j] + sep)):
                    out[i]["text"] = f"{intents[j]} {INTENT_SEP} {r['text']}".strip()
        return out

    def generate(self, memory: torch.Tensor, lengths: torch.Tensor, language: str | None = None,
                 max_new_tokens: int | None = None, temperature: float = 0.0,
                 prompt_text: str | None = None, frames_per_second: float = WHISPER_FRAMES_PER_SECOND,
                 task: str = TRANSCRIBE, forced: list[int] | None = None, options=None) -> list[dict]:
        """Greedy (temperature 0) or sampled decoding of a batch (``decoding.search.greedy``).
        Returns per utterance ``{"text", "tokens", "avg_logprob"}``; ``prompt_text`` is
        Whisper's previous-text prompt (``<|startofprev|>`` text before the task prompt);
        ``task`` a decoder task that writes text (not ``language``: ``detect_language``);
        ``forced``: tokens every row's answer starts with (not in the returned text);
        ``options``: a whole ``DecodingOptions`` instead of language, max_new_tokens,
        prompt_text and task."""
        from ..decoding import DecodingOptions, greedy

        if options is None:
            options = DecodingOptions(language=language, prompt=prompt_text, task=task, sample_len=max_new_tokens)
        return greedy(self, memory, lengths, options, temperature, frames_per_second, forced)

    def prompt_ids(self, language: str | None = None, task: str = TRANSCRIBE,
                    prompt_text: str | None = None) -> list[int]:
        """The task prompt, after Whisper's previous-text prompt (``<|startofprev|>`` and the
        last half-context of ``prompt_text``'s tokens) when there is one."""
        return self._previous(prompt_text) + self.prompt(language, task)

    def _previous(self, prompt_text: str | None) -> list[int]:
        if not prompt_text:
            return []
        prev = self.tokenizer.encode(text_to_target(prompt_text), add_special_tokens=False)
        half = self.config.max_target_positions // 2
        return [self.tokenizer.convert_tokens_to_ids("<|startofprev|>")] + prev[-(half - 1):]

    @torch.no_grad()
    def no_speech_probs(self, memory: torch.Tensor, lengths: torch.Tensor,
                        prompt_text: str | None = None) -> list[float] | None:
        """Whisper's no-speech probability per utterance: the probability of its no-speech token
        (``<|nospeech|>``, ``<|nocaptions|>`` in older vocabularies) right after
        ``<|startoftranscript|>``, as Whisper reads it; None when the vocabulary has neither."""
        no_speech = next((i for i in map(self.tokenizer.convert_tokens_to_ids, ("<|nospeech|>", "<|nocaptions|>"))
                          if i is not None and i != self.tokenizer.unk_token_id), None)
        if no_speech is None:
            return None
        ids = torch.tensor([self._previous(prompt_text) + [self.sot]] * memory.shape[0], device=memory.device)
        return self.steps(memory, lengths)(ids, 0).float().softmax(-1)[:, no_speech].tolist()

    def beam_search(self, memory: torch.Tensor, length: torch.Tensor, beam_size: int = 4,
                    ctc_logits: torch.Tensor | None = None, vocab: list[str] | None = None,
                    language: str | None = None, max_new_tokens: int | None = None,
                    frames_per_second: float = WHISPER_FRAMES_PER_SECOND, prompt_text: str | None = None) -> dict:
        """Beam search for ONE utterance (memory [1, T, D]) with CTC rescoring of the finished
        hypotheses at ``ctc_weight`` (``decoding.search.beam_search``; joint CTC/attention
        search: ``DecodingOptions(ctc_mode="joint")``)."""
        from ..decoding import DecodingOptions, beam_search

        options = DecodingOptions(language=language, prompt=prompt_text, beam_size=beam_size, sample_len=max_new_tokens)
        return beam_search(self, memory, length, options, ctc_logits, vocab, frames_per_second)

    def transcribe(self, out: dict, vocab: list[str] | None = None, beam_size: int | None = None,
                   options=None) -> list[str]:
        """The transcripts of a forward output ``out`` with ``options`` (a ``DecodingOptions``;
        default greedy, or beam search with ``beam_size`` or the configured ``beam_size``),
        one temperature, no fallback (``decoding.decode_with_fallback`` adds it)."""
        from ..decoding import DecodingOptions, decode_batch

        if options is None:
            options = DecodingOptions(beam_size=beam_size or self.beam_size)
        return [r["text"] for r in decode_batch(self, out["memory"], out["lengths"], options,
                                                frames_per_second=out.get("frames_per_second", WHISPER_FRAMES_PER_SECOND),
                                                ctc_logits=out.get("logits"), vocab=vocab)]

    # --- assets -------------------------------------------------------------------------------

    def save_assets(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(str(Path(folder) / TOKENIZER_DIR))


def non_speech_tokens(folder: Path) -> list[int]:
    """The token ids a Whisper model never writes as speech, from a transformers folder's
    generation config (`suppress_tokens`, the list faster-whisper applies); none without one."""
    generation = folder / "generation_config.json"
    if generation.is_file():
        return [int(t) for t in json.loads(generation.read_text()).get("suppress_tokens") or []]
    return []


class CachedSteps:
    """The decoder run a few tokens at a time over fixed encoder states, with a key/value
    cache (transformers' ``EncoderDecoderCache``): ``steps(ids, offset)`` gives the logits
    [B, vocab] after ``ids`` [B, L] placed at positions offset..offset+L-1, and
    ``reorder(rows)`` keeps (and reorders) the batch rows a beam search goes on with."""

    def __init__(self, head: WhisperDecoderHead, memory: torch.Tensor, lengths: torch.Tensor):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        self.head, self.memory, self.lengths = head, memory, lengths
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def __call__(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        return self.head.logits(ids, self.memory, self.lengths, self.cache, offset)[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows)
        self.memory, self.lengths = self.memory[rows], self.lengths[rows]
