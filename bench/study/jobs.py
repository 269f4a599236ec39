"""Cells to jobs: each proposed cell validated and its command rendered, for the grid runner.

``grid_jobs`` expands a grid sweep to every cell; ``Proposals`` asks the engine for random or
bayes cells a few at a time, telling it what finished (from the records) and what runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cell.preflight import check_results_dir
from bench.errors import BenchError
from bench.results.records import DONE, iter_records
from bench.study.estimate import relative_cost
from bench.study.runner import Job
from bench.study.sweep_config import (
    Sweep,
    expand,
    metric_from_record,
    render_command,
    sweep_run,
    to_cell,
)


def make_job(
    sweep: Sweep,
    params: dict[str, Any],
    results_dir: str | None = None,
    wandb_mode: str | None = None,
) -> Job:
    """Validate one cell and render its command (plus the runner's own options, appended)."""
    try:
        cell = to_cell(params, results_dir)
        check_results_dir(cell)
    except BenchError as e:
        shown = " ".join(f"{k}={params[k]}" for k in sweep.varied if k in params)
        raise BenchError(f"{sweep.path}: cell {shown or params}: {e}") from None
    command = render_command(sweep.command, params, program=sweep.config.get("program"))
    if results_dir is not None:
        command.append(f"--results_dir={results_dir}")
    if wandb_mode is not None:
        command.append(f"--wandb={wandb_mode}")
    if "${args_json_file}" in sweep.command:
        raise BenchError(
            f"{sweep.path}: ${{args_json_file}} is not supported by the local runner: use ${{args}}"
        )
    return Job(
        params=params,
        run_id=cell.run_id,
        study=cell.study,
        folder=cell.folder,
        command=command,
        cost=relative_cost(cell),
    )


def grid_jobs(
    sweep: Sweep, results_dir: str | None = None, wandb_mode: str | None = None
) -> list[Job]:
    jobs = [make_job(sweep, p, results_dir, wandb_mode) for p in expand(sweep)]
    check_unique(sweep, jobs)
    return jobs


def check_unique(sweep: Sweep, jobs: list[Job]) -> None:
    """No two cells of a grid are one experiment (the real grid and --dry-run both check)."""
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.run_id in seen:
            raise BenchError(
                f"{sweep.path}: two cells are the same experiment {job.run_id} (a swept parameter "
                f"is a runtime field?): {seen[job.run_id].params} and {job.params}"
            )
        seen[job.run_id] = job


def finished_runs(sweep: Sweep, records_dir: Path) -> list:
    """This study's records as finished runs of the sweep, with the sweep's metric (for bayes)."""
    metric = (sweep.metric or {}).get("name", "val/error")
    keys = list(sweep.config["parameters"])
    runs = []
    if not records_dir.is_dir():
        return runs
    for rec in iter_records(records_dir):
        if rec.get("study") != sweep.study or rec.get("status") not in DONE:
            continue
        config = rec.get("config") or {}
        params = {k: config[k] for k in keys if k in config}
        value = metric_from_record(rec, metric)
        runs.append(sweep_run(params, "finished", {metric: value} if value is not None else {}))
    return runs


class Proposals:
    """Random/bayes: ask the engine for new cells, telling it what finished and what runs."""

    def __init__(
        self, sweep: Sweep, records_dir: Path, results_dir: str | None, wandb_mode: str | None
    ):
        self.sweep, self.records_dir = sweep, records_dir
        self.results_dir, self.wandb_mode = results_dir, wandb_mode
        self.running: dict[str, dict] = {}

    def __call__(self, n: int) -> list[Job]:
        runs = finished_runs(self.sweep, self.records_dir)
        runs += [sweep_run(p, "running") for p in self.running.values()]
        jobs = [
            make_job(self.sweep, p, self.results_dir, self.wandb_mode)
            for p in expand(self.sweep, runs, n)
        ]
        for job in jobs:
            self.running[job.run_id] = job.params
        return jobs

    def finished(self, job: Job) -> None:
        self.running.pop(job.run_id, None)


def first_params(sweep: Sweep) -> dict[str, Any]:
    """The engine's first proposal: a representative cell of the sweep."""
    return expand(sweep, [], 1)[0]


def records_dir_for(sweep: Sweep, results_dir: str | None) -> Path:
    """Where this sweep's records go: ``results_dir`` if given, else its study's ``runs/``."""
    return to_cell(first_params(sweep), results_dir).folder.records_dir
