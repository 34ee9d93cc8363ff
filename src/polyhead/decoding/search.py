"""Greedy, sampled and beam decoding of a Whisper decoder head, built from ``scorers``.

``decode_batch`` is the entry point: greedy or sampled decoding batched over the rows, or
at temperature 0 with ``beam_size`` > 1 a beam search per utterance (its beams the batch of
the key/value cache). The CTC branch joins a beam search in one of two ways
(``DecodingOptions.ctc_mode``):

- ``rescore``: an attention-only search, then the finished hypothesis with the best
  (1 - a) log p_att + a log p_ctc(whole sequence);
- ``joint``: every step, each live beam's top attention candidates are scored
  (1 - a) log p_att(prefix) + a log p_ctc(prefix), the CTC prefix probability, and the
  beam keeps the best of them (partial scoring: CTC only sees the candidates attention
  proposes). CTC's monotonic alignment then steers the search itself, away from the
  dropped and repeated words attention alone lets through, instead of only choosing among
  what attention found. With a = 0 it is the attention-only search, hypothesis for hypothesis.

Every result: ``{"text", "tokens", "avg_logprob"}``, the average the attention decoder's
own log-probability per token (the end token included), whatever ranked the hypotheses.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..model.decoder_tasks import LANGUAGE, TRANSCRIBE, WHISPER_TASKS
from .options import CTC_JOINT, GREEDY, MAX_TOKENS_PER_SECOND, MIN_TOKEN_ALLOWANCE, DecodingOptions
from .scorers import (AttentionScorer, CTCPrefixScorer, TokenFilters, char_ids, ctc_sequence_logp,
                      length_normalised)

# Each live beam offers this many times beam_size attention candidates to the joint score:
# the flat top 2 * beam_size that an attention-only step keeps are always among them, which is
# what makes the joint search with weight 0 the attention-only one exactly.
PRE_BEAM_FACTOR = 2
DEFAULT_FRAMES_PER_SECOND = 50.0  # Whisper's encoder


def token_allowance(lengths: torch.Tensor, frames_per_second: float) -> torch.Tensor:
    """The most tokens each row may write: no speech runs faster than MAX_TOKENS_PER_SECOND,
    so a longer transcript is a decoder stuck in a loop."""
    return (lengths.float() / frames_per_second * MAX_TOKENS_PER_SECOND).ceil() + MIN_TOKEN_ALLOWANCE


def result(head, tokens: list[int], logp_sum: float, scored: int | None = None) -> dict:
    """A row's answer from its tokens (cut at the end token); ``scored``: how many tokens
    ``logp_sum`` covers (default: up to and including the end token)."""
    n = tokens.index(head.eot) + 1 if head.eot in tokens else len(tokens)
    text = [t for t in tokens[:n] if t != head.eot]
    return {"text": head.tokenizer.decode(text).strip(), "tokens": text,
            "avg_logprob": round(logp_sum / max(scored if scored is not None else n, 1), 4)}


def ctc_weight_of(head, options: DecodingOptions, ctc_logits, vocab) -> float:
    """The CTC weight this decoding uses: the options', else the head's trained one; 0
    without CTC logits or a character vocabulary, where only an explicit weight complains."""
    weight = head.ctc_weight if options.ctc_weight is None else options.ctc_weight
    if weight > 0 and (ctc_logits is None or not vocab):
        if options.ctc_weight is not None:
            raise ValueError(f"ctc_weight={options.ctc_weight}: this decoder has no CTC branch "
                             "(or no character vocabulary) to score with")
        return 0.0
    return weight


def blank_ids(head) -> list[int]:
    """The tokens Whisper's ``suppress_blank`` keeps from starting a transcript: the space."""
    return head.tokenizer.encode(" ", add_special_tokens=False)


def sample_limit(head, options: DecodingOptions, prompt: list[int]) -> int:
    return min(options.sample_len or head.max_new_tokens, head.config.max_target_positions - len(prompt))


