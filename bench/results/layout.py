"""The study folder: every path under ``results/<study>/`` has one owner, this class.

    results/<study>/
      runs/<run_id>.json          one record per cell (the records folder)
      runs/.locks/<run_id>.lock   held by the process training the cell (names its host and pid)
      runs/.corrupt/              damaged records, moved aside by the record reader
      checkpoints/<run_id>/       best.ckpt, attempts.json (and finetune/); while training also
                                  last.ckpt, prev.ckpt (a pack's: pack-last.ckpt, pack-prev.ckpt);
                                  checkpoints-<name>/ for the records folder <name>
      logs/<run_id>.log           each cell's output when the grid runner started it
      probes/<run_id>/            bench probe: figures and probe.json
      sweeps/<name>.yaml          every sweep bench grid ran into the study (its expected grid)
      summary.csv fits.json report.md figures/   bench analyze

Two names, used the same way by every command: ``study_dir`` is ``results/<study>`` and
``records_dir`` is the folder of records inside it (``runs/`` unless a command was given
another one with ``--results_dir``, in which case the study folder is its parent). Checkpoints
belong to a records folder: those of ``runs/`` are in ``checkpoints/``, those of another records
folder ``<name>`` in ``checkpoints-<name>/``, so two records folders in one study folder never
train, resume or overwrite one cell's checkpoints together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESULTS_ROOT = Path("results")
RECORDS = "runs"


@dataclass(frozen=True)
class StudyDir:
    study_dir: Path
    records_dir: Path

    @classmethod
    def at(cls, study_dir: str | os.PathLike) -> StudyDir:
        return cls(Path(study_dir), Path(study_dir) / RECORDS)

    @classmethod
    def of_study(cls, study: str, results_root: str | os.PathLike = RESULTS_ROOT) -> StudyDir:
        return cls.at(Path(results_root) / study)

    @classmethod
    def of_records(cls, records_dir: str | os.PathLike) -> StudyDir:
        records = Path(records_dir)
        return cls(records.parent, records)

    # ------------------------------------------------------------------ per cell
    def record(self, run_id: str) -> Path:
        return self.records_dir / f"{run_id}.json"

    def lock(self, run_id: str) -> Path:
        return self.records_dir / ".locks" / f"{run_id}.lock"

    def checkpoints(self, run_id: str) -> Path:
        name = self.records_dir.name
        return (
            self.study_dir / ("checkpoints" if name == RECORDS else f"checkpoints-{name}") / run_id
        )

    def log(self, run_id: str) -> Path:
        return self.study_dir / "logs" / f"{run_id}.log"

    def probes(self, run_id: str) -> Path:
        return self.study_dir / "probes" / run_id

    def sweep_copy(self, name: str) -> Path:
        return self.study_dir / "sweeps" / f"{name}.yaml"

    # ------------------------------------------------------------------ the analysis
    @property
    def figures(self) -> Path:
        return self.study_dir / "figures"

    @property
    def summary_csv(self) -> Path:
        return self.study_dir / "summary.csv"

    @property
    def fits_json(self) -> Path:
        return self.study_dir / "fits.json"

    @property
    def report_md(self) -> Path:
        return self.study_dir / "report.md"
