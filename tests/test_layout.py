"""The shape of the package: imports run down the pipeline, never in a circle, never hidden.

Floors, lowest first: the shared ground (errors, clock, env), the study folder (``results``: its
layout and records), the cell, then the study, the analysis and the ViT probes (three stages side by side), then the
commands that join stages (``pipeline``, ``cli``). A module may import its own package or a
lower floor, never a higher one or a sibling stage.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "bench"
FLOOR = {
    "errors": 0,
    "clock": 0,
    "env": 0,
    "results": 1,
    "cell": 2,
    "study": 3,
    "analysis": 3,
    "vit": 3,
}
TOP = {"pipeline", "cli"}  # commands that join stages: may import anything below them
# third-party packages a stage may import inside a function: optional (wandb is absent where runs
# are disabled, submitit without SLURM, Hugging Face datasets unless dataset=hf) or heavy and
# needed by one path only
LAZY_OK = {"wandb", "submitit", "torchvision", "sklearn", "sweeps", "datasets"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def bench_imports(path: Path) -> tuple[set[str], list[str]]:
    """(bench modules imported at module level, imports made inside functions)."""
    tree = ast.parse(path.read_text())
    top, local = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    local += _names(inner)
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            top |= {n for n in _names(node) if n.startswith("bench")}
    return top, local


def _names(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    return [
        f"{base}.{a.name}" if base == "bench" or base.startswith("bench.") else base
        for a in node.names
    ]


def resolve(name: str, known: dict[str, Path]) -> str:
    """``bench.cell.config.Cell`` -> ``bench.cell.config`` (the module that holds the name)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        top, _ = bench_imports(path)
        edges[name] = {resolve(t, known) for t in top} - {name, "bench"}
    return edges


def test_no_module_imports_a_bench_module_inside_a_function():
    offenders = []
    for name, path in modules().items():
        _, local = bench_imports(path)
        offenders += [f"{name}: {imp}" for imp in local if imp.split(".")[0] not in LAZY_OK]
    assert not offenders, offenders


def test_the_import_graph_has_no_circle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            pytest.fail("import circle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(edges):
        visit(node, [])


def test_imports_run_down_the_pipeline():
    wrong = []
    for src, targets in graph().items():
        s = stage(src)
        if s in TOP or src == "bench":
            continue
        for dst in targets:
            d = stage(dst)
            if d in TOP:
                wrong.append(f"{src} -> {dst} (a command)")
            elif d != s and FLOOR[d] >= FLOOR[s]:
                wrong.append(f"{src} -> {dst}")
    assert not wrong, wrong


@pytest.mark.parametrize("command", ["analyze", "fit", "tune", "compare", "finetune_report"])
def test_analysis_commands_never_import_torch(command):
    module = {
        "analyze": "bench.analysis.analyze",
        "fit": "bench.analysis.fit_csv",
        "tune": "bench.analysis.tuning",
        "compare": "bench.analysis.compare",
        "finetune_report": "bench.analysis.finetune_report",
    }[command]
    code = f"import sys, {module}; import bench.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_finetune_report_is_served_without_torch(tmp_path):
    code = (
        "import sys; from bench.cli import main; "
        f"rc = main(['finetune', '--report', {str(tmp_path)!r}]); print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 False"
