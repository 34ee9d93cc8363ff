"""Data parallelism: 2 CPU processes (gloo) under torchrun, with gradient aggregation on,
end with identical weights that differ from the initial ones, having seen different data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file


@pytest.mark.parametrize("aggregator", ["pcgrad"])
def test_two_ranks_end_identical(tiny_corpus, tmp_path, aggregator):
    folder, _ = tiny_corpus
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(folder), str(tmp_path / "run"), str(tmp_path), aggregator]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert (w0[k] == w1[k]).all(), k
    ids0 = (tmp_path / "rank0.ids").read_text().split()
    ids1 = (tmp_path / "rank1.ids").read_text().split()
    assert ids0 and ids1 and not set(ids0) & set(ids1)