@torch.no_grad()
def greedy(head, memory: torch.Tensor, lengths: torch.Tensor, options: DecodingOptions = GREEDY,
           temperature: float = 0.0, frames_per_second: float = DEFAULT_FRAMES_PER_SECOND,
           forced: list[int] | None = None) -> list[dict]:
    """Greedy (temperature 0) or sampled decoding of a batch; ``best_of`` samples per row at
    temperature > 0, the best by ``length_penalty``'s rank kept. ``forced``: tokens every
    row's answer starts with (in the prompt, not in the returned text)."""
    if options.task == LANGUAGE:
        raise ValueError("whisper_decoder: the language task is answered by detect_language")
    copies = (options.best_of or 1) if temperature > 0 else 1
    if copies > 1:
        rows = torch.arange(memory.shape[0]).repeat_interleave(copies)
        drawn = greedy(head, memory[rows], lengths[rows], replace(options, best_of=None), temperature,
                       frames_per_second, forced)
        picked = []
        for i in range(memory.shape[0]):
            mine = drawn[i * copies:(i + 1) * copies]
            picked.append(max(mine, key=lambda r: length_normalised(
                r["avg_logprob"] * (len(r["tokens"]) + 1), len(r["tokens"]), options.length_penalty)))
        return picked
    b, device = memory.shape[0], memory.device
    prompt = head.prompt_ids(options.language, options.task, options.prompt) + list(forced or [])
    limit = sample_limit(head, options, prompt)
    attention = AttentionScorer(head, memory, lengths, options.task)
    filters = TokenFilters(options, blank_ids(head), head.eot)
    logp = attention.start(prompt, b)
    tokens = torch.zeros(b, 0, dtype=torch.long, device=device)
    logp_sum = torch.zeros(b, device=device)
    counted = torch.zeros(b, device=device)  # tokens each row chose itself (not the padding)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    allowance = token_allowance(lengths, frames_per_second)
    for step in range(limit):
        logp = filters(logp, tokens.tolist())
        if temperature > 0:
            nxt = torch.multinomial((logp / temperature).softmax(-1), 1)[:, 0]
        else:
            nxt = logp.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, head.eot), nxt)
        logp_sum += torch.where(done, 0.0, logp.gather(1, nxt[:, None])[:, 0])
        counted += (~done).float()
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        done |= (nxt == head.eot) | (step + 1 >= allowance)
        if bool(done.all()):
            break
        logp = attention.advance(nxt, len(prompt) + step)
    # a row's score is its own: neither the end tokens padding it after it stopped nor
    # the other rows of the batch change it
    return [result(head, row, float(s), int(n)) for row, s, n in zip(tokens.tolist(), logp_sum, counted)]


class Hypothesis:
    """A live or finished beam: its tokens, summed attention log-probability, CTC prefix
    state (joint search), the attention log-probability of its tokens that added no CTC
    character (``credit``) and the score the search ranks it by."""

    __slots__ = ("tokens", "attention", "ctc", "credit", "score")

    def __init__(self, tokens, attention, ctc, score, credit=0.0):
        self.tokens, self.attention, self.ctc, self.score, self.credit = tokens, attention, ctc, score, credit


@torch.no_grad()
def beam_search(head, memory: torch.Tensor, length: torch.Tensor, options: DecodingOptions,
                ctc_logits: torch.Tensor | None = None, vocab: list[str] | None = None,
                frames_per_second: float = DEFAULT_FRAMES_PER_SECOND) -> dict:
    """Beam search for ONE utterance (memory [1, T, D], ``ctc_logits`` [T, V] its CTC
    logits) with ``options.beam_size`` beams, CTC rescoring or joint CTC/attention scoring
    as ``options.ctc_mode`` says (module docstring)."""
    beam = options.beams
    if options.task != TRANSCRIBE:  # CTC spells the speech itself: no score for a translation
        ctc_logits = None
    weight = ctc_weight_of(head, options, ctc_logits, vocab)
    joint = options.ctc_mode == CTC_JOINT
    prompt = head.prompt_ids(options.language, options.task, options.prompt)
    limit = sample_limit(head, options, prompt)
    allowance = int(math.ceil(float(length[0]) / frames_per_second * MAX_TOKENS_PER_SECOND)) + MIN_TOKEN_ALLOWANCE
    attention = AttentionScorer(head, memory.expand(beam, -1, -1), length.expand(beam), options.task)
    filters = TokenFilters(options, blank_ids(head), head.eot)
    ctc = CTCPrefixScorer(ctc_logits, vocab, head.tokenizer) if weight > 0 and joint else None
    logp = attention.start(prompt, beam)
    live = [Hypothesis([], 0.0, ctc.initial if ctc else None, 0.0)]  # one beam to start: the others would repeat it
    finished: list[Hypothesis] = []
    enough = None if options.patience is None else round(beam * options.patience)
    for step in range(min(limit, allowance)):
        logp = filters(logp[:len(live)], [h.tokens for h in live])
        ranked = ranked_extensions(head, live, logp, beam, joint, weight, ctc)
        survivors = []
        for rank, (k, tok, att, state, credit, score) in enumerate(ranked[:2 * beam]):
            if tok == head.eot:
                if rank < beam:  # an end the beam would have kept
                    finished.append(Hypothesis(live[k].tokens, att, state, score, credit))
            elif len(survivors) < beam:
                survivors.append((k, Hypothesis(live[k].tokens + [tok], att, state, score, credit)))
        if not survivors:
            break
        if enough is not None:  # Whisper's patience: enough ended hypotheses
            if len(finished) >= enough:
                break
        elif finished and max(f.score for f in finished) > survivors[0][1].score:
            break  # scores only fall: the best ended hypothesis beats every live one
        # fewer live beams than slots: the batch shrinks with them
        attention.reorder(torch.tensor([k for k, _ in survivors], device=memory.device))
        live = [h for _, h in survivors]
        logp = attention.advance(torch.tensor([h.tokens[-1] for h in live], device=memory.device),
                                 len(prompt) + step)
    if not finished:  # stopped by the allowance: take the live beams as they are
        finished = live
    if weight > 0 and not joint:  # rescoring: the whole sequences' CTC probabilities
        for h in finished:
            h.score = rescored(head, h.tokens, h.attention, ctc_logits, vocab, weight)
    best = max(finished, key=lambda h: length_normalised(h.score, len(h.tokens), options.length_penalty))
    return result(head, best.tokens + [head.eot], best.attention)


