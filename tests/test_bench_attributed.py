"""Pure helpers of bench/pipeline_peer.py and bench/attributed.py: pooling over recordings,
whisperX-style chunking, and giving every word to exactly one speaker piece."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# appended, not prepended: bench/ holds generic names (load, tables) that must not shadow packages
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))

from attributed import pool, score_recording  # noqa: E402
from pipeline_peer import assign_words, whisper_chunks  # noqa: E402


def recording(ref_speech, ref_words, cp_errors, **parts):
    return {"ref_speech": ref_speech, "ref_words": ref_words, "cp_errors": cp_errors,
            **{k: parts.get(k, 0.0) for k in ("miss", "false_alarm", "confusion")}}


def test_pooling_weighs_recordings_by_their_speech_and_words():
    # 10 s with half missed, 30 s with a tenth confused: 8 of 40 s wrong, not (0.5 + 0.1) / 2
    res = pool([recording(10.0, 10, 2, miss=0.5), recording(30.0, 30, 0, confusion=0.1)])
    assert res["der"] == pytest.approx(0.2)
    assert res["miss"] == pytest.approx(5 / 40) and res["confusion"] == pytest.approx(3 / 40)
    assert res["cpwer"] == pytest.approx(2 / 40)
    assert res["recordings"] == 2 and res["ref_speech"] == 40.0


def test_a_perfect_hypothesis_scores_zero():
    sups = [SimpleNamespace(start=0.0, end=2.0, speaker="a", text="hello there"),
            SimpleNamespace(start=2.5, end=4.0, speaker="b", text="general kenobi")]
    hyp = [{"start": 0.0, "end": 2.0, "speaker": "X", "text": "hello there"},
           {"start": 2.5, "end": 4.0, "speaker": "Y", "text": "general kenobi"}]
    res = score_recording(SimpleNamespace(supervisions=sups), hyp)
    assert res["der"] == 0.0 and res["cpwer"] == 0.0 and res["ref_words"] == 4


def test_chunks_join_segments_up_to_the_window():
    segs = [(0.0, 10.0), (11.0, 25.0), (26.0, 31.0), (32.0, 70.0), (71.0, 72.0)]
    assert whisper_chunks(segs, 30.0) == [(0.0, 25.0), (26.0, 31.0), (32.0, 70.0), (71.0, 72.0)]
    assert whisper_chunks([], 30.0) == []


def test_every_word_lands_in_exactly_one_piece():
    pieces = [{"start": 0.0, "end": 1.0, "words": ["stale"]}, {"start": 2.0, "end": 3.0, "words": []}]
    words = [{"word": w, "start": s, "end": s + 0.2} for w, s in
             (("in", 0.3), ("gap", 1.3), ("late", 1.7), ("after", 3.5))]
    assign_words(pieces, words)
    assert [w["word"] for w in pieces[0]["words"]] == ["in", "gap"]
    assert [w["word"] for w in pieces[1]["words"]] == ["late", "after"]
