"""Checks of the filesystem a cell will write to, made before anything starts (exit 2).

A results folder under a regular file, or one this user cannot write, would otherwise be found
only after training, when the record cannot be written.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.cell.config import Cell
from bench.errors import BenchError


def check_results_dir(cell: Cell) -> None:
    """The cell's study folder (records, checkpoints, logs) can be made and written to."""
    field = "results_dir" if cell.results_dir else "study"
    value = cell.results_dir or cell.study
    for folder in (cell.folder.records_dir, cell.folder.study_dir):
        existing = _first_existing(folder)
        if not existing.is_dir():
            raise BenchError(f"{field}={value}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise BenchError(f"{field}={value}: {existing} is not writable")


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
