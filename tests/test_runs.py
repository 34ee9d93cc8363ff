"""Run folders (polyhead.runs) and greedy CTC (polyhead.ctc): the base-floor helpers that
inference, evaluation, training and the benches share."""

from __future__ import annotations

import pytest

from polyhead.ctc import greedy_path
from polyhead.runs import (BEST, CALIBRATION_FILE, LAST, WEIGHTS_FILE, checkpoint_folder, read_calibration,
                           write_calibration)


def checkpoint(folder):
    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(b"")
    return folder


def test_checkpoint_folder_order(tmp_path):
    run = tmp_path / "run"
    last = checkpoint(run / LAST)
    assert checkpoint_folder(run) == last  # a run stopped before its first evaluation
    best = checkpoint(run / BEST)
    assert checkpoint_folder(run) == best
    assert checkpoint_folder(run, LAST) == last
    assert checkpoint_folder(best) == best
    demo = checkpoint(tmp_path / "demo" / "multitask" / BEST)
    assert checkpoint_folder(tmp_path / "demo") == demo


def test_checkpoint_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no polyhead checkpoint"):
        checkpoint_folder(tmp_path)


def test_calibration_of_checkpoint_or_run(tmp_path):
    best = checkpoint(tmp_path / BEST)
    assert read_calibration(best) == ({}, None)
    write_calibration(tmp_path, {"vad_threshold": 0.5})
    assert read_calibration(best) == ({"vad_threshold": 0.5}, tmp_path)  # the run's
    write_calibration(best, {"vad_threshold": 1.0})
    assert read_calibration(best) == ({"vad_threshold": 1.0}, best)  # its own first (an export)
    assert (best / CALIBRATION_FILE).is_file()


def test_greedy_path_collapses_repeats_and_drops_blanks():
    assert greedy_path([0, 3, 3, 0, 3, 5, 5, 0]) == [(1, 3), (4, 3), (5, 5)]
    assert greedy_path([]) == [] and greedy_path([0, 0]) == []


def test_word_times_stay_inside_speech():
    """A CTC head unsure in a long leading silence must not pull the first word into it
    when the VAD says where speech is."""
    import numpy as np

    from polyhead.ctc import word_times

    vocab = [" ", "a", "b"]
    fps = 10.0
    logp = np.full((40, 4), np.log(0.25))  # 4 s of frames the head cannot tell apart
    logp[30:32, 2] = np.log(0.9)  # "a" clearly at 3.0 s
    logp[34:36, 3] = np.log(0.9)  # "b" at 3.4 s
    free = word_times("a b", logp, vocab, fps)
    inside = word_times("a b", logp, vocab, fps, speech=[{"start": 2.9, "end": 3.7}])
    assert free[0]["start"] < 1.0  # the path stretches "a" over the silence
    assert 2.6 <= inside[0]["start"] <= 3.0 and inside[1]["start"] >= 3.2
    # speech too short to hold the words: placed anywhere rather than dropped
    assert word_times("a b", logp, vocab, fps, speech=[{"start": 3.0, "end": 3.0}]) is not None
