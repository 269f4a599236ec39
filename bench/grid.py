"""``bench grid`` and ``bench sweep``: a study's sweep YAML, run locally, on SLURM, or on W&B.

    bench grid sweeps/smoke.yaml --dry-run          # the cells, validated, and which are done
    bench grid sweeps/smoke.yaml --workers 2        # run every cell not done yet
    bench grid sweeps/cifar10.yaml --devices 0,1,2,3 --per_device 2
    bench grid sweeps/cifar10.yaml --launcher=slurm --partition gpu --nodes 4 --gpus_per_node 8
    bench sweep sweeps/cifar10.yaml --entity E --project P   # create it on W&B, print agent lines

Expansion and command rendering: :mod:`bench.sweep_config`; processes, locks and progress:
:mod:`bench.launch` (also SLURM, through submitit).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from bench import results
from bench.errors import BenchError
from bench.launch import Job, Runner, node_argv, slots_for, submit_slurm
from bench.sweep_config import (
    Sweep,
    expand,
    load_sweep,
    metric_from_record,
    render_command,
    sweep_run,
    to_cell,
)


# ---------------------------------------------------------------------- cells -> jobs
def make_job(
    sweep: Sweep,
    params: dict[str, Any],
    results_dir: str | None = None,
    wandb_mode: str | None = None,
) -> Job:
    """Validate one cell and render its command (plus the runner's own options, appended)."""
    try:
        cell = to_cell(params, results_dir)
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
        records_dir=Path(cell.records_dir),
        command=command,
    )


def grid_jobs(
    sweep: Sweep, results_dir: str | None = None, wandb_mode: str | None = None
) -> list[Job]:
    jobs = [make_job(sweep, p, results_dir, wandb_mode) for p in expand(sweep)]
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.run_id in seen:
            raise BenchError(
                f"{sweep.path}: two cells are the same experiment {job.run_id} (a swept parameter "
                f"is a runtime field?): {seen[job.run_id].params} and {job.params}"
            )
        seen[job.run_id] = job
    return jobs


def finished_runs(sweep: Sweep, records_dir: Path) -> list:
    """This study's records as finished runs of the sweep, with the sweep's metric (for bayes)."""
    metric = (sweep.metric or {}).get("name", "val/error")
    keys = list(sweep.config["parameters"])
    runs = []
    if not records_dir.is_dir():
        return runs
    for rec in results.iter_records(records_dir):
        if rec.get("study") != sweep.study or rec.get("status") not in ("completed", "diverged"):
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


# ---------------------------------------------------------------------- bench grid
def grid_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench grid",
        description="Run every cell of a sweep YAML that is not done yet, locally or on SLURM.",
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep", help="a sweep YAML, e.g. sweeps/smoke.yaml")
    p.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="list the cells (validated) and which are done; train nothing",
    )
    p.add_argument("--workers", type=int, default=None, help="cells at once (default 1)")
    p.add_argument(
        "--devices",
        default=None,
        metavar="0,1,...",
        help="GPUs to spread cells over (CUDA_VISIBLE_DEVICES per cell)",
    )
    p.add_argument(
        "--per_device", "--per-device", type=int, default=1, help="cells at once on each GPU"
    )
    p.add_argument(
        "--results_dir",
        "--results-dir",
        default=None,
        help="record folder for every cell (appended to each command)",
    )
    p.add_argument(
        "--wandb",
        default=None,
        choices=("online", "offline", "disabled"),
        help="W&B mode passed to every cell (appended to each command)",
    )
    p.add_argument(
        "--count",
        type=int,
        default=None,
        help="run at most N cells (required for random and bayes sweeps)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds a cell gets to stop after an interrupt before it is killed",
    )
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    s = p.add_argument_group("slurm (with --launcher=slurm; one job per node, each a local runner)")
    s.add_argument("--partition", default=None)
    s.add_argument("--time", type=int, default=240, help="minutes per job")
    s.add_argument("--nodes", type=int, default=1, help="jobs (one node each) sharing the grid")
    s.add_argument("--gpus_per_node", "--gpus-per-node", type=int, default=1)
    s.add_argument("--cpus_per_task", "--cpus-per-task", type=int, default=None)
    s.add_argument("--mem_gb", "--mem-gb", type=float, default=None)
    s.add_argument("--account", default=None)
    s.add_argument("--qos", default=None)
    s.add_argument("--constraint", default=None)
    s.add_argument(
        "--setup",
        action="append",
        default=None,
        help="a shell line to run before the job (repeatable), e.g. 'source venv/bin/activate'",
    )
    s.add_argument("--slurm_dir", "--slurm-dir", default="slurm", help="submitit's job folder")
    return p


