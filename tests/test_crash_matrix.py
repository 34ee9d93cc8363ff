"""bench/crash_matrix.py on a few kill points: it passes on the code as it is, and it fails
when the code is broken on purpose (patched in its training processes only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "crash_matrix.py"
# a kill before the first last/ is in place, one in each part of an improving save, and one in
# the repair resume makes of best/ (from the folder the kill before best.tmp left)
POINTS = r"first / before rename last.tmp|improving / before (rename last.tmp|mkdir best.tmp|rename best.tmp)|repair / before rename best.tmp"


def _bench(corpus, out: Path, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, str(BENCH), "--runs", "1", "--steps", "16", "--corpus", str(corpus),
                           "--out", str(out), "--work", str(out.parent / "work"), *args], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    return proc.returncode, json.loads(out.read_text()) if out.is_file() else {}, proc.stdout + proc.stderr


def test_crash_matrix_passes_on_a_few_kill_points(tiny_corpus, tmp_path):
    rc, result, output = _bench(tiny_corpus[0], tmp_path / "m.json", "--points", POINTS)
    assert rc == 0, output[-3000:]
    assert result["failures"] == [] and result["kills"] == 5, output[-3000:]
    outcomes = {(m["kind"], m["point"]): m["outcomes"] for m in result["matrix"]}
    assert outcomes[("improving", "before rename best.tmp -> best")] == {"resume new, best from last": 1}
    assert outcomes[("repair", "before rename best.tmp -> best")] == {"resume previous, best from last": 1}
    (damaged,) = result["damaged_corpus"]
    assert damaged["rc"] == [-9, 0] and damaged["malformed_manifest_lines"] == 1 and damaged["steps"] == 24


@pytest.mark.parametrize("broken, points, message", [
    ("no-repair", "improving / before mkdir best.tmp", "predicted 'from last'"),
    ("delete-first", "improving / before rename last.tmp", "checkpoint lost"),
])
def test_crash_matrix_fails_on_code_broken_on_purpose(tiny_corpus, tmp_path, broken, points, message):
    rc, result, output = _bench(tiny_corpus[0], tmp_path / "m.json", "--points", points, "--no-damaged",
                                "--break-on-purpose", broken)
    assert rc == 1, output[-3000:]
    assert any(message in f for f in result["failures"]), result["failures"]
