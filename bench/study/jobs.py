"""Cells to jobs: each proposed cell validated and its command rendered, for the grid runner.

``grid_jobs`` expands a grid sweep to every cell; ``Proposals`` asks the engine for random or
bayes cells a few at a time, telling it what finished (from the records) and what runs.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.cell.config import Cell
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

# runtime fields that --set leaves alone: the sweep names the study, and two have their own flag
OWN_FLAGS = {
    "study": "the sweep names the study",
    "results_dir": "give --results_dir",
    "wandb": "give --wandb",
}


def parse_settings(pairs: list[str] | None) -> dict[str, str]:
    """``bench grid --set FIELD=VALUE``: runtime fields (not part of a cell's ``run_id``) given to
    every cell, e.g. where the data lie or a compile mode; each cell validates its values."""
    runtime = {f.name for f in fields(Cell) if f.metadata["runtime"]}
    known = {f.name for f in fields(Cell)}
    settings: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name:
            raise BenchError(f"--set {pair!r}: give FIELD=VALUE, e.g. --set data_dir=/data/cifar10")
        if name not in known:
            raise BenchError(f"--set {name}: unknown field (see `bench run --help`)")
        if name not in runtime:
            raise BenchError(
                f"--set {name}: part of a cell's identity (its run_id); vary it in the sweep YAML"
            )
        if name in OWN_FLAGS:
            raise BenchError(f"--set {name}: {OWN_FLAGS[name]}")
        settings[name] = value
    return settings


def make_job(
    sweep: Sweep,
    params: dict[str, Any],
    results_dir: str | None = None,
    wandb_mode: str | None = None,
    settings: dict[str, str] | None = None,
) -> Job:
    """Validate one cell and render its command (plus the runner's own options and ``settings``,
    appended: the last value of a flag wins, so they override the sweep's)."""
    settings = settings or {}
    try:
        cell = to_cell({**params, **settings}, results_dir)
        check_results_dir(cell)
    except BenchError as e:
        shown = " ".join(f"{k}={params[k]}" for k in sweep.varied if k in params)
        raise BenchError(f"{sweep.path}: cell {shown or params}: {e}") from None
    command = render_command(sweep.command, params, program=sweep.config.get("program"))
    if results_dir is not None:
        command.append(f"--results_dir={results_dir}")
    if wandb_mode is not None:
        command.append(f"--wandb={wandb_mode}")
    command += [f"--{name}={value}" for name, value in settings.items()]
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
    sweep: Sweep,
    results_dir: str | None = None,
    wandb_mode: str | None = None,
    settings: dict[str, str] | None = None,
) -> list[Job]:
    jobs = [make_job(sweep, p, results_dir, wandb_mode, settings) for p in expand(sweep)]
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
        self,
        sweep: Sweep,
        records_dir: Path,
        results_dir: str | None,
        wandb_mode: str | None,
        settings: dict[str, str] | None = None,
    ):
        self.sweep, self.records_dir = sweep, records_dir
        self.results_dir, self.wandb_mode, self.settings = results_dir, wandb_mode, settings
        self.running: dict[str, dict] = {}

    def __call__(self, n: int) -> list[Job]:
        runs = finished_runs(self.sweep, self.records_dir)
        runs += [sweep_run(p, "running") for p in self.running.values()]
        jobs = [
            make_job(self.sweep, p, self.results_dir, self.wandb_mode, self.settings)
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
