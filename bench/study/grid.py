"""``bench grid``: run every cell of a study's sweep YAML that is not done yet, locally or on SLURM.

    bench grid sweeps/smoke.yaml --dry-run          # the cells, validated, and which are done
    bench grid sweeps/smoke.yaml --workers 2        # run every cell not done yet
    bench grid sweeps/cifar10.yaml --devices 0,1,2,3 --per_device 2
    bench grid sweeps/cifar10.yaml --devices 0 --set data_dir=/data/cifar10-jpeg   # a runtime field
    bench grid sweeps/cifar10-cpu-permuted-tuned-vit.yaml --adopt results/cifar10-cpu-permuted
    bench grid sweeps/cifar10.yaml --launcher=slurm --partition gpu --nodes 4 --gpus_per_node 8

Expansion and command rendering: :mod:`bench.study.sweep_config`; cells to jobs:
:mod:`bench.study.jobs`; processes, locks and progress: :mod:`bench.study.runner`; SLURM
through submitit: :mod:`bench.study.slurm`. The same YAML as a W&B sweep: ``bench sweep``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.clock import fmt_duration
from bench.errors import ArgumentParser, BenchError, StorageError
from bench.results.layout import StudyDir
from bench.results.records import atomic_write_text
from bench.study import adopt
from bench.study.estimate import Cost, grid_cost
from bench.study.jobs import (
    Proposals,
    check_unique,
    finished_runs,
    grid_jobs,
    make_job,
    parse_settings,
    records_dir_for,
)
from bench.study.runner import Runner, slots_for
from bench.study.slurm import node_argv, submit_slurm
from bench.study.sweep_config import Sweep, expand, load_sweep, to_cell
from bench.study.worker import grid_workers


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
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
        "--set",
        dest="settings",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="a runtime field for every cell, appended to each command (repeatable), e.g. "
        "--set data_dir=/data/cifar10-jpeg --set compile_mode=reduce-overhead",
    )
    p.add_argument(
        "--adopt",
        action="append",
        default=None,
        metavar="STUDY_DIR",
        help="take over the finished cells another study holds with the same run_id instead of "
        "training them (repeatable; grid sweeps)",
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
    p.add_argument(
        "--worker",
        action="store_true",
        help="one long-lived process per slot runs cell after cell (data and set-up kept)",
    )
    p.add_argument(
        "--pack",
        type=int,
        default=1,
        help="with --worker: train up to G cells of one shape (seeds, n_train) as one model",
    )
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    _add_slurm_arguments(p)
    return p


def _add_slurm_arguments(p: argparse.ArgumentParser) -> None:
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


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = parse_settings(args.settings)
    sweep = load_sweep(args.sweep)
    if args.count is not None and args.count < 1:
        raise BenchError(f"--count={args.count} must be >= 1")
    if args.adopt and sweep.method != "grid":
        raise BenchError(f"--adopt takes a grid sweep; {sweep.path} is {sweep.method}")
    folders = adopt.sources(args.adopt)
    if folders and not args.dry_run:  # before any launcher: its nodes find those cells done
        jobs = grid_jobs(sweep, args.results_dir, args.wandb, settings)
        keep_sweep(sweep, records_dir_for(sweep, args.results_dir))
        adopt.adopt(jobs, folders)
    if args.launcher == "slurm":
        return _submit(sweep, args, settings)
    if args.dry_run:
        return dry_run(sweep, args, settings, folders)
    slots = slots_for(args.workers, args.devices, args.per_device)
    if args.worker:
        if sweep.method == "grid":
            keep_sweep(sweep, records_dir_for(sweep, args.results_dir))
        return grid_workers(sweep, args, slots, settings)
    if args.pack != 1:
        raise BenchError("--pack needs --worker (packing happens inside a worker)")
    if sweep.method == "grid":
        return _run_grid(sweep, args, slots, settings)
    return _run_search(sweep, args, slots, settings)


def _submit(sweep: Sweep, args, settings: dict) -> int:
    """--launcher=slurm: one job per node, each running this command with the same sweep."""
    if args.dry_run:
        raise BenchError("--dry-run lists cells locally: leave out --launcher=slurm")
    if args.workers is not None and args.gpus_per_node > 0:
        raise BenchError(
            "with --launcher=slurm give --gpus_per_node (and --per_device), not --workers"
        )
    if sweep.method == "grid":
        grid_jobs(sweep, args.results_dir, args.wandb, settings)  # all valid before submitting
    jobs = submit_slurm(args, sweep.study, main)
    print(
        f"submitted {len(jobs)} SLURM job(s) for study {sweep.study}: {', '.join(j.job_id for j in jobs)}"
    )
    print(f"each runs: bench grid {shlex.join(node_argv(args))}   (job files in {args.slurm_dir}/)")
    return 0


def _run_grid(sweep: Sweep, args, slots, settings: dict) -> int:
    """Every cell of a grid not done yet, ``len(slots)`` at a time."""
    jobs = grid_jobs(sweep, args.results_dir, args.wandb, settings)
    keep_sweep(sweep, records_dir_for(sweep, args.results_dir))
    total = len(jobs) if args.count is None else min(args.count, len(jobs))
    runner = Runner(slots, count=args.count, grace_s=args.grace, label=sweep.study, total=total)
    done = sum(job.done() for job in jobs)
    runner.say(
        f"{len(jobs)} cells, {done} done, {len(jobs) - done} to run, {len(slots)} at once; "
        f"records in {jobs[0].records_dir}"
        if jobs
        else "no cells"
    )
    batches = iter([jobs])
    return runner.run(lambda n: next(batches, [])).exit_code


def _run_search(sweep: Sweep, args, slots, settings: dict) -> int:
    """A random or Bayesian sweep: ``--count`` cells proposed by W&B's sweeps engine."""
    if args.count is None:
        raise BenchError(f"a {sweep.method} sweep has no fixed size: give --count N")
    records_dir = records_dir_for(sweep, args.results_dir)
    source = Proposals(sweep, records_dir, args.results_dir, args.wandb, settings)
    runner = Runner(
        slots, count=args.count, grace_s=args.grace, label=sweep.study, total=args.count
    )
    return runner.run(source, on_finish=source.finished).exit_code


