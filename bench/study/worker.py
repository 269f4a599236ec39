"""Long-lived workers: one process per slot runs cell after cell (``bench grid --worker``).

A ``bench run`` process per cell pays, for every cell, the imports, the dataset load, W&B and
Lightning set-up; a worker pays them once. It keeps each dataset it has loaded on its device and
trains each cell in-process through the same path as ``bench run`` (:func:`run_cell`'s steps),
so its records are the ones separate ``bench run`` calls write, plus ``execution``.

With ``--pack G`` a worker trains up to G cells that differ only in ``seed`` and ``n_train`` (and
turn out to share architecture, steps and batch) as one batched model (:mod:`bench.cell.packed`).

The rules of :mod:`bench.study.runner` hold: a worker takes a cell's lock before training it and
releases it after its record is written, skips cells that are done or locked (revisiting the
locked ones), and a killed worker leaves its cells without a record, so a rerun resumes them from
their checkpoints. A cell with a checkpoint to resume from is trained alone, never packed; a
killed pack's members (``pack-last.ckpt``) are packed again, never with fresh cells, and resume
together; members are packed by the step they resume from, so those of two killed packs that
stopped at different steps form two packs, each resuming at its own step. One that finds itself
without pack mates resumes as a pack of one rather than alone from the start, and so does a cell
trained alone whose pack checkpoints are later than its ``last.ckpt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from pathlib import Path

from bench.cell import denormals, threads
from bench.cell.config import Cell, build_parser, parse_cell_args
from bench.cell.datasets import Splits, load_splits
from bench.cell.finetune import finetune_phase
from bench.cell.packed import pack_key, resume_lone_member, resume_step, train_packed
from bench.cell.run import executed_as
from bench.cell.train import already_done, fresh_checkpoints, pick_device, prepare, train_and_record
from bench.clock import fmt_duration, utc_now
from bench.errors import ArgumentParser, BenchError
from bench.results import records
from bench.results.layout import StudyDir
from bench.results.locks import is_locked, release, try_lock
from bench.study.jobs import grid_jobs
from bench.study.runner import REVISIT_S, Job, child_env, failure_record
from bench.study.sweep_config import Sweep

SHAPE_FREE = ("seed", "n_train")  # the fields that members of one pack may differ in


def cell_of(job: Job) -> Cell:
    """The cell a job's ``bench run`` command trains, parsed as ``bench run`` parses it."""
    cmd = job.command
    head = cmd[: cmd.index("run")] if "run" in cmd else []
    if not any(Path(a).name == "bench" or a in ("bench.cli", "bench") for a in head):
        raise BenchError(f"--worker runs `bench run` commands; this sweep runs {cmd[:3]}")
    cell, _ = parse_cell_args(cmd[cmd.index("run") + 1 :], build_parser("bench run", ""))
    return cell


def shape_of(job: Job) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in job.params.items() if k not in SHAPE_FREE))


