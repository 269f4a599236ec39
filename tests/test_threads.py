"""A CPU cell trains on the cores other processes leave free (a thread on a core another job
holds slows every parallel op: benchmarks/cpu_contention.py), unless OMP_NUM_THREADS says."""

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from bench.cell import threads
from tests.conftest import TINY

CORES = len(threads.cores())
needs_two_cores = pytest.mark.skipif(CORES < 2, reason="one core: nothing to share")


@contextmanager
def other_job():
    """Another process keeping one core busy."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # started and spinning
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def test_the_pool_is_the_cores_left_once_busy_ones_are_taken_out():
    assert threads.pool_size(2, 0.0) == 2
    assert threads.pool_size(2, 0.4) == 2  # background noise is not a busy core
    assert threads.pool_size(2, 0.6) == 1
    assert threads.pool_size(2, 3.0) == 1  # at least one thread
    assert threads.pool_size(8, 2.6) == 5


def test_core_times_read_every_core_of_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  30 0 10 100 5 0 0 0 0 0\n"
        "cpu0 10 0 5 50 2 0 0 0 0 0\n"
        "cpu1 20 0 5 50 3 0 0 1 0 0\n"
        "intr 12345\n\n"
    )
    assert threads.core_times(str(stat)) == {0: (15, 67), 1: (26, 79)}
    assert threads.core_times(str(tmp_path / "none")) == {}


@needs_two_cores
def test_a_spinning_process_counts_as_a_busy_core_and_our_own_work_does_not():
    if not threads.core_times():
        pytest.skip("no /proc/stat on this system")
    before = threads.busy_elsewhere()  # whatever else this machine is doing
    with other_job():
        assert threads.busy_elsewhere() - before > 0.6
    stop = threading.Event()
    spin = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spin.start()  # this process busy on one core: ours, not another job's
    try:
        assert threads.busy_elsewhere() - before < 0.4
    finally:
        stop.set()
        spin.join()


def test_a_gpu_cell_and_a_user_setting_keep_the_pool():
    assert threads.size_pool("cpu", {"OMP_NUM_THREADS": "3"})["by"] == "OMP_NUM_THREADS"
    if threads.torch.cuda.is_available():
        assert threads.size_pool("auto", {}) is None


@needs_two_cores
@pytest.mark.parametrize("omp", [None, "2"])
def test_bench_run_trains_on_the_free_cores_unless_told(tmp_path, omp):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"OMP_NUM_THREADS": omp} if omp else {})
    cmd = [sys.executable, "-m", "bench.cli", "run", *TINY, "--steps=5", "--results_dir=out"]
    with other_job():
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (record,) = (tmp_path / "out").glob("*.json")
    used = json.loads(record.read_text())["timing"]["cpu_threads"]
    if omp:
        assert used == 2 and "busy with other work" not in out.stderr
    else:
        assert used < CORES  # at least the spinning job's core left out
        assert f"of {CORES} cores busy with other work" in out.stderr
