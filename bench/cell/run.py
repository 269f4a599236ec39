"""``bench run``: train one cell and write its record.

bench run --family=vit --size=s --n_train=2000 --seed=0 --dataset=cifar10
"""

from __future__ import annotations

from contextlib import contextmanager

from bench.cell import denormals, threads
from bench.cell.config import Cell, build_parser, parse_cell_args
from bench.cell.finetune import finetune_phase
from bench.cell.packed import resume_lone_member
from bench.cell.preflight import check_results_dir
from bench.cell.train import (
    EXIT_CODES,
    Annotate,
    already_done,
    fresh_checkpoints,
    prepare,
    train_and_record,
)
from bench.errors import CellBusy, StorageError
from bench.results.locks import holder, inherited, release, try_lock


def run_cell(cell: Cell) -> dict | None:
    """Train, evaluate and record one cell (with its fine-tuning phase, if it has one);
    None when it was already done."""
    check_results_dir(cell)
    if already_done(cell):
        return None
    setup = prepare(cell)  # every check of the data before anything is written
    with cell_lock(cell):
        if already_done(cell):  # finished by another process meanwhile
            return None
        ckpt_dir = fresh_checkpoints(cell)
        # a killed --pack grid rerun without it: its members' progress is in its pack checkpoints
        resumed = resume_lone_member(setup, ckpt_dir, {"via": "bench run"})
        if resumed is not None:
            return resumed
        phase = finetune_phase if cell.finetune_img_size else None
        return train_and_record(setup, ckpt_dir, phase=phase, annotate=executed_as("process"))


@contextmanager
def cell_lock(cell: Cell):
    """Hold the cell's lock while it trains, unless the runner that started us holds it: two
    processes on one cell would resume from each other's checkpoints and mix their files."""
    path = cell.folder.lock(cell.run_id)
    if inherited(path):
        yield
        return
    try:
        fd = try_lock(path)
    except OSError as e:
        raise StorageError(path, e) from None
    if fd is None:
        raise CellBusy(
            f"cell {cell.run_id} is being trained by another process ({holder(path)}; lock {path})"
        )
    try:
        yield
    finally:
        release(fd)


def executed_as(mode: str, **more) -> Annotate:
    """How the cell was run, into its record: ``process`` (one ``bench run``), ``worker``, ``packed``.
    A killed pack member that ``bench run`` resumes as a pack of one (:func:`resume_lone_member`)
    is recorded by the pack as ``{mode: packed, pack: 1, via: bench run}``."""

    def annotate(record: dict, outcome: dict) -> None:
        record["execution"] = {"mode": mode, "pack": 1, **more}

    return annotate


def main(argv: list[str]) -> int:
    denormals.flush()  # before any torch op starts the thread pool: its threads inherit it
    cell, _ = parse_cell_args(argv, build_parser("bench run", __doc__))
    threads.size_pool(cell.device)  # the cores another job keeps busy are not ours
    record = run_cell(cell)
    return 0 if record is None else EXIT_CODES.get(record["status"], 1)
