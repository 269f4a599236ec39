"""Denormals are flushed on every thread a cell trains on (a dead unit's decaying weights would
otherwise slow a CPU cell many times over: benchmarks/denormals.py)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY
from tests.test_run import run_cli

TWO_THREADS = {"OMP_NUM_THREADS": "2"}


def probe(first: str) -> str:
    """In a fresh two-thread process: whether every thread flushes after ``first`` ran."""
    code = (
        "import torch\nfrom bench.cell import denormals\n"
        f"{first}\n"
        "denormals.flush()\n"
        "print(torch.get_num_threads(), denormals.every_thread_flushes())"
    )
    env = {**os.environ, **TWO_THREADS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_flushing_reaches_the_threads_only_when_set_before_the_pool_starts():
    assert probe("pass") == ["2", "True"]
    # a thread created before the flag keeps denormals: the probe must see it
    assert probe("torch.ones(1 << 20).sum()") == ["2", "False"]


@pytest.mark.slow
def test_a_cell_trained_by_bench_run_flushes_on_every_thread(tmp_path):
    out = run_cli(["run", *TINY, "--steps=5", "--results_dir=out"], tmp_path, env=TWO_THREADS)
    assert out.returncode == 0, out.stderr
    (record,) = (tmp_path / "out").glob("*.json")
    assert json.loads(record.read_text())["timing"]["cpu_denormals_flushed"] is True
