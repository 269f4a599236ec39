"""Run cells as processes: N at a time, spread over GPUs, safe to interrupt and to run twice.

Each cell runs its sweep's ``command:`` (rendered as a W&B agent renders it) in its own process
group, stdout and stderr to ``<study>/logs/<run_id>.log``. Three rules make a grid safe:

- **done is a record**: a cell whose record says completed (or diverged) is never started;
- **one trainer per cell**: before starting a cell the runner takes an exclusive ``fcntl`` lock on
  ``<records>/.locks/<run_id>.lock``; the cell's process inherits the lock, so it is held for
  as long as the cell runs, even if the runner dies. A locked cell is skipped and revisited;
- **interrupt, then rerun**: SIGINT/SIGTERM stop the running cells (the same signal, then SIGKILL
  after a grace period); a rerun skips completed cells and re-runs the others, which resume from
  their own checkpoints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench.clock import fmt_duration, utc_now
from bench.errors import STORAGE_EXIT, BenchError, StorageError, is_storage
from bench.results import records
from bench.results.layout import StudyDir
from bench.results.locks import LOCK_FD_ENV, is_locked, release, try_lock
from bench.study.display import (
    GridDisplay,
    GridState,
    cell_progress,
    plan_eta,
    total_rate,
)
from bench.study.procs import die_with_parent, foreign_cells_here, write_owner

REVISIT_S = 2.0  # how often a cell locked by another runner is looked at again
GRACE_S = 30.0  # after forwarding an interrupt, wait this long before SIGKILL


@dataclass
class Job:
    """One cell to run: its parameters, identity, command and its study folder."""

    params: dict[str, Any]
    run_id: str
    study: str
    folder: StudyDir
    command: list[str]
    cost: float | None = None  # estimated work, for the ETA (estimate.relative_cost)

    @property
    def model(self) -> str:
        """The rung the cell trains (family-size): the ETA measures its speed per rung."""
        return f"{self.params.get('family')}-{self.params.get('size')}"

    @property
    def records_dir(self) -> Path:
        return self.folder.records_dir

    @property
    def lock_path(self) -> Path:
        return self.folder.lock(self.run_id)

    @property
    def log_path(self) -> Path:
        return self.folder.log(self.run_id)

    @property
    def record_path(self) -> Path:
        return self.folder.record(self.run_id)

    def done(self) -> bool:
        return records.is_done(self.records_dir, self.run_id)

    def state(self, quarantine: bool = True) -> str:
        """done, failed, corrupt (left alone: retraining needs --force) or todo."""
        return records.cell_state(self.records_dir, self.run_id, quarantine)


def device_env(device: str | None) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for one cell; ``device`` counts as CUDA counts in this process."""
    if device is None:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        if device.isdigit() and int(device) < len(ids):
            device = ids[int(device)]
    return {"CUDA_VISIBLE_DEVICES": device}


def child_env(device: str | None, cpu_slots: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update(device_env(device))
    if device is None and cpu_slots > 1 and "OMP_NUM_THREADS" not in env:
        # N cells on the CPU share its cores: N processes of all-core thread pools thrash.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_slots))
    # `bench` and `python` of this interpreter, even when its venv is not activated.
    bindir = os.path.dirname(sys.executable)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def failure_record(job: Job, error: str) -> dict[str, Any]:
    """What the runner writes when a cell's process ended without a record of its own."""
    return records.make_record(
        job.run_id, job.study, "failed", job.params, error=error, command=job.command
    )


def slots_for(workers: int | None, devices: str | None, per_device: int) -> list[str | None]:
    """One entry per concurrent cell: ``--devices 0,1 --per_device 2`` -> [0, 1, 0, 1]."""
    if per_device < 1:
        raise BenchError(f"--per_device={per_device} must be >= 1")
    if devices:
        ids = [d.strip() for d in devices.split(",") if d.strip()]
        if not ids:
            raise BenchError(f"--devices={devices!r} names no device")
        if workers is not None and workers != len(ids) * per_device:
            raise BenchError(
                f"--workers={workers} disagrees with --devices={devices} x --per_device={per_device}: give one"
            )
        return [d for _ in range(per_device) for d in ids]
    workers = 1 if workers is None else workers
    if workers < 1:
        raise BenchError(f"--workers={workers} must be >= 1")
    return [None] * workers


@dataclass
class Running:
    job: Job
    proc: subprocess.Popen
    slot: str | None
    lock_fd: int
    log: TextIO
    started: float


@dataclass
class Outcome:
    """What one runner did: run_ids by how they ended."""

    completed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, why)
    skipped: list[str] = field(default_factory=list)  # done before this runner looked
    elsewhere: list[str] = field(default_factory=list)  # finished by another runner
    interrupted: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # damaged record moved aside: not retrained
    storage: list[str] = field(default_factory=list)  # failed for a full disk or a forbidden path
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal
        if self.storage:
            return STORAGE_EXIT
        return 1 if self.failed or self.corrupt else 0


