"""Write the commands for part of a sweep, rendered as a W&B agent would, for a machine that has
neither wandb nor the `sweeps` engine (a lent GPU machine): run the lines there with xargs -P.

    python benchmarks/device/cells.py sweeps/cifar10.yaml --where seed=0 size=xs,s \
        --set dataset=imagefolder data_dir=/tmp/cifar10-jpeg results_dir=/tmp/res/runs > cells.txt
"""

from __future__ import annotations

import argparse
import shlex

from bench.study.sweep_config import expand, load_sweep, render_command, to_cell


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sweep")
    p.add_argument(
        "--where", nargs="*", default=[], help="field=v1,v2: keep cells with these values"
    )
    p.add_argument("--set", nargs="*", default=[], help="field=value appended to every command")
    p.add_argument("--log_dir", default="/tmp/res/logs")
    args = p.parse_args()
    keep = {k: v.split(",") for k, v in (w.split("=", 1) for w in args.where)}
    sweep = load_sweep(args.sweep)
    for params in expand(sweep):
        if any(str(params.get(k)) not in vs for k, vs in keep.items()):
            continue
        overrides = dict(s.split("=", 1) for s in args.set)
        cell = to_cell({**params, **overrides})
        argv = render_command(sweep.command, params) + [f"--{k}={v}" for k, v in overrides.items()]
        argv = ["python", "-m", "bench.cli"] + argv[1:]  # no console script there: run the module
        print(f"{shlex.join(argv)} > {args.log_dir}/{cell.run_id}.log 2>&1")


if __name__ == "__main__":
    main()
