"""What a search adds up, hypothesis by hypothesis: the attention decoder's next-token
log-probabilities, the CTC branch's prefix probability, and the penalties that curb loops.

The CTC branch spells normalised characters (``text.normalize_text``) while Whisper writes
BPE pieces in written form, so a token extends the CTC prefix by the characters it adds to
the hypothesis' normalised text: often several, sometimes none (punctuation, a space that
normalisation strips), and now and then normalisation rewrites earlier characters (a stray
apostrophe that a later letter makes part of a word); the prefix is then recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..text import normalize_text

NEG_INF = -math.inf
# CTC log-probabilities are floored so that cumulative sums stay finite: exp(-1e4) is zero
# at any precision, and finite values keep the closed-form recursions below free of inf - inf.
CTC_LOG_FLOOR = -1e4


class AttentionScorer:
    """The decoder's next-token log-probabilities for a batch of hypotheses, run
    incrementally on the head's key/value cache (``head.steps``)."""

    def __init__(self, head, memory: torch.Tensor, lengths: torch.Tensor, task: str):
        self.head, self.task, self.device = head, task, memory.device
        self.steps = head.steps(memory, lengths)

    def start(self, prompt: list[int], rows: int) -> torch.Tensor:
        """Log-probabilities [rows, vocab] of the first token after ``prompt``."""
        return self.head.next_logp(self.steps(torch.tensor([prompt] * rows, device=self.device), 0), self.task)

    def advance(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        """Log-probabilities [rows, vocab] after each row's next token ``tokens`` [rows],
        written at position ``offset``."""
        return self.head.next_logp(self.steps(tokens[:, None], offset), self.task)

    def reorder(self, rows: torch.Tensor) -> None:
        self.steps.reorder(rows)


def ctc_sequence_logp(ctc_logp: torch.Tensor, chars: list[int]) -> float:
    """log p_ctc(chars | frames) of a whole sequence (``ctc_logp`` [T, V] log-probabilities,
    blank 0): the forward algorithm, as the CTC loss computes it."""
    return float(-F.ctc_loss(ctc_logp.float()[:, None], torch.tensor([chars or [0]]), torch.tensor([len(ctc_logp)]),
                             torch.tensor([len(chars)]), blank=0, reduction="sum", zero_infinity=False))


def char_ids(text: str, index: dict[str, int]) -> tuple[int, ...]:
    """The CTC ids of ``text``'s normalised characters (characters outside the vocabulary dropped)."""
    return tuple(index[c] for c in normalize_text(text) if c in index)


@dataclass(frozen=True)
class CTCState:
    """A hypothesis' CTC prefix: its characters, the log-probabilities of the prefix having
    been emitted by frame t and ending in a character (``r_char`` [T]) or in a blank
    (``r_blank`` [T]), and the prefix probability log p(prefix... | frames) (``score``)."""

    chars: tuple[int, ...]
    r_char: torch.Tensor
    r_blank: torch.Tensor
    score: float


class CTCPrefixScorer:
    """The CTC prefix probability of one utterance's hypotheses, in log space, extended a
    character at a time (batched across hypotheses). Each extension is a linear recursion over
    the frames; it is solved for all frames at once with cumulative sums and
    ``logcumsumexp`` instead of a Python loop over T."""

    def __init__(self, ctc_logits: torch.Tensor, vocab: list[str], tokenizer):
        self.logp = ctc_logits.double().log_softmax(-1).clamp_min(CTC_LOG_FLOOR)  # [T, V]
        self.index = {ch: i + 1 for i, ch in enumerate(vocab)}
        self.tokenizer = tokenizer
        blank = self.logp[:, 0]
        self.blank_cum = blank.cumsum(0)
        self.blank_before = self.blank_cum - blank  # exclusive cumulative sum
        none = torch.full_like(blank, NEG_INF)
        self.initial = CTCState((), none, self.blank_cum, 0.0)

    def chars_of(self, tokens: list[int]) -> tuple[int, ...]:
        return char_ids(self.tokenizer.decode(tokens), self.index)

    def final(self, state: CTCState) -> float:
        """log p_ctc of the prefix as the whole sequence (every frame spent)."""
        return float(torch.logaddexp(state.r_char[-1], state.r_blank[-1]))

    def extend(self, states: list[CTCState], chars: list[int]) -> list[CTCState]:
        """Each state extended by one character."""
        r_char = torch.stack([s.r_char for s in states])  # [N, T]
        r_blank = torch.stack([s.r_blank for s in states])
        c = torch.tensor(chars)
        last = torch.tensor([s.chars[-1] if s.chars else -1 for s in states])
        empty = torch.tensor([not s.chars for s in states])
        x = self.logp[:, c].T  # [N, T]
        # a repeated character needs a blank between: only the blank-ending paths go on
        before = torch.where((c == last)[:, None], r_blank, torch.logaddexp(r_blank, r_char))
        start = torch.where(empty, 0.0, NEG_INF).to(x.dtype)[:, None]  # the empty prefix may start at frame 0
        into = torch.cat([start, before[:, :-1]], 1)  # paths that may emit the character at frame t
        # r_char[t] = logaddexp(r_char[t-1], into[t]) + x[t], solved in closed form
        cum = x.cumsum(1)
        new_char = cum + torch.logcumsumexp(into - (cum - x), 1)
        # r_blank[t] = logaddexp(r_blank[t-1], r_char[t-1]) + blank[t]
        char_before = torch.cat([torch.full_like(start, NEG_INF), new_char[:, :-1]], 1)
        new_blank = self.blank_cum + torch.logcumsumexp(char_before - self.blank_before, 1)
        scores = torch.logsumexp(into + x, 1).tolist()
        return [CTCState(s.chars + (ch,), rc, rb, sc)
                for s, ch, rc, rb, sc in zip(states, chars, new_char, new_blank, scores)]

    def advance(self, states: list[CTCState], targets: list[tuple[int, ...]]) -> list[CTCState]:
        """Each state moved to the prefix ``targets[i]``: extended by the characters it lacks,
        or, where normalisation rewrote its characters, recomputed from the start. The
        extensions of all states run together, a character position at a time."""
        out = list(states)
        todo = {}
        for i, (s, t) in enumerate(zip(states, targets)):
            if t == s.chars:
                continue
            if t[:len(s.chars)] != s.chars:
                out[i] = self.initial
            todo[i] = t
        while todo:
            rows = list(todo)
            extended = self.extend([out[i] for i in rows], [todo[i][len(out[i].chars)] for i in rows])
            for i, s in zip(rows, extended):
                out[i] = s
                if len(s.chars) == len(todo[i]):
                    del todo[i]
        return out


class TokenFilters:
    """Changes to the next-token log-probabilities that depend on what each row has written:
    the suppressed tokens, Whisper's blank suppression at the first step, a repetition
    penalty and a ban on repeated n-grams. Inactive with the default options."""

    def __init__(self, options, blank_ids: list[int], eot: int):
        self.suppress = list(options.suppress_tokens)
        self.blank = list(blank_ids) + [eot] if options.suppress_blank else []
        self.penalty = math.log(options.repetition_penalty) if options.repetition_penalty > 1 else 0.0
        self.ngram = options.no_repeat_ngram_size

    @property
    def active(self) -> bool:
        return bool(self.suppress or self.blank or self.penalty or self.ngram)

    def __call__(self, logp: torch.Tensor, written: list[list[int]]) -> torch.Tensor:
        if not self.active:
            return logp
        logp = logp.clone()
        if self.suppress:
            logp[:, self.suppress] = NEG_INF
        for row, tokens in enumerate(written):
            if self.blank and not tokens:
                logp[row, self.blank] = NEG_INF
            if self.penalty and tokens:
                logp[row, sorted(set(tokens))] -= self.penalty
            banned = self.banned_by_ngrams(tokens)
            if banned:
                logp[row, banned] = NEG_INF
        return logp.log_softmax(-1)  # a distribution again, as Whisper's filters leave one

    def banned_by_ngrams(self, tokens: list[int]) -> list[int]:
        """The tokens that would write an n-gram of ``tokens`` a second time."""
        n = self.ngram
        if not n or len(tokens) < n:
            return []
        if n == 1:
            return sorted(set(tokens))
        context = tuple(tokens[-(n - 1):])
        return sorted({tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == context})


def length_normalised(logp_sum: float, length: int, length_penalty: float | None) -> float:
    """A finished hypothesis' rank score: the sum itself (penalty 0), Whisper's sum / length
    (None), or sum / ((5 + length) / 6) ** penalty (Google NMT's, as Whisper takes it)."""
    if length_penalty is None:
        return logp_sum / max(length, 1)
    if length_penalty == 0:
        return logp_sum
    return logp_sum / ((5 + length) / 6) ** length_penalty
