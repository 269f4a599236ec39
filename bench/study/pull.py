"""``bench pull``: rebuild records from W&B runs, online or from offline run directories.

    bench pull --wandb=ENTITY/PROJECT [--sweep=ID] [--results_dir=DIR]
    bench pull --offline_dir=wandb/ [--results_dir=DIR]

Every ``bench run`` puts its whole record in the run's summary under ``record``; that is copied
back as it is. A run without one (an older or interrupted run) is rebuilt from its config (every
cell field) and summary metrics, and says so in ``pulled_from``. Online runs come through
``wandb.Api``; offline run directories through ``wandb leet inspect --summary --json RUN_DIR``.

Records land in ``--results_dir`` or in each study's ``results/<study>/runs``, written atomically.
A record already there is kept unless it is a failure and the pulled one is not (``--overwrite``
replaces it whatever it says), so pulling twice changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.cell.config import Cell
from bench.errors import ArgumentParser, BenchError
from bench.results import records
from bench.results.layout import StudyDir

# W&B summary key -> record metric, for runs whose summary holds no record.
SUMMARY_METRICS = {
    "test/error": "test_error",
    "test/loss": "test_loss",
    "val/error": "val_error",
    "train/loss": "train_loss",
    "epoch": "epochs",
    "trainer/global_step": "steps",
}
# A config must name these to be a cell: defaults would invent an experiment that never ran.
IDENTITY = ("study", "family", "size", "dataset", "n_train", "seed")


@dataclass
class PulledRun:
    source: str  # W&B run path or offline directory
    config: dict[str, Any]
    summary: dict[str, Any]
    state: str  # finished, failed, crashed, running, ...


# ---------------------------------------------------------------------- run -> record
def _scalar(v: Any) -> Any:
    """A summary value: ``{"min": x}`` (define_metric summaries) becomes x."""
    if isinstance(v, dict):
        for k in ("min", "best", "last", "max"):
            if k in v:
                return v[k]
        return None
    return v


def _retype(rec: dict[str, Any]) -> dict[str, Any]:
    """W&B's JSON writes 1.0 as 1: give float fields of the config and metrics their type back."""
    for name, f in Cell.__dataclass_fields__.items():
        v = rec["config"].get(name)
        if str(f.type).startswith("float") and isinstance(v, int) and not isinstance(v, bool):
            rec["config"][name] = float(v)
    metrics = rec.get("metrics") or {}
    for k in ("test_error", "test_loss", "val_error", "train_loss"):
        if isinstance(metrics.get(k), int) and not isinstance(metrics[k], bool):
            metrics[k] = float(metrics[k])
    return rec


def record_from_run(run: PulledRun) -> dict[str, Any] | None:
    """The run's record: the summary's ``record``, else rebuilt from config and summary.

    None for a run that is still going or holds no cell (nothing to record).
    """
    rec = run.summary.get("record")
    if isinstance(rec, dict) and "run_id" in rec and "config" in rec:
        return _retype(json.loads(json.dumps(rec)))  # plain dicts and lists, whatever wandb gave
    if run.state in ("running", "pending", "preempting"):
        return None
    cell = _cell_of(run)
    if cell is None:
        return None
    metrics = {m: None for m in records.METRICS}
    for key, name in SUMMARY_METRICS.items():
        if key in run.summary:
            metrics[name] = _scalar(run.summary[key])
    status = run.summary.get("status")
    if status not in records.STATUSES:
        finished_ok = run.state == "finished" and metrics["test_error"] is not None
        status = "completed" if finished_ok else "failed"
    stamp = run.summary.get("_timestamp")
    finished = (
        datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
        if isinstance(stamp, (int, float))
        else None
    )
    return records.make_record(
        run.config.get("run_id") or cell.run_id,
        cell.study,
        status,
        cell.to_dict(),
        error=None if status == "completed" else f"W&B run state {run.state}",
        params=run.config.get("params"),
        metrics=metrics,
        timing={"wall_s": _scalar(run.summary.get("_runtime"))},
        wandb={"path": run.source},
        created_at=None,
        finished_at=finished,
        pulled_from=f"W&B config and summary of {run.source} (the run has no record)",
    )


def _cell_of(run: PulledRun) -> Cell | None:
    """The cell a run's config describes; None, said on stderr, when it describes none."""
    known = {
        k: v for k, v in run.config.items() if k in Cell.__dataclass_fields__ and v is not None
    }
    lacking = [k for k in IDENTITY if k not in known]
    if lacking:  # a run killed before its config was written: nothing to rebuild it from
        print(
            f"bench pull: skipping {run.source}: its config has no {lacking[0]!r}", file=sys.stderr
        )
        return None
    try:
        return Cell.from_dict(known)
    except BenchError as e:
        print(f"bench pull: skipping {run.source}: its config is not a cell ({e})", file=sys.stderr)
        return None