def rescored(head, tokens: list[int], attention: float, ctc_logits: torch.Tensor | None,
             vocab: list[str] | None, weight: float) -> float:
    """A finished hypothesis' joint score (1 - a) log p_att + a log p_ctc, log p_ctc the CTC
    branch's likelihood of its normalised characters (``ctc_logits`` [T, V]); the attention
    score alone without CTC logits, a vocabulary or a weight."""
    if ctc_logits is None or not vocab or weight == 0:
        return attention
    index = {ch: i + 1 for i, ch in enumerate(vocab)}
    chars = list(char_ids(head.tokenizer.decode(tokens), index))
    return (1 - weight) * attention + weight * ctc_sequence_logp(ctc_logits.float().log_softmax(-1), chars)


def ranked_extensions(head, live: list[Hypothesis], logp: torch.Tensor, beam: int, joint: bool, weight: float,
                ctc: CTCPrefixScorer | None) -> list[tuple]:
    """Every step's extensions, best first: (beam index, token, summed attention
    log-probability, CTC state, credit, score).

    A token that adds no CTC character (a space, punctuation) leaves the CTC prefix
    probability as it was: CTC has no say on it, so its attention log-probability stands in
    for CTC's too (the credit), or the joint score would favour such tokens more the higher
    the CTC weight, up to a search that writes spaces until the allowance."""
    attention_sums = torch.tensor([h.attention for h in live], device=logp.device)
    total = attention_sums[:, None] + logp
    if not joint:  # the flat top over every beam's every token, ranked by attention alone
        top = total.view(-1).topk(min(2 * beam, total.numel()))
        out = []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            k, tok = divmod(flat, logp.shape[1])
            out.append((k, tok, score, None, 0.0, score))
        return out
    top = total.topk(min(PRE_BEAM_FACTOR * beam, logp.shape[1]), dim=-1)
    cands = [(k, tok, att) for k in range(len(live))
             for tok, att in zip(top.indices[k].tolist(), top.values[k].tolist())]
    if ctc is None:  # weight 0: the attention scores as they are
        scored = [(k, tok, att, None, 0.0, att) for k, tok, att in cands]
    else:
        grow = [i for i, (_, tok, _) in enumerate(cands) if tok != head.eot]
        states = ctc.advance([live[cands[i][0]].ctc for i in grow],
                             [ctc.chars_of(live[cands[i][0]].tokens + [cands[i][1]]) for i in grow])
        new_state = dict(zip(grow, states))
        scored = []
        for i, (k, tok, att) in enumerate(cands):
            # the end: the prefix as the whole sequence; a token: the longer prefix
            parent = live[k]
            state = new_state.get(i, parent.ctc)
            credit = parent.credit
            if tok != head.eot and state.chars == parent.ctc.chars:
                credit += att - parent.attention
            prefix = (ctc.final(state) if tok == head.eot else state.score) + credit
            scored.append((k, tok, att, state, credit, (1 - weight) * att + weight * prefix))
    return sorted(scored, key=lambda c: -c[5])


def decode_batch(head, memory: torch.Tensor, lengths: torch.Tensor, options: DecodingOptions = GREEDY, *,
                 temperature: float | None = None, frames_per_second: float = DEFAULT_FRAMES_PER_SECOND,
                 ctc_logits: torch.Tensor | None = None, vocab: list[str] | None = None) -> list[dict]:
    """One decoding of every row at one temperature (default the options' first): beam search
    at 0 with ``beam_size`` > 1 for transcripts (one row at a time, on its own frames, with
    its CTC logits ``ctc_logits`` [B, T, V]), else greedy or sampled, batched."""
    temperature = options.temperatures[0] if temperature is None else temperature
    if temperature == 0 and options.beams > 1 and options.task in WHISPER_TASKS:
        out = []
        for i in range(memory.shape[0]):
            n = int(lengths[i])
            ctc = ctc_logits[i, :n] if ctc_logits is not None else None
            out.append(beam_search(head, memory[i:i + 1, :n], lengths[i:i + 1], options, ctc, vocab,
                                   frames_per_second))
        return out
    # through the head's own entry point, the one seam of greedy decoding that wrappers replace
    return head.generate(memory, lengths, language=options.language, max_new_tokens=options.sample_len,
                         temperature=temperature, prompt_text=options.prompt, frames_per_second=frames_per_second,
                         task=options.task, options=options)
