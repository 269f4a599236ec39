"""``bench grid --adopt results/<study>``: take over another study's finished cells instead of
training them again.

A cell's run_id is its identity: every field but the runtime ones, and the study is a runtime
field. A finished record of the same run_id in another study is therefore the same experiment,
and a study that re-runs one family with a retuned recipe can pair it with the other family's
cells as they were trained. The adopted record is a copy (written atomically, under the cell's
lock) whose ``study`` names the new study and whose ``adopted_from`` names the study that trained
it; its checkpoint and W&B run stay where the training put them.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.results import records
from bench.results.layout import StudyDir
from bench.results.locks import release, try_lock
from bench.study.runner import Job


def sources(folders: list[str] | None) -> list[Path]:
    """The record folders of the studies given to --adopt (a study folder or its runs/)."""
    out = []
    for folder in folders or []:
        path = Path(folder)
        runs = path if path.name == "runs" else StudyDir.at(path).records_dir
        if not runs.is_dir():
            raise BenchError(f"--adopt {folder}: no records folder {runs}")
        out.append(runs)
    return out


def adoptable(job: Job, folders: list[Path]) -> dict | None:
    """The first finished record of ``job``'s run_id among ``folders`` (not its own study's)."""
    for folder in folders:
        if folder.resolve() == job.records_dir.resolve():
            continue
        rec = records.load_record(records.record_path(folder, job.run_id), quarantine=False)
        if rec is not None and rec["status"] in records.DONE and rec["run_id"] == job.run_id:
            return rec
    return None


def adopt(jobs: list[Job], folders: list[Path], say=print) -> int:
    """Copy into its own study every job's record that another study holds finished, unless the
    job is done here already (a failed record here is replaced, as a retrain would) or another
    runner holds its lock. Returns how many were adopted."""
    adopted = 0
    for job in jobs:
        if not folders or not _open(job):
            continue
        rec = adoptable(job, folders)
        if rec is None:
            continue
        fd = try_lock(job.lock_path)
        if fd is None:  # being trained here right now: leave it to that runner
            continue
        try:
            if not _open(job):  # finished while we looked
                continue
            records.write_record(
                {**rec, "study": job.study, "adopted_from": rec["study"]}, job.records_dir
            )
        finally:
            release(fd)
        adopted += 1
        say(f"adopted {job.run_id} from study {rec['study']}")
    return adopted


def _open(job: Job) -> bool:
    """Not done here, and no damaged record that only ``bench run --force`` may replace."""
    return job.state(quarantine=False) in ("todo", "failed")
