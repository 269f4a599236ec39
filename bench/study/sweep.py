"""``bench sweep``: the same sweep YAML created on the W&B server, with the agent line for each
machine. Records stay where each agent ran; ``bench pull`` gathers them.

    bench sweep sweeps/cifar10.yaml --entity E --project P --gpus 8
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.errors import ArgumentParser, BenchError
from bench.study.jobs import first_params, grid_jobs, make_job
from bench.study.sweep_config import load_sweep


def agent_lines(sweep_path: str, gpus: int = 1) -> list[str]:
    """The command to start on each machine: one agent per GPU."""
    if gpus <= 1:
        return [f"wandb agent {sweep_path}"]
    return [f"CUDA_VISIBLE_DEVICES={i} wandb agent {sweep_path} &" for i in range(gpus)]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
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


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    sweep = load_sweep(args.sweep)
    if sweep.method == "grid":
        jobs = grid_jobs(sweep)  # every cell valid before the server sees the sweep
        print(f"study {sweep.study}: {len(jobs)} cells, all valid")
    else:
        make_job(sweep, first_params(sweep))
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
    import wandb  # imported when a sweep is created: every other command works without it

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
