"""The study's own W&B run: ``bench analyze DIR --wandb=online|offline``.

One run per study, next to its cells: ``group`` = the study (the cells' group), ``job_type``
``analysis``. It holds every figure of ``figures/`` as a ``wandb.Image``, ``summary.csv`` as a
``wandb.Table``, ``fits.json`` flattened into the run summary (``fits/vit/params/b``,
``break_even/x``, ``break_even/p_no_crossing``, ...) and ``report.md``, ``fits.json`` and
``summary.csv`` as files of the run.

The run id is derived from the study's name, and the run is started with ``resume="allow"``: running
the analysis again updates the same run instead of adding one each time (offline, each run is a
new folder under ``wandb/`` with that id; ``wandb sync`` puts them all into the one run).

wandb is imported here only, when the analysis is logged: ``bench analyze`` never needs it
otherwise, and never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from bench.env import has_credentials
from bench.errors import BenchError
from bench.results.layout import StudyDir
from bench.results.records import iter_records

MODES = ("off", "online", "offline")
JOB_TYPE = "analysis"
DEFAULT_PROJECT = "bench"


def analysis_run_id(study: str) -> str:
    """A stable W&B run id for a study's analysis (ids allow letters, digits, - and _)."""
    return f"analysis-{hashlib.sha256(study.encode()).hexdigest()[:16]}"


def flat_summary(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a/b/c`` keys (sections in the W&B UI); lists and scalars as they are."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_summary(value, f"{name}/"))
        else:
            out[name] = value
    return out


def cells_project(folder: StudyDir) -> tuple[str, str | None]:
    """The project and entity most of the study's cells were logged to (the analysis joins them)."""
    configs = [r.get("config") or {} for r in iter_records(folder.study_dir)]
    projects = Counter(c.get("wandb_project") for c in configs if c.get("wandb_project"))
    entities = Counter(c.get("wandb_entity") for c in configs if c.get("wandb_entity"))
    project = projects.most_common(1)[0][0] if projects else DEFAULT_PROJECT
    return project, entities.most_common(1)[0][0] if entities else None


def check_mode(mode: str) -> None:
    """Before any work: online needs credentials (a non-interactive command never prompts)."""
    if mode == "online" and not has_credentials():
        raise BenchError(
            "--wandb=online: no W&B credentials (run `wandb login` or set WANDB_API_KEY); "
            "--wandb=offline logs here, `wandb sync` uploads later"
        )


def log_analysis(
    folder: StudyDir,
    study: str,
    mode: str,
    project: str | None = None,
    entity: str | None = None,
    headline: str | None = None,
) -> dict[str, Any]:
    """Log the analysis files of ``folder`` to the study's W&B run; where it went.

    ``headline``: the break-even in words, as the report says it (summary ``break_even_text``).
    """
    check_mode(mode)
    default_project, default_entity = cells_project(folder)
    import wandb  # only when the analysis is logged

    if wandb.run is not None:  # a run left open in this process must not take the analysis
        wandb.finish()
    try:
        run = wandb.init(
            id=analysis_run_id(study),
            resume="allow",
            project=project or default_project,
            entity=entity or default_entity,
            group=study,
            job_type=JOB_TYPE,
            name=f"{study} analysis",
            mode=mode,
            dir=os.environ.get("WANDB_DIR", "."),
        )
        _log_files(run, wandb, folder)
        run.summary["break_even_text"] = headline
        where = {"mode": mode, "id": run.id, "path": run.path if mode == "online" else None}
        where["dir"] = str(Path(run.dir).parent)
        run.finish()
    except Exception as e:  # no network, a server refusing the run: the files on disk stand
        if wandb.run is not None:
            wandb.finish(exit_code=1)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchError(f"could not log the analysis to W&B: {msg}") from None
    return where


def _log_files(run, wandb, folder: StudyDir) -> None:
    """Figures, table, fits and report into ``run``."""
    fits = json.loads(folder.fits_json.read_text())
    run.config.update(
        {"study": fits.get("study"), "bootstrap": fits.get("bootstrap")}, allow_val_change=True
    )
    media: dict[str, Any] = {
        f"figures/{png.stem}": wandb.Image(str(png)) for png in sorted(folder.figures.glob("*.png"))
    }
    media["tables/summary"] = wandb.Table(dataframe=pd.read_csv(folder.summary_csv))
    run.log(media)
    fits.pop("figures", None)  # file names: the figures themselves are the figures/* images
    run.summary.update(flat_summary(fits))
    for path in (folder.report_md, folder.fits_json, folder.summary_csv):
        run.save(str(path), base_path=str(folder.study_dir), policy="now")