def keep_sweep(sweep: Sweep, records_dir: Path) -> None:
    """A copy of the sweep in the study folder: `bench analyze` reads the grid the study should
    hold from it (several sweeps may feed one study, each keeps its own copy)."""
    name = sweep.config.get("name") or sweep.path.stem
    try:
        atomic_write_text(StudyDir.of_records(records_dir).sweep_copy(name), sweep.path.read_text())
    except StorageError as e:  # only the analysis's list of missing cells needs it: go on
        print(f"warning: {e}; bench analyze will infer the grid from the records", file=sys.stderr)


def dry_run(
    sweep: Sweep, args: argparse.Namespace, settings: dict[str, str], sources: list[Path]
) -> int:
    """The cells, validated, and each one's state (``sources``: the --adopt record folders)."""
    if sweep.method == "grid":
        proposals = expand(sweep)
        if args.count is not None:
            proposals = proposals[: args.count]
        what = f"{len(proposals)} cells"
    else:
        proposals = expand(
            sweep, finished_runs(sweep, records_dir_for(sweep, args.results_dir)), args.count or 5
        )
        what = f"{len(proposals)} sample proposals (the engine draws new ones each time; --count bounds a run)"
    print(f"study {sweep.study}: method {sweep.method}, {what}")
    invalid, done, adopted, shown, cells, jobs, to_run = [], 0, 0, None, [], [], []
    for params in proposals:
        label = " ".join(f"{k}={params[k]}" for k in sweep.varied if k in params)
        try:
            job = make_job(sweep, params, args.results_dir, args.wandb, settings)
        except BenchError as e:
            invalid.append(str(e))
            print(f"  INVALID  {label}: {str(e).rsplit(': ', 1)[-1]}")
            continue
        shown = shown or job
        cells.append(to_cell({**params, **settings}, args.results_dir))
        jobs.append(job)
        state = job.state(quarantine=False)  # a dry run moves nothing
        state = "todo" if state == "failed" else state
        if state == "todo" and adopt.adoptable(job, sources):
            state = "adopt"
        done += state == "done"
        adopted += state == "adopt"
        if state == "todo":
            to_run.append(cells[-1])
        print(f"  {state:<8} {job.run_id:<32} {label}")
    if shown is not None:
        print(f"records: {shown.records_dir}   logs: {shown.log_path.parent}")
        print(f"command: {shlex.join(shown.command)}")
    if invalid:
        raise BenchError(
            f"{len(invalid)} of {len(proposals)} cells are invalid; first: {invalid[0]}"
        )
    if sweep.method == "grid":
        check_unique(sweep, jobs)  # the same check as the real grid's
    corrupt = sum(job.state(quarantine=False) == "corrupt" for job in jobs)
    print(
        f"{len(proposals)} cells: {done} done, "
        + (f"{adopted} to adopt, " if args.adopt else "")
        + f"{len(proposals) - done - adopted - corrupt} to run"
        + (f", {corrupt} with a damaged record (retrain with bench run --force)" if corrupt else "")
    )
    print(budget_line(grid_cost(cells), grid_cost(to_run)))
    return 0


def budget_line(whole: Cost, left: Cost) -> str:
    """The grid's images seen, and the share of it and of GPU time its cells still to train take:
    what a chunk of GPU time must cover."""
    return (
        f"budget: {whole.images / 1e6:,.1f}M images seen in all, {left.images / 1e6:,.1f}M of them "
        f"left to run; about {fmt_duration(left.gpu_s)} of H200 time for those, one cell at a time "
        "(single-cell rates measured at batch 256, basic recipe; several cells per GPU run faster)"
    )