def main(argv: list[str]) -> int:
    args = grid_parser().parse_args(argv)
    sweep = load_sweep(args.sweep)
    if args.count is not None and args.count < 1:
        raise BenchError(f"--count={args.count} must be >= 1")
    if args.launcher == "slurm":
        if args.dry_run:
            raise BenchError("--dry-run lists cells locally: leave out --launcher=slurm")
        if args.workers is not None and args.gpus_per_node > 0:
            raise BenchError(
                "with --launcher=slurm give --gpus_per_node (and --per_device), not --workers"
            )
        if sweep.method == "grid":
            grid_jobs(sweep, args.results_dir, args.wandb)  # every cell valid before submitting
        jobs = submit_slurm(args, sweep.study)
        print(
            f"submitted {len(jobs)} SLURM job(s) for study {sweep.study}: {', '.join(j.job_id for j in jobs)}"
        )
        print(
            f"each runs: bench grid {shlex.join(node_argv(args))}   (job files in {args.slurm_dir}/)"
        )
        return 0
    if args.dry_run:
        return dry_run(sweep, args)
    slots = slots_for(args.workers, args.devices, args.per_device)
    if sweep.method == "grid":
        jobs = grid_jobs(sweep, args.results_dir, args.wandb)
        total = len(jobs) if args.count is None else min(args.count, len(jobs))
        runner = Runner(slots, count=args.count, grace_s=args.grace, label=sweep.study, total=total)
        done = sum(job.done() for job in jobs)
        runner.say(f"{len(jobs)} cells, {done} done, {len(jobs) - done} to run, {len(slots)} at once; "
                   f"records in {jobs[0].records_dir}" if jobs else "no cells")
        batches = iter([jobs])
        outcome = runner.run(lambda n: next(batches, []))
    else:
        if args.count is None:
            raise BenchError(f"a {sweep.method} sweep has no fixed size: give --count N")
        records_dir = (
            Path(args.results_dir) if args.results_dir else Path(to_cell(_first(sweep)).records_dir)
        )
        source = Proposals(sweep, records_dir, args.results_dir, args.wandb)
        runner = Runner(
            slots, count=args.count, grace_s=args.grace, label=sweep.study, total=args.count
        )
        outcome = runner.run(source, on_finish=source.finished)
    return outcome.exit_code


def _first(sweep: Sweep) -> dict[str, Any]:
    return expand(sweep, [], 1)[0]


def dry_run(sweep: Sweep, args: argparse.Namespace) -> int:
    if sweep.method == "grid":
        proposals = expand(sweep)
        if args.count is not None:
            proposals = proposals[: args.count]
        what = f"{len(proposals)} cells"
    else:
        proposals = expand(sweep, finished_runs_for(sweep, args), args.count or 5)
        what = f"{len(proposals)} sample proposals (the engine draws new ones each time; --count bounds a run)"
    print(f"study {sweep.study}: method {sweep.method}, {what}")
    invalid, done, shown = [], 0, None
    for params in proposals:
        label = " ".join(f"{k}={params[k]}" for k in sweep.varied if k in params)
        try:
            job = make_job(sweep, params, args.results_dir, args.wandb)
        except BenchError as e:
            invalid.append(str(e))
            print(f"  INVALID  {label}: {str(e).rsplit(': ', 1)[-1]}")
            continue
        shown = shown or job
        state = "done" if job.done() else "todo"
        done += state == "done"
        print(f"  {state:<8} {job.run_id:<32} {label}")
    if shown is not None:
        print(f"records: {shown.records_dir}   logs: {shown.log_path.parent}")
        print(f"command: {shlex.join(shown.command)}")
    if invalid:
        raise BenchError(
            f"{len(invalid)} of {len(proposals)} cells are invalid; first: {invalid[0]}"
        )
    print(f"{len(proposals)} cells: {done} done, {len(proposals) - done} to run")
    return 0


def finished_runs_for(sweep: Sweep, args: argparse.Namespace) -> list:
    records_dir = (
        Path(args.results_dir) if args.results_dir else Path(to_cell(_first(sweep)).records_dir)
    )
    return finished_runs(sweep, records_dir)


# ---------------------------------------------------------------------- bench sweep
def agent_lines(sweep_path: str, gpus: int = 1) -> list[str]:
    """The command to start on each machine: one agent per GPU."""
    if gpus <= 1:
        return [f"wandb agent {sweep_path}"]
    return [f"CUDA_VISIBLE_DEVICES={i} wandb agent {sweep_path} &" for i in range(gpus)]


def sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench sweep",
        description="create the sweep on W&B and print the agent command for each machine",
    )
    p.add_argument("sweep", help="a sweep YAML, e.g. sweeps/cifar10.yaml")
    p.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    p.add_argument(
        "--project", default=None, help="W&B project (default: the YAML's project, else bench)"
    )
    p.add_argument("--gpus", type=int, default=1, help="GPUs per machine: one agent line each")
    return p


def sweep_main(argv: list[str]) -> int:
    args = sweep_parser().parse_args(argv)
    sweep = load_sweep(args.sweep)
    if sweep.method == "grid":
        jobs = grid_jobs(sweep)  # every cell valid before the server sees the sweep
        print(f"study {sweep.study}: {len(jobs)} cells, all valid")
    else:
        make_job(sweep, _first(sweep))
    project = args.project or sweep.config.get("project") or "bench"
    entity = args.entity or sweep.config.get("entity")
    sweep_id = create_sweep(sweep.config, entity, project)
    path = f"{entity}/{project}/{sweep_id}" if entity else f"{project}/{sweep_id}"
    print(f"created sweep {path}")
    print("start on each machine (records stay on it; gather them with `bench pull`):")
    for line in agent_lines(path, args.gpus):
        print(f"  {line}")
    return 0


def create_sweep(config: dict[str, Any], entity: str | None, project: str) -> str:
    """``wandb.sweep``; without credentials or a server it fails in one line, never prompts."""
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        logged_in = wandb.login(prompt=False, verify=False)
    except TypeError:  # an older wandb without `prompt`: look for a key ourselves
        logged_in = bool(os.environ.get("WANDB_API_KEY")) or Path("~/.netrc").expanduser().exists()
    except Exception as e:
        raise BenchError(f"could not log in to W&B: {str(e).strip().splitlines()[0]}") from None
    if not logged_in:
        raise BenchError(
            "no W&B credentials: run `wandb login` or set WANDB_API_KEY (bench grid runs a sweep offline)"
        )
    try:
        sweep_id = wandb.sweep(sweep=dict(config), entity=entity, project=project)
    except Exception as e:  # wandb raises UsageError, AuthenticationError, CommError, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"could not create the sweep on W&B: {msg}") from None
    if not sweep_id:
        raise BenchError("could not create the sweep on W&B (no sweep id came back)")
    return sweep_id


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
