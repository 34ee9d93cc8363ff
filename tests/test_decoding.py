"""The decoding package: the CTC prefix scorer against the CTC loss and brute force, joint
CTC/attention beam search (weight 0 is the attention-only search), the options' checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from polyhead.decoding import CTC_JOINT, GREEDY, DecodingOptions, beam_search, decode_batch
from polyhead.decoding.scorers import CTCPrefixScorer, TokenFilters, char_ids, length_normalised
from polyhead.decoding.search import Hypothesis, ranked_extensions
from polyhead.inference.pipeline import Decoding
from polyhead.model import MultiTaskModel
from polyhead.data.labels import CHARS
from test_whisper import batch, config, text_target
from tiny_whisper import make_tiny_whisper


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


@pytest.fixture(scope="module")
def model(tiny_whisper):
    torch.manual_seed(0)
    return MultiTaskModel(config(tiny_whisper, ctc_weight=0.3)).eval()


class Spelled:
    """A stand-in tokenizer whose tokens are the characters of CHARS (id i: CHARS[i])."""

    def decode(self, tokens):
        return "".join(CHARS[t] for t in tokens)


def scorer(logits, vocab=CHARS):
    return CTCPrefixScorer(logits, vocab, Spelled())


def spelled(state_chars):
    return "".join(CHARS[c - 1] for c in state_chars)


@pytest.mark.parametrize("text", ["hello", "aab", "a", "", "see all  ", "it's"])
def test_ctc_prefix_scorer_of_a_whole_sequence_is_the_ctc_likelihood(text):
    torch.manual_seed(1)
    logits = torch.randn(17, len(CHARS) + 1) * 3
    ctc = scorer(logits)
    chars = char_ids(text, {c: i + 1 for i, c in enumerate(CHARS)})
    state = ctc.advance([ctc.initial], [chars])[0]
    assert state.chars == chars
    expected = -F.ctc_loss(logits.double().log_softmax(-1)[:, None], torch.tensor([list(chars) or [0]]),
                           torch.tensor([len(logits)]), torch.tensor([len(chars)]), blank=0, reduction="sum")
    assert ctc.final(state) == pytest.approx(float(expected), abs=1e-6)


def test_ctc_prefix_probability_matches_brute_force():
    """The prefix score is the probability of every frame path whose output starts with the
    prefix (3 symbols, 5 frames: every path enumerated)."""
    torch.manual_seed(2)
    logp = torch.randn(5, 3).double().log_softmax(-1)
    ctc = CTCPrefixScorer(logp, ["a", "b"], None)
    for prefix in [(1,), (2,), (1, 1), (1, 2), (2, 1, 2)]:
        total = 0.0
        for path in itertools.product(range(3), repeat=5):
            out = [s for i, s in enumerate(path) if s != 0 and (i == 0 or path[i - 1] != s)]
            if tuple(out[:len(prefix)]) == prefix:
                total += math.exp(sum(float(logp[t, s]) for t, s in enumerate(path)))
        total = math.log(total)
        state = ctc.advance([ctc.initial], [prefix])[0]
        assert state.score == pytest.approx(total, abs=1e-9), prefix


def test_ctc_prefix_states_extend_batched_and_recompute_after_a_rewrite():
    torch.manual_seed(3)
    ctc = scorer(torch.randn(30, len(CHARS) + 1))
    index = {c: i + 1 for i, c in enumerate(CHARS)}
    base = ctc.advance([ctc.initial], [char_ids("dont", index)])[0]
    # "don" then "dont": extended; "dan": the characters were rewritten, recomputed from the start
    moved = ctc.advance([base, base, base], [char_ids("dont x", index), char_ids("dan", index), base.chars])
    fresh = [ctc.advance([ctc.initial], [char_ids(t, index)])[0] for t in ("dont x", "dan")]
    assert moved[2] is base
    for got, want in zip(moved, fresh):
        assert spelled(got.chars) == spelled(want.chars)
        assert got.score == pytest.approx(want.score, abs=1e-9)
        assert ctc.final(got) == pytest.approx(ctc.final(want), abs=1e-9)


def utterances(model, seconds=(1.0, 0.6, 1.4)):
    x, lengths = batch(model, seconds, seed=4)
    with torch.no_grad():
        return model(x, lengths, ["asr"])["asr"]


@pytest.mark.parametrize("beam", [2, 4])
def test_joint_search_with_weight_zero_is_the_attention_only_search(model, beam):
    out = utterances(model)
    head = model.heads["asr"]
    for i in range(len(out["lengths"])):
        n = int(out["lengths"][i])
        args = (head, out["memory"][i:i + 1, :n], out["lengths"][i:i + 1])
        attention = beam_search(*args, DecodingOptions(beam_size=beam, ctc_weight=0.0))
        joint = beam_search(*args, DecodingOptions(beam_size=beam, ctc_weight=0.0, ctc_mode=CTC_JOINT),
                            out["logits"][i, :n], CHARS)
        assert joint == attention
        assert attention["tokens"]  # a real search, not an empty answer


def test_head_beam_search_is_the_default_rescoring_search(model):
    out = utterances(model)
    head = model.heads["asr"]
    n = int(out["lengths"][0])
    args = (out["memory"][:1, :n], out["lengths"][:1])
    assert head.beam_search(*args, 3, out["logits"][0, :n], CHARS) == beam_search(
        head, *args, DecodingOptions(beam_size=3), out["logits"][0, :n], CHARS)


def test_joint_ranking_follows_ctc_where_attention_hesitates(model):
    """Attention slightly prefers " the"; CTC has spelled another word: the joint score
    prefers the candidate that CTC can align."""
    head = model.heads["asr"]
    tok = head.tokenizer
    bad = tok.encode(" the", add_special_tokens=False)[0]
    words = {i: tok.decode([i]) for i in range(head.eot)}
    good = next(i for i, w in words.items() if w.startswith(" ") and w[1:].isalpha() and len(w) >= 3 and i != bad)
    path = [0] + [CHARS.index(c) + 1 for c in words[good].strip()] + [0]
    logits = torch.full((len(path), len(CHARS) + 1), -20.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 0.0
    ctc = CTCPrefixScorer(logits, CHARS, tok)
    logp = torch.full((1, len(tok)), -30.0)
    logp[0, bad], logp[0, good] = -0.5, -1.0
    live = [Hypothesis([], 0.0, ctc.initial, 0.0)]

    def first(weight):
        return ranked_extensions(head, live, logp, 2, True, weight, ctc if weight else None)[0][1]
    assert first(0.0) == bad
    assert first(0.3) == good


def test_joint_beam_writes_what_it_learnt(tiny_whisper):
    torch.manual_seed(0)
    model = MultiTaskModel(config(tiny_whisper, ctc_weight=0.3))
    x, lengths = batch(model, (1.5,))
    target = text_target(["hello world"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model.heads["asr"].loss(model(x, lengths, ["asr"])["asr"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x, lengths, ["asr"])["asr"]
    head = model.heads["asr"]
    for options in (DecodingOptions(beam_size=3, ctc_mode=CTC_JOINT),
                    DecodingOptions(beam_size=3, ctc_mode=CTC_JOINT, length_penalty=None, patience=2.0)):
        res = decode_batch(head, out["memory"], out["lengths"], options, ctc_logits=out["logits"], vocab=CHARS)[0]
        assert res["text"] == "hello world", options
        assert -1.0 < res["avg_logprob"] <= 0.0
    assert head.transcribe(out, CHARS, options=DecodingOptions(beam_size=2, ctc_mode=CTC_JOINT)) == ["hello world"]


def test_an_explicit_ctc_weight_needs_a_ctc_branch(model):
    out = utterances(model, (0.5,))
    with pytest.raises(ValueError, match="no CTC branch"):
        decode_batch(model.heads["asr"], out["memory"], out["lengths"],
                     DecodingOptions(beam_size=2, ctc_weight=0.5, ctc_mode=CTC_JOINT))


def test_filters_and_sampling_options_run(model):
    out = utterances(model)
    head = model.heads["asr"]
    args = (head, out["memory"], out["lengths"])
    res = decode_batch(*args, DecodingOptions(no_repeat_ngram_size=1, sample_len=6))
    for r in res:
        assert len(r["tokens"]) == len(set(r["tokens"])) <= 6
    res = decode_batch(*args, DecodingOptions(temperature=1.0, best_of=3, suppress_blank=True, repetition_penalty=1.5))
    assert len(res) == 3 and all(isinstance(r["text"], str) for r in res)
    assert decode_batch(*args, GREEDY) == head.generate(out["memory"], out["lengths"])


def test_token_filters():
    f = TokenFilters(DecodingOptions(no_repeat_ngram_size=2), [], 0)
    assert f.banned_by_ngrams([5, 6, 7, 5]) == [6]
    assert f.banned_by_ngrams([5, 6]) == []
    assert not TokenFilters(GREEDY, [9], 0).active
    logp = torch.zeros(2, 4).log_softmax(-1)
    blanked = TokenFilters(DecodingOptions(suppress_blank=True), [1], 0)(logp, [[], [2]])
    assert blanked[0, 0] == blanked[0, 1] == -math.inf and bool(torch.isfinite(blanked[1]).all())


def test_length_penalty():
    assert length_normalised(-6.0, 3, 0.0) == -6.0
    assert length_normalised(-6.0, 3, None) == -2.0
    assert length_normalised(-6.0, 1, 1.0) == -6.0


@pytest.mark.parametrize("options, message", [
    ({"beam_size": 0}, "beam_size: at least 1"),
    ({"temperature": -0.5}, "temperature"),
    ({"ctc_weight": 1.0}, r"ctc_weight: in \[0, 1\)"),
    ({"ctc_mode": "both"}, "ctc_mode: one of rescore, joint"),
    ({"patience": 2.0}, "patience: only with beam_size > 1"),
    ({"beam_size": 3, "best_of": 2}, "one or the other"),
    ({"length_penalty": -1.0}, "length_penalty"),
    ({"without_timestamps": False}, "predict no timestamps"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ({"repetition_penalty": 0.5}, "repetition_penalty"),
])
def test_options_say_what_is_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        DecodingOptions(**options)


def test_options_are_hashable_and_the_old_name_still_works():
    assert Decoding is DecodingOptions
    a, b = DecodingOptions(temperature=[0.0, 0.2]), DecodingOptions(temperature=(0.0, 0.2))
    assert a == b and hash(a) == hash(b) and a.temperatures == (0.0, 0.2)
    assert DecodingOptions(beam_size=5).beams == 5 and GREEDY.beams == 1


def test_repetition_loops_are_found_and_cut():
    from polyhead.decoding.fallback import cut_loops, repeated_run

    looped = "to gladly admire the nervous hotel hotel hotel hotel Hotel. hotel"
    assert repeated_run(looped) == (5, 1, 6)
    assert cut_loops(looped) == "to gladly admire the nervous hotel"
    assert cut_loops("yes I do I do I do I do now") == "yes I do now"
    assert repeated_run("no, no, no. That is what she said twice: no no.") is None  # three is speech
