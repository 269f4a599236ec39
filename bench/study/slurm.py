"""SLURM through submitit: one array job per node, each running a local grid runner there.

The runner on each node is ``bench grid`` itself; its entry function is handed in by the caller
(``NodeRunner(entry)``), so this module never imports the CLI that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import env
from bench.errors import BenchError


class NodeRunner:
    """One SLURM job: ``entry(argv)`` in ``cwd``, sharing the grid with the others through locks.

    Checkpointable: on a timeout or preemption submitit requeues the same call, and the rerun
    skips what is done and resumes the rest.
    """

    def __init__(self, entry: Callable[[list[str]], int], commit: str | None = None):
        self.entry = entry
        self.commit = commit  # the submitting checkout's: records carry it whatever the node has

    def __call__(self, argv: list[str], cwd: str) -> int:
        os.chdir(cwd)
        if self.commit:
            os.environ[env.COMMIT_VAR] = self.commit
        code = self.entry(argv)
        if code:
            raise RuntimeError(f"bench grid {' '.join(argv)} exited {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit  # optional dependency: only a SLURM job gets here

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def node_argv(args) -> list[str]:
    """The ``bench grid`` argv each node runs: every GPU it was given, records where asked."""
    argv = [
        str(Path(args.sweep).resolve()),
        "--per_device",
        str(args.per_device),
        "--grace",
        str(args.grace),
    ]
    if args.gpus_per_node > 0:
        argv += ["--devices", args.devices or ",".join(str(i) for i in range(args.gpus_per_node))]
    else:
        argv += ["--workers", str(args.workers or 1)]
    if args.results_dir:
        argv.append(f"--results_dir={Path(args.results_dir).resolve()}")
    if args.wandb:
        argv.append(f"--wandb={args.wandb}")
    argv += [f"--set={pair}" for pair in args.settings or []]
    if args.count is not None:
        argv += ["--count", str(args.count)]
    if args.worker:  # each node runs its cells in long-lived workers
        argv += ["--worker", "--pack", str(args.pack)]
    return argv


def slurm_executor(args, name: str):
    """A submitit executor for SLURM with the job's resources (raises BenchError without SLURM)."""
    try:
        import submitit  # optional dependency (pip install 'bench[slurm]')
    except ImportError:
        raise BenchError("--launcher=slurm needs submitit: pip install 'bench[slurm]'") from None
    try:
        executor = submitit.AutoExecutor(folder=args.slurm_dir, cluster="slurm")
    except RuntimeError as e:
        raise BenchError(f"--launcher=slurm: {e}") from None
    params: dict[str, Any] = dict(
        name=f"bench-{name}",
        timeout_min=args.time,
        nodes=1,
        tasks_per_node=1,
        gpus_per_node=args.gpus_per_node,
        slurm_array_parallelism=args.nodes,
    )
    optional = dict(
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        slurm_partition=args.partition,
        slurm_account=args.account,
        slurm_qos=args.qos,
        slurm_constraint=args.constraint,
        slurm_setup=args.setup,
    )
    params.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**params)
    return executor


def submit_slurm(args, study: str, entry: Callable[[list[str]], int]) -> list:
    """Submit ``args.nodes`` array jobs, each running ``entry(node_argv(args))`` on one node."""
    if args.nodes < 1:
        raise BenchError(f"--nodes={args.nodes} must be >= 1")
    executor = slurm_executor(args, study)
    argv, cwd = node_argv(args), os.getcwd()
    try:
        jobs = executor.map_array(
            NodeRunner(entry, env.git_commit()), [argv] * args.nodes, [cwd] * args.nodes
        )
    except Exception as e:  # sbatch refused the job: its message, in one line
        msg = str(e).strip().splitlines()
        raise BenchError(f"sbatch failed: {msg[-1] if msg else type(e).__name__}") from None
    return jobs