@contextlib.contextmanager
def output_to(path: Path):
    """This process's stdout and stderr (file descriptors too) appended to ``path`` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        # Python's own streams too: they need not write to fds 1 and 2 (an embedding host's)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


class CellWorker:
    """Runs cells in this process, keeping each dataset it has loaded on the training device."""

    def __init__(self, pack: int = 1, name: str = "worker"):
        self.pack, self.name = pack, name
        self.datasets: dict[tuple, Splits] = {}
        self.trained = 0

    def say(self, msg: str) -> None:
        print(f"[{self.name}] {utc_now()} {msg}", file=sys.stderr, flush=True)

    def splits(self, cell: Cell) -> Splits:
        """The decoded dataset, loaded once and moved to the device once (labels stay on the host
        for the subsets; indexing a device tensor with host indices is allowed)."""
        key = (cell.dataset, cell.data_dir, cell.cache_dir, cell.img_size, cell.device)
        if key not in self.datasets:
            s, dev = load_splits(cell), pick_device(cell)
            self.datasets[key] = Splits(
                s.train_x.to(dev), s.train_y, s.test_x.to(dev), s.test_y.to(dev), s.classes
            )
        return self.datasets[key]

    def run_alone(self, job: Job, cell: Cell, setup=None, pack_resume: bool = True) -> None:
        """One cell as a single cell, or as a pack of one when it is a killed pack member
        (``pack_resume`` off: never, as after its pack failed to run)."""
        with output_to(job.log_path):
            print(f"=== {utc_now()} {os.uname().nodename} pid {os.getpid()} ({self.name})")
            if already_done(cell):
                return
            ckpt_dir = fresh_checkpoints(cell)
            setup = setup or prepare(cell, self.splits(cell))
            resumed = pack_resume and resume_lone_member(
                setup, ckpt_dir, {"worker_cell": self.trained + 1}
            )
            if not resumed:
                phase = finetune_phase if cell.finetune_img_size else None
                mark = executed_as("worker", worker_cell=self.trained + 1)
                train_and_record(setup, ckpt_dir, phase=phase, annotate=mark)
        self.trained += 1

    def run_group(self, group: list[tuple[Job, Cell]]) -> None:
        """Cells of one shape: packed where their setups agree, the others alone."""
        alone = [(j, c) for j, c in group if _resumable(c) or c.finetune_img_size or c.force]
        rest = [(j, c) for j, c in group if (j, c) not in alone]
        for job, cell in alone:
            self.run_alone(job, cell)
        subgroups: dict[tuple, list] = {}
        for job, cell in rest:
            setup = prepare(cell, self.splits(cell))
            # killed packs' members by the step they resume from, apart from fresh cells (None):
            # a pack whose members' steps do not meet starts from step 0, losing all of them
            step = resume_step(setup, cell.folder.checkpoints(cell.run_id))
            subgroups.setdefault((pack_key(setup), step), []).append((job, cell, setup))
        for (_, step), members in subgroups.items():
            if len(members) == 1 and step is None:
                self.run_alone(*members[0])
            else:
                self.run_packed(members)

    def run_packed(self, members: list) -> None:
        names = ", ".join(j.run_id for j, _, _ in members)
        self.say(f"packing {len(members)} cells: {names}")
        ckpt_dirs = [fresh_checkpoints(c) for _, c, _ in members]
        try:
            with contextlib.ExitStack() as logs:
                logs.enter_context(output_to(members[0][0].log_path))
                train_packed(
                    [s for _, _, s in members], ckpt_dirs, {"worker_cell": self.trained + 1}
                )
            for job, _, _ in members[1:]:  # every member's log says where its output went
                with output_to(job.log_path):
                    print(f"=== packed with {members[0][0].run_id} (output in its log)")
            self.trained += len(members)
        except Exception as e:  # a pack that cannot run (memory, an op without vmap) runs alone
            self.say(f"pack failed ({e.__class__.__name__}: {e}); training its cells alone")
            for job, cell, _ in members:  # from their last.ckpt or step 0: the pack path failed
                self.run_alone(job, cell, pack_resume=False)


def _resumable(cell: Cell) -> bool:
    return (cell.folder.checkpoints(cell.run_id) / "last.ckpt").exists()


# ---------------------------------------------------------------------- one worker's loop
def work(jobs: list[Job], pack: int = 1, name: str = "worker") -> int:
    """Run every job not done, G at a time when they pack; 1 when any failed."""
    worker = CellWorker(pack, name)
    pending, waiting, failed = deque(jobs), {}, 0
    t0 = time.time()
    while pending or waiting:
        if not pending:
            time.sleep(REVISIT_S)
            for run_id, job in list(waiting.items()):
                if job.done() or not is_locked(job.lock_path):
                    del waiting[run_id]
                    if not job.done():
                        pending.append(job)  # its trainer is gone: take it over
            continue
        taken = _take(pending, waiting, pack)
        if not taken:
            continue
        try:
            cells = [(job, cell_of(job)) for job, _ in taken]
            worker.run_group(cells)
        except Exception as e:
            traceback.print_exc()
            for job, _ in taken:
                if not job.done():
                    records.write_record(
                        failure_record(job, f"{e.__class__.__name__}: {e}"), job.records_dir
                    )
        finally:
            for _, fd in taken:
                release(fd)
        for job, _ in taken:
            done = job.done()
            failed += not done
            worker.say(f"{'done' if done else 'FAILED'} {job.run_id}")
    worker.say(f"finished: {worker.trained} cells trained in {fmt_duration(time.time() - t0)}")
    return 1 if failed else 0


def _take(pending: deque, waiting: dict, pack: int) -> list[tuple[Job, int]]:
    """The next job and up to ``pack - 1`` more of its shape, each locked by this process."""
    first = pending.popleft()
    group = [first] + [j for j in pending if shape_of(j) == shape_of(first)][: pack - 1]
    for j in group[1:]:
        pending.remove(j)
    taken = []
    for job in group:
        if job.done():
            continue
        fd = try_lock(job.lock_path)
        if fd is None:
            waiting[job.run_id] = job
        elif job.done():
            release(fd)
        else:
            taken.append((job, fd))
    return taken


# ---------------------------------------------------------------------- the parent
def save_jobs(jobs: list[Job], path: Path) -> None:
    """The jobs a worker runs, as plain data: a worker needs no sweep engine to read them."""
    rows = [
        {
            "params": j.params,
            "run_id": j.run_id,
            "study": j.study,
            "study_dir": str(j.folder.study_dir),
            "records_dir": str(j.folder.records_dir),
            "command": j.command,
            "cost": j.cost,
        }
        for j in jobs
    ]
    records.atomic_write_text(path, json.dumps(rows, indent=1, default=str))


def load_jobs(path: str | Path) -> list[Job]:
    rows = json.loads(Path(path).read_text())
    return [
        Job(
            r["params"],
            r["run_id"],
            r["study"],
            StudyDir(Path(r["study_dir"]), Path(r["records_dir"])),
            r["command"],
            r.get("cost"),
        )
        for r in rows
    ]


def launch(jobs: list[Job], slots: list[str | None], pack: int, grace_s: float = 30.0) -> int:
    """One worker process per slot, each working the whole list (locks share it out); waits for
    them and forwards SIGINT/SIGTERM (then SIGKILL after ``grace_s``)."""
    logs_dir = jobs[0].log_path.parent
    logs_dir.mkdir(parents=True, exist_ok=True)
    jobs_file = logs_dir / f"worker-jobs-{os.getpid()}.json"
    save_jobs(jobs, jobs_file)
    procs = []
    for i, slot in enumerate(slots):
        log = open(logs_dir / f"worker-{i}.log", "a")
        cmd = [sys.executable, "-m", "bench.study.worker", str(jobs_file), f"--pack={pack}"]
        procs.append(
            subprocess.Popen(
                [*cmd, f"--name=w{i}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(slot, len(slots)),
                start_new_session=True,
            )
        )
        where = f" on cuda:{slot}" if slot is not None else ""
        print(f"[grid] worker w{i}{where} (log {logs_dir / f'worker-{i}.log'})", file=sys.stderr)
    stop: list[int] = []
    old = {
        s: signal.signal(s, lambda n, f: stop.append(n)) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while any(p.poll() is None for p in procs) and not stop:
            time.sleep(0.2)
        if stop:
            _stop(procs, stop[0], grace_s)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        jobs_file.unlink(missing_ok=True)
    if stop:
        return 128 + stop[0]
    return max(p.returncode for p in procs)


def _stop(procs: list[subprocess.Popen], sig: int, grace_s: float) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
    deadline = time.time() + grace_s
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def grid_workers(sweep: Sweep, args, slots: list[str | None], settings: dict[str, str]) -> int:
    """``bench grid --worker``: the parent launches one worker per slot; a child works the grid."""
    if sweep.method != "grid":
        raise BenchError(f"--worker runs grid sweeps, not {sweep.method}: leave --worker out")
    if args.pack < 1:
        raise BenchError(f"--pack={args.pack} must be >= 1")
    jobs = grid_jobs(sweep, args.results_dir, args.wandb, settings)[: args.count]
    if not jobs:
        print(f"[{sweep.study}] no cells", file=sys.stderr)
        return 0
    for job in jobs:
        cell_of(job)  # every command is a `bench run` before any worker starts
    todo = sum(not j.done() for j in jobs)
    print(
        f"[{sweep.study}] {len(jobs)} cells, {todo} to run, {len(slots)} worker(s), "
        f"pack {args.pack}; records in {jobs[0].records_dir}",
        file=sys.stderr,
    )
    t0 = time.time()
    rc = launch(jobs, slots, args.pack, args.grace)
    done = sum(j.done() for j in jobs)
    print(
        f"[{sweep.study}] finished: {done}/{len(jobs)} done in {fmt_duration(time.time() - t0)}",
        file=sys.stderr,
    )
    return rc or (0 if done == len(jobs) else 1)


def main(argv: list[str]) -> int:
    """``python -m bench.study.worker JOBS.json [--pack G] [--name w0]``: one worker (as launched)."""
    denormals.flush()  # before any torch op starts the thread pool: its threads inherit it
    p = ArgumentParser(prog="bench worker", description=main.__doc__)
    p.add_argument("jobs")
    p.add_argument("--pack", type=int, default=1)
    p.add_argument("--name", default="worker")
    args = p.parse_args(argv)
    threads.size_pool("auto")  # a CPU slot: the cores another job keeps busy are not ours
    return work(load_jobs(args.jobs), args.pack, args.name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
