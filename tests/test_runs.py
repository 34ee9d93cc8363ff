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