def store(rec: dict[str, Any], results_dir: str | None, overwrite: bool = False) -> str:
    """Write one record; returns what happened: new, updated or kept."""
    dest = (
        Path(results_dir)
        if results_dir
        else StudyDir.of_study(rec.get("study") or "default").records_dir
    )
    path = records.record_path(dest, rec["run_id"])
    old = records.load_record(path)  # a damaged one is moved aside: the pulled record rebuilds it
    if old is not None and not overwrite:
        if old == rec or old.get("status") in records.DONE or rec.get("status") not in records.DONE:
            return "kept"
        state = "updated"
    else:
        state = "updated" if old is not None else "new"
    records.write_record(rec, dest)
    return state


# ---------------------------------------------------------------------- sources
def wandb_command() -> list[str]:
    exe = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "wandb"]


def offline_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Run directories (``offline-run-*``, ``run-*``) under ``root``, each once."""
    root = Path(root)
    if not root.exists():
        raise BenchError(f"--offline_dir {root} does not exist")
    files = [root] if root.suffix == ".wandb" else sorted(root.rglob("*.wandb"))
    seen, dirs = set(), []
    for f in files:
        d = f.parent.resolve()
        if d not in seen:
            seen.add(d)
            dirs.append(d)
    return dirs


def inspect_offline(run_dir: Path) -> PulledRun:
    """One offline run through ``wandb leet inspect --summary --json``."""
    cmd = [*wandb_command(), "leet", "inspect", "--summary", "--json", str(run_dir)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
    )
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise BenchError(f"{' '.join(cmd[-5:])} failed: {why[-1] if why else proc.returncode}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"wandb leet inspect printed no JSON for {run_dir}") from None
    return PulledRun(
        source=str(run_dir),
        config=data.get("config") or {},
        summary=data.get("summary") or {},
        state=data.get("state") or "unknown",
    )


def offline_runs(root: str) -> Iterator[PulledRun]:
    for d in offline_run_dirs(root):
        try:
            yield inspect_offline(d)
        except BenchError as e:
            print(f"bench pull: skipping {d}: {e}", file=sys.stderr)


def online_runs(path: str, sweep: str | None) -> Iterator[PulledRun]:
    """Runs of ENTITY/PROJECT (or of one sweep in it) through ``wandb.Api``."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise BenchError(f"--wandb={path!r} must be ENTITY/PROJECT")
    try:
        import wandb

        api = wandb.Api(timeout=60)
        runs = api.sweep(f"{path}/{sweep}").runs if sweep else api.runs(path)
        for run in runs:
            summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
            yield PulledRun(
                source="/".join(run.path),
                config=dict(run.config),
                summary=dict(summary),
                state=run.state,
            )
    except BenchError:
        raise
    except Exception as e:  # no credentials, no server, no such project: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"could not read runs from W&B {path}: {msg}") from None


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="bench pull", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from the W&B server")
    src.add_argument(
        "--offline_dir",
        "--offline-dir",
        metavar="DIR",
        help="read offline run directories (e.g. wandb/) with `wandb leet inspect`",
    )
    p.add_argument("--sweep", metavar="ID", help="only the runs of this sweep (with --wandb)")
    p.add_argument("--study", help="only records of this study")
    p.add_argument(
        "--results_dir",
        "--results-dir",
        metavar="DIR",
        help="where records go (default: results/<study>/runs of each record)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace records that are already there"
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.sweep and not args.wandb:
        raise BenchError("--sweep needs --wandb=ENTITY/PROJECT")
    runs = online_runs(args.wandb, args.sweep) if args.wandb else offline_runs(args.offline_dir)
    counts = {"new": 0, "updated": 0, "kept": 0, "skipped": 0}
    for run in runs:
        rec = record_from_run(run)
        if rec is None or (args.study and rec.get("study") != args.study):
            counts["skipped"] += 1
            continue
        counts[store(rec, args.results_dir, args.overwrite)] += 1
    pulled = counts["new"] + counts["updated"] + counts["kept"]
    print(
        f"pulled {pulled} records: {counts['new']} new, {counts['updated']} updated, "
        f"{counts['kept']} already there; {counts['skipped']} runs without a cell or still running"
    )
    return 0