Source = Callable[[int], Iterable[Job]]


class Runner:
    """Runs jobs from ``source`` on ``slots`` (one entry per concurrent cell: a device or None).

    ``source(n)`` returns up to ``n`` more jobs (a fixed list for a grid; engine proposals for
    random and bayes sweeps); ``on_finish(job)`` lets the source learn from a finished cell.
    """

    def __init__(
        self,
        slots: list[str | None],
        *,
        count: int | None = None,
        grace_s: float = GRACE_S,
        out: TextIO | None = None,
        label: str = "grid",
        total: int | None = None,
    ):
        self.free: list[str | None] = list(slots)
        self.n_slots = len(slots)
        self.count = count
        self.grace_s = grace_s
        self.out = out or sys.stderr
        self.label = label
        self.total = total
        self.started_at = time.time()
        self.running: dict[str, Running] = {}
        self.outcome = Outcome()
        self.walls: list[tuple[float, float | None, str]] = []  # (wall, cost, model) per cell done
        self.queue: deque[Job] = deque()
        self.waiting: dict[
            str, tuple[Job, float]
        ] = {}  # locked elsewhere: run_id -> (job, next look)
        self.launched = 0
        self.exhausted = False
        self._stop: int | None = None
        self.lock_dirs: set[Path] = set()
        self._foreign: tuple[float, int] = (0.0, 0)  # (when counted, live cells of other runners)
        self._held_back = False  # said so since the last start
        self.display = GridDisplay(label, total, self.out)  # a live bar on a terminal

    # ------------------------------------------------------------------ reporting
    def say(self, msg: str) -> None:
        self.display.say(msg)

    def progress(self, changed: bool = True) -> None:
        if not self.display.due(changed):
            return  # reading the cells' logs for their progress only when it is drawn
        o = self.outcome
        now = time.time()
        cells = [(r, *cell_progress(r.job.log_path)) for r in self.running.values()]
        running = [(now - r.started, frac, r.job.cost, r.job.model) for r, frac, _ in cells]
        queued = [(j.cost, j.model) for j in self.queue]
        state = GridState(
            done=len(o.completed) + len(o.skipped) + len(o.elsewhere),
            total=self.total,
            running=len(self.running),
            failed=len(o.failed),
            queued=len(self.queue),
            elapsed=now - self.started_at,
            eta=plan_eta(running, queued, self.walls, self.n_slots),
            images_per_s=total_rate([rate for _, _, rate in cells]),
        )
        self.display.show(state)

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, frame) -> None:
        if self._stop is not None:  # second signal: no more waiting
            for r in self.running.values():
                _signal_group(r.proc, signal.SIGKILL)
        self._stop = signum

    # ------------------------------------------------------------------ one cell
    def _start(self, job: Job, slot: str | None, lock_fd: int) -> None:
        device = (
            f" CUDA_VISIBLE_DEVICES={device_env(slot)['CUDA_VISIBLE_DEVICES']}"
            if slot is not None
            else ""
        )
        try:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.log_path, "a")
            log.write(
                f"=== {utc_now()} {os.uname().nodename} pid {os.getpid()}{device}\n$ {' '.join(job.command)}\n"
            )
            log.flush()
        except OSError as e:  # a full disk: this cell cannot run, the others may
            release(lock_fd)
            self.free.append(slot)
            self._fail(job, str(StorageError(job.log_path, e)), time.time(), storage=True)
            return
        try:
            proc = subprocess.Popen(
                job.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**child_env(slot, self.n_slots), LOCK_FD_ENV: str(lock_fd)},
                start_new_session=True,
                pass_fds=(lock_fd,),
                preexec_fn=die_with_parent(),  # an orphan would keep its lock and its slot
            )
            write_owner(lock_fd, proc.pid)
        except OSError as e:
            log.write(f"could not start: {e}\n")
            log.close()
            self._fail(job, f"could not start {job.command[0]!r}: {e.strerror or e}", time.time())
            release(lock_fd)
            self.free.append(slot)
            return
        self.running[job.run_id] = Running(job, proc, slot, lock_fd, log, time.time())
        where = f" on cuda:{slot}" if slot is not None else ""
        self.say(f"start {job.run_id}{where} (log {job.log_path})")

    def _fail(self, job: Job, why: str, since: float, storage: bool = False) -> None:
        """Count a failure; write a failed record unless the cell wrote one since ``since``."""
        rec = job.record_path
        own = records.load_record(rec)
        fresh = own is not None and rec.stat().st_mtime >= since
        if fresh and own.get("status") == "failed":
            if own.get("error"):
                why = f"{why}: {str(own['error']).splitlines()[0][:200]}"
        elif not job.done():
            try:
                records.write_record(failure_record(job, why), job.records_dir)
            except StorageError as e:
                why, storage = f"{why}; no record either ({e})", True
        if storage:
            self.outcome.storage.append(job.run_id)
        self.outcome.failed.append((job.run_id, why))
        self.say(f"FAILED {job.run_id}: {why} (log {job.log_path})")

    def _reap(self, r: Running, interrupted: bool) -> None:
        rc = r.proc.returncode
        try:  # the log is a courtesy: a full disk must not stop the runner here
            r.log.write(f"=== exit {rc}\n")
            r.log.close()
        except (OSError, ValueError):
            pass
        job = r.job
        wall = time.time() - r.started
        if job.done():  # done is a record, whatever the exit code (a signal may follow it)
            self.outcome.completed.append(job.run_id)
            self.walls.append((wall, job.cost, job.model))
            self.say(f"done {job.run_id} in {fmt_duration(wall)}" + (f" (exit {rc})" if rc else ""))
        elif interrupted:
            self.outcome.interrupted.append(job.run_id)
            self.say(f"stopped {job.run_id} (exit {rc}); rerun to resume it")
        elif rc == 0:
            self._fail(
                job, f"exited 0 but left no completed record at {job.record_path}", r.started
            )
        elif rc == STORAGE_EXIT and "cannot write" in (last := _last_line(job.log_path)):
            self._fail(job, f"exit code {rc}: {last}", r.started, storage=True)
        else:
            self._fail(job, f"exit code {rc}", r.started)
        release(r.lock_fd)  # after the record is final: a waiting runner then sees it
        del self.running[job.run_id]
        self.free.append(r.slot)

    # ------------------------------------------------------------------ the loop
    def run(self, source: Source, on_finish: Callable[[Job], None] | None = None) -> Outcome:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self._stop is None:
                changed = self._reap_finished(on_finish)
                changed |= self._fill_slots(source)
                changed |= self._revisit_waiting()
                self.progress(changed)  # the display decides how often it draws
                if self._finished():
                    break
                time.sleep(0.2)
            if self._stop is not None:
                self._shutdown()
        except (
            BaseException
        ):  # e.g. submitit's requeue exits from its signal handler: stop cells first
            if self.running:
                self._stop = self._stop or signal.SIGTERM
                self._shutdown()
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.display.close()
        self.summary()
        return self.outcome

    def _at_count(self) -> bool:
        return self.count is not None and self.launched >= self.count

    def _finished(self) -> bool:
        if self.running or self.waiting:
            return False
        return self._at_count() or (not self.queue and self.exhausted)

    def _reap_finished(self, on_finish) -> bool:
        """Reap every cell whose process has ended; True when any did."""
        ended = [r for r in self.running.values() if r.proc.poll() is not None]
        for r in ended:
            self._reap(r, interrupted=False)
            if on_finish:
                on_finish(r.job)
        return bool(ended)

    def _refill_queue(self, source: Source) -> None:
        want = (
            len(self.free)
            if self.count is None
            else min(len(self.free), self.count - self.launched)
        )
        more = list(source(want))
        self.exhausted = not more
        for job in more:
            if not self._settled(job):
                self.queue.append(job)

    def _settled(self, job: Job) -> bool:
        """True (and counted) when the cell needs no run: done, or its record damaged."""
        state = job.state()
        if state == "done":
            self.outcome.skipped.append(job.run_id)
        elif state == "corrupt":
            self.outcome.corrupt.append(job.run_id)
            self.say(
                f"{job.run_id}: its record was damaged and moved to "
                f"{job.records_dir / records.CORRUPT}; not retrained (bench run ... --force)"
            )
        return state in ("done", "corrupt")

    def _fill_slots(self, source: Source) -> bool:
        """Start queued cells on free slots (asking the source for more); True when any started."""
        started = False
        while self.free and self._stop is None and not self._at_count():
            if not self.queue and not self.exhausted:
                self._refill_queue(source)
            if not self.queue:
                break
            job = self.queue.popleft()
            if job.run_id in self.running or job.run_id in self.waiting:
                continue
            self.lock_dirs.add(job.lock_path.parent)
            if len(self.free) <= self._foreign_here():  # other runners' cells use our slots
                self.queue.appendleft(job)
                self._hold_back()
                break
            self._held_back = False
            if job.run_id in self.outcome.corrupt or self._settled(job):
                continue
            try:
                fd = try_lock(job.lock_path)
            except OSError as e:
                if not is_storage(e):
                    raise
                self._fail(job, str(StorageError(job.lock_path, e)), time.time(), storage=True)
                continue
            if fd is None:
                self.waiting[job.run_id] = (job, time.time() + REVISIT_S)
                self.say(f"{job.run_id} is being trained by another runner: revisiting it later")
                continue
            if job.done():  # finished while we were looking
                release(fd)
                self.outcome.skipped.append(job.run_id)
                continue
            self._start(job, self.free.pop(0), fd)
            self.launched += 1
            started = True
        return started

    def _hold_back(self) -> None:
        """Say once, until a cell starts here again, why queued cells wait with slots free."""
        if self._held_back:
            return
        self._held_back = True
        self.say(
            f"holding back: {self._foreign[1]} cell(s) of another runner of this study on this "
            f"host fill this runner's {len(self.free)} free slot(s); cells start here as they "
            "finish (one runner with --workers N uses the slots better)"
        )

    def _foreign_here(self) -> int:
        """Live cells of other runners on this host (counted at most every REVISIT_S)."""
        when, n = self._foreign
        if time.time() - when > REVISIT_S:
            own = {r.proc.pid for r in self.running.values()}
            n = foreign_cells_here(self.lock_dirs, own)
            self._foreign = (time.time(), n)
        return n

    def _revisit_waiting(self) -> bool:
        """Look again at cells another runner held: done there, still held, or ours to take over."""
        changed = False
        now = time.time()
        for run_id, (job, when) in list(self.waiting.items()):
            if when > now:
                continue
            if job.done():
                del self.waiting[run_id]
                self.outcome.elsewhere.append(run_id)
                changed = True
            elif is_locked(job.lock_path):
                self.waiting[run_id] = (job, now + REVISIT_S)
            else:
                del self.waiting[run_id]
                rec = job.record_path
                if rec.exists() and rec.stat().st_mtime >= self.started_at:
                    self.outcome.failed.append((run_id, "failed in another runner"))
                    self.say(f"FAILED {run_id} in another runner (record {rec})")
                else:
                    self.queue.appendleft(job)  # its runner is gone: take it over
                changed = True
        return changed

    def _shutdown(self) -> None:
        sig = self._stop
        self.outcome.signal = sig
        if self.running:
            self.say(f"{signal.Signals(sig).name}: stopping {len(self.running)} running cell(s)")
        for r in self.running.values():
            _signal_group(r.proc, sig)
        deadline = time.time() + self.grace_s
        while any(r.proc.poll() is None for r in self.running.values()) and time.time() < deadline:
            time.sleep(0.1)
        for r in self.running.values():
            if r.proc.poll() is None:
                _signal_group(r.proc, signal.SIGKILL)
                r.proc.wait()
        for r in list(self.running.values()):
            self._reap(r, interrupted=True)

    def summary(self) -> None:
        o = self.outcome
        self.say(
            f"finished: {len(o.completed)} trained, {len(o.skipped)} already done, "
            f"{len(o.elsewhere)} done by another runner, {len(o.failed)} failed"
            + (f", {len(o.interrupted)} interrupted" if o.interrupted else "")
            + (f", {len(o.corrupt)} with a damaged record (not retrained)" if o.corrupt else "")
        )
        for run_id, why in o.failed:
            self.say(f"  failed: {run_id}: {why}")


def _last_line(path: Path) -> str:
    """The last line of a cell's log: its one-line error."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "see its log"
    lines = [ln for ln in lines if not ln.startswith("=== exit")]
    return lines[-1][:300] if lines else "see its log"


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
