"""At home in W&B: sweeps written as W&B documents them, the study's analysis run, artifacts,
and a W&B run's config.yaml as the base of `bench run`. Real wandb, offline; no mocks."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wandb.sdk.lib.config_util import save_config_file_from_dict

from bench.analysis.wandb_run import analysis_run_id
from bench.cell.artifacts import RemoteRef, artifact_name, parse_ref
from bench.cell.checkpoints import load_run
from bench.cell.config import Cell
from bench.errors import BenchError
from bench.study.jobs import grid_jobs
from bench.study.pull import inspect_offline, wandb_command
from bench.study.sweep_config import expand, load_sweep
from tests.conftest import REPO, bench
from tests.test_analyze import write_study

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def smoke_without_study(tmp_path: Path, **params) -> Path:
    cfg = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    del cfg["parameters"]["study"]
    cfg["parameters"].update(params)
    path = tmp_path / "nostudy.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------------- 1. sweeps
def test_a_sweep_without_study_parameter_runs_as_the_study_named_by_its_name(tmp_path, capsys):
    path = smoke_without_study(tmp_path)
    sweep = load_sweep(path)
    assert sweep.study == "smoke"
    assert sweep.config["parameters"]["study"] == {"value": "smoke"}  # what `bench sweep` sends
    jobs = grid_jobs(sweep)
    assert len(jobs) == 12 and {j.study for j in jobs} == {"smoke"}
    assert all("--study=smoke" in j.command for j in jobs)  # what an agent renders, too
    assert all(j.folder.study_dir.name == "smoke" for j in jobs)
    # the same cells, in the same order, as the YAML that spells the study out
    shipped = expand(load_sweep(REPO / "sweeps" / "smoke.yaml"))
    assert [Cell.from_dict(p).run_id for p in expand(sweep)] == [
        Cell.from_dict(p).run_id for p in shipped
    ]
    # its own results folder: a `make demo` before the tests has done the repository's smoke cells
    assert bench("grid", str(path), "--dry-run", f"--results_dir={tmp_path}") == 0
    assert "12 cells: 0 done, 12 to run" in capsys.readouterr().out


def test_a_study_parameter_wins_over_the_name(tmp_path):
    sweep = load_sweep(smoke_without_study(tmp_path, study={"value": "other"}))
    assert sweep.study == "other"
    assert {Cell.from_dict(p).study for p in expand(sweep)} == {"other"}


def doc_yaml_blocks() -> list[tuple[str, str]]:
    blocks = []
    for doc in DOCS:
        for i, m in enumerate(YAML_BLOCK.finditer(doc.read_text())):
            blocks.append((f"{doc.name}#{i}", m.group(1)))
    return blocks


def test_docs_have_yaml_examples():
    assert any(name.startswith("scaling-out.md") for name, _ in doc_yaml_blocks())


@pytest.mark.parametrize("name, text", doc_yaml_blocks(), ids=[n for n, _ in doc_yaml_blocks()])
def test_every_yaml_block_in_the_docs_parses(name, text, tmp_path):
    data = yaml.safe_load(text)
    assert isinstance(data, dict), name
    if "parameters" in data and "command" in data:  # a sweep: it must also run as written
        path = tmp_path / "doc.yaml"
        path.write_text(text)
        assert [j.study for j in grid_jobs(load_sweep(path))]


def test_yaml_error_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "flow.yaml"
    path.write_text("name: s\nmethod: grid\ncommand: [bench, run, ${args}]\n")
    assert bench("grid", str(path), "--dry-run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{path}:3:24: not valid YAML" in err and "flow sequence" in err


# ---------------------------------------------------------------------- 2. the analysis run
def offline_log(run_dir: Path) -> list[dict]:
    """Every record of an offline run's .wandb log, read back by wandb itself."""
    cmd = [*wandb_command(), "leet", "inspect", "--json", str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def logged_files(log: list[dict]) -> set[str]:
    return {f["path"] for r in log if r["type"] == "files" for f in r["files"]["files"]}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A study analysed twice with --wandb=offline: two offline folders of one run."""
    root = tmp_path_factory.mktemp("analysis")
    folder = write_study(
        root / "synthetic", sizes={"xs": 1e6, "s": 4e6}, n_train=(500, 1500, 4000, 12000), seeds=1
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_DIR", str(root))
    mp.setenv("WANDB_DATA_DIR", str(root / "wandb-data"))  # the table's staged files
    try:
        for _ in range(2):
            assert bench("analyze", str(folder), "--bootstrap=20", "--wandb=offline") == 0
    finally:
        mp.undo()
    return folder, sorted((root / "wandb").glob("offline-run-*"))


def test_analysis_run_is_one_run_per_study_in_its_group(analysed):
    _, runs = analysed
    assert len(runs) == 2  # analysed twice...
    for run_dir in runs:  # ...into one W&B run: same id, which `wandb sync` resumes
        run = next(r["run"] for r in offline_log(run_dir) if r["type"] == "run")
        assert run["run_id"] == analysis_run_id("synthetic")
        assert run["run_group"] == "synthetic" and run["job_type"] == "analysis"
        assert run["resume"] is True
    assert analysis_run_id("synthetic") != analysis_run_id("other")


def test_analysis_run_holds_figures_table_fits_and_report(analysed):
    folder, runs = analysed
    log = offline_log(runs[-1])
    files = logged_files(log)
    figures = sorted(p.stem for p in (folder / "figures").glob("*.png"))
    assert len(figures) >= 4
    for stem in figures:  # every figure as a wandb.Image
        assert any(f.startswith(f"media/images/figures/{stem}_") for f in files), (stem, files)
    assert {"report.md", "fits.json", "summary.csv"} <= files
    run_files = runs[-1] / "files"
    assert (run_files / "report.md").read_text() == (folder / "report.md").read_text()
    # the summary table, as the table W&B stores
    table_file = next(f for f in files if f.startswith("media/table/tables/summary"))
    table = json.loads((run_files / table_file).read_text())
    rows = list(csv.reader((folder / "summary.csv").open()))
    assert table["columns"] == rows[0] and len(table["data"]) == len(rows) - 1
    # fits.json (break-even included) flattened into the summary
    summary = inspect_offline(runs[-1]).summary
    fits = json.loads((folder / "fits.json").read_text())
    assert summary["break_even/x"] == pytest.approx(fits["break_even"]["x"])
    assert summary["break_even/p_no_crossing"] == pytest.approx(fits["break_even"]["p_no_crossing"])
    assert summary["fits/vit/params/b"] == pytest.approx(fits["fits"]["vit"]["params"]["b"])
    assert summary["cells"] == fits["cells"] and "break-even" in summary["break_even_text"].lower()
    assert summary["figures/error_vs_n"]["_type"] == "image-file"
    assert summary["tables/summary"]["_type"] == "table-file"


def test_analysis_online_without_credentials_is_one_line(analysed, monkeypatch, tmp_path, capsys):
    folder, _ = analysed
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert bench("analyze", str(folder), "--bootstrap=20", "--wandb=online") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no W&B credentials" in err[0]
    assert "report:" not in capsys.readouterr().out  # refused before any work


def test_analysis_logging_never_imports_torch(analysed, tmp_path):
    folder, _ = analysed
    code = (
        "import sys; from bench.cli import main; "
        f"rc = main(['analyze', {str(folder)!r}, '--bootstrap=5', '--wandb=offline']); "
        "print(rc, 'torch' in sys.modules)"
    )
    env = {**os.environ, "WANDB_DIR": str(tmp_path), "WANDB_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stderr[-2000:]


# ---------------------------------------------------------------------- 3. artifacts
@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    """A tiny ViT cell trained offline with log_model=best: (workdir, cell, its offline run)."""
    root = tmp_path_factory.mktemp("artifact")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv("WANDB_DIR", str(root))
    mp.setenv("WANDB_DATA_DIR", str(root / "wandb-data"))  # wandb stages artifact files here
    mp.setenv("WANDB_CACHE_DIR", str(root / "wandb-cache"))
    cell = Cell.from_dict({**TINY_CELL, "study": "art", "wandb": "offline", "log_model": "best"})
    try:
        args = [f"--{k}={v}" for k, v in cell.to_dict().items() if v is not None]
        assert bench("run", *args) == 0
    finally:
        mp.undo()
    (run_dir,) = sorted((root / "wandb").glob("offline-run-*"))
    return root, cell, run_dir


def model_artifact(run_dir: Path) -> dict:
    arts = [r["artifact"] for r in offline_log(run_dir) if r["type"] == "artifact"]
    (art,) = [a for a in arts if a["type"] == "model"]
    return art


def test_log_model_writes_the_checkpoint_and_record_into_the_offline_run(logged_model):
    root, cell, run_dir = logged_model
    art = model_artifact(run_dir)
    assert art["name"] == artifact_name(cell.run_id) and set(art["aliases"]) >= {"best", "latest"}
    files = {e["path"]: e for e in art["manifest"]["contents"]}
    assert set(files) == {"best.ckpt", "record.json"}
    record = json.loads((root / "results" / "art" / "runs" / f"{cell.run_id}.json").read_text())
    assert json.loads(Path(files["record.json"]["local_path"]).read_text()) == record
    ckpt = Path(record["checkpoint"])
    assert int(files["best.ckpt"]["size"]) == (root / ckpt).stat().st_size
    assert json.loads(art["metadata"])["run_id"] == cell.run_id


def test_log_model_off_logs_no_artifact(in_tmp, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(in_tmp))
    monkeypatch.setenv("WANDB_DATA_DIR", str(in_tmp / "wandb-data"))
    args = [f"--{k}={v}" for k, v in {**TINY_CELL, "wandb": "offline"}.items()]
    assert bench("run", *args) == 0
    (run_dir,) = sorted((in_tmp / "wandb").glob("offline-run-*"))
    assert not [r for r in offline_log(run_dir) if r["type"] == "artifact"]


def test_a_downloaded_artifact_folder_is_a_run_for_probe(logged_model, tmp_path, capsys):
    """The folder an artifact downloads to (its files, as staged by wandb) loads like a local run."""
    _, cell, run_dir = logged_model
    download = tmp_path / "model-download"
    download.mkdir()
    for entry in model_artifact(run_dir)["manifest"]["contents"]:
        (download / entry["path"]).write_bytes(Path(entry["local_path"]).read_bytes())
    record, loaded, arch, model = load_run(download)
    assert record["run_id"] == cell.run_id and loaded.run_id == cell.run_id
    assert arch.family == "vit" and sum(p.numel() for p in model.parameters()) == record["params"]
    out = tmp_path / "probes"
    args = ["probe", str(download), f"--out={out}", "--n_images=8", "--device=cpu"]
    assert bench(*args) == 0
    assert json.loads((out / "probe.json").read_text())["run_id"] == cell.run_id


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("wandb:ent/proj/a1b2c3", RemoteRef("run", "ent/proj/a1b2c3")),
        ("wandb:proj/a1b2c3", RemoteRef("run", "proj/a1b2c3")),
        ("wandb-artifact:ent/proj/model-vit-xs-n100-s0-1a2b3c4d:best", None),
        ("wandb-artifact://ent/proj/model-x", RemoteRef("artifact", "ent/proj/model-x:latest")),
        ("wandb-artifact:proj/model-x:v3", RemoteRef("artifact", "proj/model-x:v3")),
        ("results/s/runs/vit-xs-n100-s0-1a2b3c4d.json", None),
        ("vit-xs-n100-s0-1a2b3c4d", None),
    ],
)
def test_reference_parser(ref, expected):
    got = parse_ref(ref)
    if expected is None and ref.startswith("wandb"):
        assert got == RemoteRef("artifact", ref.split(":", 1)[1]) and str(got) == ref
    else:
        assert got == expected


@pytest.mark.parametrize(
    "ref", ["wandb:abc", "wandb:e/p/r/x", "wandb:e//r", "wandb-artifact:e/p/m:a b"]
)
def test_a_malformed_reference_says_the_syntax(ref):
    with pytest.raises(BenchError, match="is not a W&B reference: write wandb"):
        parse_ref(ref)


@pytest.mark.parametrize("command", ["probe", "finetune"])
def test_a_wandb_reference_without_credentials_is_one_line(command, in_tmp, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(in_tmp))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    extra = ["--img_size=32"] if command == "finetune" else []
    assert bench(command, "wandb:ent/proj/a1b2c3", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wandb:ent/proj/a1b2c3: no W&B credentials" in err[0], err


# ---------------------------------------------------------------------- 6. --config config.yaml
def wandb_config_yaml(path: Path, cell: Cell, **extra) -> Path:
    """A run's config.yaml as W&B writes it (wandb's own writer), from the config a cell logs."""
    logged = {**cell.to_dict(), "run_id": cell.run_id, "params": 12345, **extra}
    wrapped = {k: {"desc": None, "value": v} for k, v in logged.items()}
    wrapped["_wandb"] = {"desc": None, "value": {"cli_version": "0.31.0", "t": {"1": [1, 5]}}}
    save_config_file_from_dict(str(path), wrapped)
    return path


TINY_CELL = dict(
    study="rerun",
    dataset="synthetic",
    family="vit",
    size="xxs",
    n_train=200,
    batch_size=64,
    steps=4,
    evals=1,
    wandb="disabled",
    progress=False,
)


def test_rerun_a_wandb_runs_config_yaml_here(in_tmp, capsys):
    ran = Cell.from_dict({**TINY_CELL, "results_dir": "/scratch/elsewhere/runs", "force": True})
    cfg = wandb_config_yaml(in_tmp / "config.yaml", ran)
    assert yaml.safe_load(cfg.read_text())["family"] == {"desc": None, "value": "vit"}
    assert bench("run", "--config", str(cfg)) == 0
    record = in_tmp / "results" / "rerun" / "runs" / f"{ran.run_id}.json"
    assert record.is_file()  # the same cell, into this machine's study folder
    assert "was run as" not in capsys.readouterr().err
    # a flag wins over the file: another seed is another cell, and bench says so
    assert bench("run", "--config", str(cfg), "--seed=1", "--steps=2") == 0
    err = capsys.readouterr().err
    assert f"was run as {ran.run_id}" in err
    seeded = Cell.from_dict({**TINY_CELL, "seed": 1, "steps": 2})
    assert (in_tmp / "results" / "rerun" / "runs" / f"{seeded.run_id}.json").is_file()


def test_config_yaml_unknown_keys_are_one_line_naming_them(in_tmp, capsys):
    cfg = wandb_config_yaml(in_tmp / "config.yaml", Cell(), scheduler="step", momentum=0.9)
    assert bench("run", "--config", str(cfg)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown fields momentum, scheduler" in err, err
    plain = in_tmp / "plain.yaml"
    plain.write_text("family: vit\nwarmupp: 0.1\n")
    assert bench("run", "--config", str(plain)) == 2
    assert "unknown field warmupp" in capsys.readouterr().err


def test_config_yaml_error_names_line_and_column(in_tmp, capsys):
    bad = in_tmp / "bad.yaml"
    bad.write_text("family: vit\nsize: [xs\n")
    assert bench("run", "--config", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}:3:1: not valid YAML" in err, err
