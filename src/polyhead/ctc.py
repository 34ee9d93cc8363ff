"""CTC outputs read back (blank = 0): greedy decoding, and word times for a transcript that
the CTC head did not write (Whisper's decoder's) by Viterbi forced alignment of its
characters on the CTC head's frame posteriors.

Written by hand: torchaudio's ``forced_align`` does not run here, and the alignment is a
small dynamic programme over (frames x 2 * characters + 1) states.
"""

from __future__ import annotations

import numpy as np

from .text import normalize_text

BLANK = 0


def greedy_path(best: list[int]) -> list[tuple[int, int]]:
    """(frame, label) of each label greedy CTC decoding keeps from the per-frame argmax
    ``best``: repeats collapse to their first frame, blanks drop."""
    out, prev = [], BLANK
    for t, tok in enumerate(best):
        if tok != prev and tok != BLANK:
            out.append((t, tok))
        prev = tok
    return out


def ctc_forced_align(logp: np.ndarray, labels: list[int]) -> list[tuple[int, int]] | None:
    """Frames [first, last] of each label in the best CTC path through ``labels``
    (blank = 0), or None when the frames are too few to hold them."""
    t_max, n = len(logp), len(labels)
    if n == 0:
        return []
    ext = np.zeros(2 * n + 1, dtype=np.int64)
    ext[1::2] = labels
    s_max = len(ext)
    # a label may follow the one two states back unless it repeats it (a blank must separate)
    skip = np.zeros(s_max, dtype=bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -np.inf
    score = np.full(s_max, neg)
    score[0], score[1] = logp[0, ext[0]], logp[0, ext[1]]
    back = np.zeros((t_max, s_max), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, t_max):
        prev1 = np.concatenate([[neg], score[:-1]])
        prev2 = np.where(skip, np.concatenate([[neg, neg], score[:-2]]), neg)
        stacked = np.stack([score, prev1, prev2])
        choice = stacked.argmax(0)
        score = stacked[choice, np.arange(s_max)] + logp[t, ext]
        back[t] = choice
    end = s_max - 1 if score[-1] >= score[-2] else s_max - 2
    if not np.isfinite(score[end]):
        return None
    spans: list[list[int]] = [[-1, -1] for _ in range(n)]
    s = end
    for t in range(t_max - 1, -1, -1):
        if s % 2 == 1:
            k = s // 2
            spans[k][0] = t
            if spans[k][1] < 0:
                spans[k][1] = t
        s -= int(back[t, s]) if t > 0 else 0
    if any(a < 0 for a, _ in spans):
        return None
    return [(a, b) for a, b in spans]


SPEECH_MARGIN_S = 0.2  # a word may start this far outside the VAD's speech: its edges are soft


def outside_speech_is_blank(logp: np.ndarray, speech: list[dict], fps: float) -> np.ndarray:
    """``logp`` with every frame outside the ``speech`` segments ({start, end} in s, widened
    by SPEECH_MARGIN_S) forced to blank. A CTC head that never heard a long silence in
    training gives its characters some probability there, and the Viterbi path then stretches
    the first word back over the silence; the VAD head knows better."""
    keep = np.zeros(len(logp), dtype=bool)
    for seg in speech:
        a = max(0, int((seg["start"] - SPEECH_MARGIN_S) * fps))
        b = min(len(logp), int(np.ceil((seg["end"] + SPEECH_MARGIN_S) * fps)))
        keep[a:b] = True
    out = logp.copy()
    out[~keep] = -np.inf
    out[~keep, BLANK] = 0.0
    return out


def word_times(text: str, logp: np.ndarray, vocab: list[str], fps: float,
               speech: list[dict] | None = None) -> list[dict] | None:
    """``[{"word", "start", "end"}]`` for the words of ``text`` (normalised as scored) on
    the CTC log-probabilities ``logp`` [frames, 1 + len(vocab)]; None if they do not fit.
    With ``speech`` (the VAD's segments), words are placed inside them, or anywhere if
    they do not fit there."""
    if speech:
        inside = word_times(text, outside_speech_is_blank(logp, speech, fps), vocab, fps)
        if inside is not None:
            return inside
    index = {ch: i + 1 for i, ch in enumerate(vocab)}
    words = normalize_text(text).split()
    space = index.get(" ")
    chars, owner = [], []  # owner: the word each character belongs to (-1: a space)
    for w, word in enumerate(words):
        if w and space is not None:
            chars.append(space)
            owner.append(-1)
        for ch in word:
            if ch in index:
                chars.append(index[ch])
                owner.append(w)
    spans = ctc_forced_align(logp, chars)
    if spans is None:
        return None
    out = []
    for w, word in enumerate(words):
        mine = [spans[i] for i, o in enumerate(owner) if o == w]
        if mine:
            out.append({"word": word, "start": round(mine[0][0] / fps, 2), "end": round((mine[-1][1] + 1) / fps, 2)})
    return out


def words_by_turn(turns: list[tuple[int, str]], times: list[dict]) -> list[tuple[int, list[dict]]]:
    """(speaker, its words' times) per turn of a <|speakers|> transcript, given ``times`` for
    all the turns' words in order (``word_times`` of their joined text)."""
    out, i = [], 0
    for speaker, text in turns:
        k = len(normalize_text(text).split())
        out.append((speaker, times[i:i + k]))
        i += k
    return out
