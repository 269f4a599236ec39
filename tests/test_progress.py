"""Progress: a live bar in a terminal (a real pty), plain lines in logs; an ETA that stays honest."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from bench.cell.progress import parse_step
from bench.study.display import GridState, cell_progress, plan_eta, total_rate
from bench.study.jobs import grid_jobs
from bench.study.sweep_config import load_sweep
from tests.conftest import TINY
from tests.test_grid import make_grid

CELL = [a for a in TINY if not a.startswith(("--progress", "--steps", "--n_train"))]
CELL += ["--progress=true", "--steps=8", "--n_train=100", "--evals=2", "--results_dir=out"]


def in_terminal(argv: list[str], cwd) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal 120 columns wide; all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=os.environ
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=600), b"".join(chunks).decode(errors="replace")


def piped(argv: list[str], cwd) -> tuple[int, str]:
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    return p.returncode, p.stderr


BENCH = [sys.executable, "-m", "bench.cli"]


@pytest.mark.slow  # trains a real cell
def test_cell_in_a_terminal_draws_a_live_bar(tmp_path):
    rc, out = in_terminal([*BENCH, "run", *CELL], tmp_path)
    assert rc == 0, out
    assert "8/8" in out and "img/s" in out and "loss" in out
    assert "\r" in out  # redrawn in place
    assert "] step " not in out  # not the plain lines


@pytest.mark.slow  # trains a real cell
def test_cell_in_a_log_prints_plain_lines(tmp_path):
    rc, err = piped([*BENCH, "run", *CELL], tmp_path)
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if "] step " in ln]
    assert lines and "\r" not in err
    assert "step 8/8 (100%)" in lines[-1] and "img/s" in lines[-1] and "ETA 0s" in lines[-1]
    assert parse_step(err) == (8, 8)


def grid_sweep(tmp_path):
    # four stand-in cells, two of which fail (seed 13 writes a failed record)
    return make_grid(tmp_path, families=("vit",), seeds=(0, 13), steps=3)


def test_grid_in_a_terminal_draws_a_live_bar(tmp_path):
    rc, out = in_terminal([*BENCH, "grid", str(grid_sweep(tmp_path)), "--workers=2"], tmp_path)
    assert rc == 1, out  # two cells failed
    assert "4/4 cells, 2 done, 0 running, 2 failed" in out and "ETA" in out and "\r" in out
    assert "[t] start" in out and "[t] finished: 2 trained" in out  # events above the bar
    assert "2/4 done" not in out  # not the plain state lines


def test_grid_in_a_log_prints_plain_lines(tmp_path):
    rc, err = piped([*BENCH, "grid", str(grid_sweep(tmp_path)), "--workers=2"], tmp_path)
    assert rc == 1
    assert "\r" not in err and "%|" not in err  # no bar
    assert "[t] 2/4 done, 0 running, 2 failed, 0 queued" in err


def test_a_cells_progress_is_read_from_its_log(tmp_path):
    log = tmp_path / "cell.log"
    assert cell_progress(log)[0] is None  # no log yet
    log.write_text("decoding ...\n")
    assert cell_progress(log)[0] is None  # no progress line yet
    log.write_text(
        "[vit-s] step 10/100 (10%) | 900 img/s | ETA 1m\n" + "x" * 9000 + "\n"
        "[vit-s] step 25/100 (25%) | 900 img/s | loss 1.2 | ETA 45s\n"
    )
    assert cell_progress(log)[0] == 0.25  # the last line, from the tail of a long log


def test_the_grid_line_adds_up_the_running_cells_images_per_s(tmp_path):
    fast, slow, fresh = (tmp_path / f"{n}.log" for n in ("fast", "slow", "fresh"))
    fast.write_text(
        "[vit-s] step 10/100 (10%) | 900 img/s | ETA 1m\n"
        "[vit-s] step 25/100 (25%) | 1,650 img/s | loss 1.2 | best val err 40.0% | ETA 45s\n"
    )
    slow.write_text("[resnet-xs] step 3/90 (3%) | 120 img/s | ETA ?\n")
    fresh.write_text("decoding ...\n")
    rates = [cell_progress(log)[1] for log in (fast, slow, fresh)]
    assert rates == [1650.0, 120.0, None]  # each cell's last line; none before its first
    state = GridState(2, 9, 3, 0, 4, elapsed=65.0, eta=None, images_per_s=total_rate(rates))
    assert state.line() == "2/9 done, 3 running, 0 failed, 4 queued; elapsed 1m05s, 1,770 img/s"
    assert total_rate([None, None]) is None
    quiet = GridState(2, 9, 0, 0, 7, elapsed=65.0, eta=None, images_per_s=None)
    assert "img/s" not in quiet.line()


def test_the_grid_eta_is_planned_and_never_a_false_zero():
    unknown = (None, None)  # a queued cell without a cost or a model
    # nothing known: no ETA rather than 0s
    assert plan_eta([(5.0, None, None, None)], [unknown] * 3, done=[], slots=2) is None
    # a running cell past the typical wall, without a progress line: unknown, not 0s
    assert plan_eta([(120.0, None, None, None)], [], done=[(60.0, None, None)], slots=1) is None
    # its own progress says how long it has left: 40s done at 25% -> 120s left
    eta = plan_eta([(40.0, 0.25, None, None)], [], done=[(60.0, None, None)], slots=1)
    assert eta == pytest.approx(120)
    # the last long cell is not divided by the slots it does not use
    assert plan_eta([(10.0, 0.1, None, None)], [], done=[], slots=8) == pytest.approx(90.0)
    # queued cells without a cost take the average wall, laid out on the free slots
    eta = plan_eta([], [unknown] * 4, done=[(60.0, None, None)] * 2, slots=2)
    assert eta == pytest.approx(120.0)
    # before any cell is done, the running cells' projected walls stand in for the average
    assert plan_eta([(30.0, 0.5, None, None)], [unknown], done=[], slots=1) == pytest.approx(90.0)
    assert plan_eta([], [], done=[(60.0, None, None)], slots=2) == 0.0  # all done


def test_the_grid_eta_does_not_project_a_cell_still_starting_up():
    # 30s in at 0.3%: mostly imports and data decoding; 30s / 0.003 would say 2h46m
    assert plan_eta([(30.0, 0.003, 2.0, "vit-xs")], [], done=[], slots=1) is None
    # with a cell of its rung done (60s per unit of cost), its cost plans it instead: 120s - 30s
    done = [(60.0, 1.0, "vit-xs")]
    assert plan_eta([(30.0, 0.003, 2.0, "vit-xs")], [], done, slots=1) == pytest.approx(90.0)
    # once it is TRUSTED of the way through, its own progress rules: 60s at 20% -> 240s left
    assert plan_eta([(60.0, 0.2, 2.0, "vit-xs")], [], done, slots=1) == pytest.approx(240.0)


def test_the_grid_eta_plans_each_queued_cell_by_its_budget():
    done = [(60.0, 1.0, "vit-xs")]
    # a budget that grows with n: a cell done at cost 1 took 60s, so cost 4 takes 240s
    queued = [(4.0, "vit-xs"), (1.0, "vit-xs")]
    assert plan_eta([], queued, done, slots=1) == pytest.approx(300.0)
    assert plan_eta([], [*queued, (1.0, "vit-xs")], done, slots=2) == pytest.approx(240.0)
    # from a running cell's projection (20s at 25% of cost 2: 40s per unit), before any is done
    eta = plan_eta([(20.0, 0.25, 2.0, "vit-xs")], [(3.0, "vit-xs")], done=[], slots=1)
    assert eta == pytest.approx(180.0)
    # a running cell without a progress line yet: its cost at the measured rate, less its time
    assert plan_eta([(30.0, None, 2.0, "vit-xs")], [], done, slots=1) == pytest.approx(90)


def test_the_grid_eta_measures_each_rung_at_its_own_speed():
    # on this machine a resnet unit of cost takes 30s and a vit unit 60s (the costs come from
    # the reference GPU, where they rank differently): each queued cell at its own rung's rate
    done = [(60.0, 1.0, "vit-xs"), (30.0, 1.0, "resnet-xs")]
    assert plan_eta([], [(2.0, "resnet-xs")], done, slots=1) == pytest.approx(60.0)
    assert plan_eta([], [(2.0, "vit-xs")], done, slots=1) == pytest.approx(120.0)
    # a rung with no cell done yet takes the rate of all cells done (90s over 2 units)
    assert plan_eta([], [(2.0, "vit-s")], done, slots=1) == pytest.approx(90.0)
    # ... unless a running cell of that rung has projected its own: 50s at 25% of cost 1 is
    # 200s per unit, so the queued vit-s cell of cost 2 takes 400s after its 150s left
    running = [(50.0, 0.25, 1.0, "vit-s")]
    assert plan_eta(running, [(2.0, "vit-s")], done, slots=1) == pytest.approx(550.0)


def test_each_grid_cell_carries_its_work_for_the_eta(tmp_path):
    jobs = grid_jobs(load_sweep("sweeps/cifar10-cpu-scrambled.yaml"), results_dir=str(tmp_path))
    cost = {(j.params["family"], j.params["n_train"]): j.cost for j in jobs}
    # the budget grows with n (100k images at 1k, capped at 400k at 30k) ...
    assert cost[("vit", 30000)] == pytest.approx(4 * cost[("vit", 1000)], rel=0.01)
    # ... and at one budget the slower model costs more
    assert cost[("vit", 1000)] > cost[("resnet", 1000)]
