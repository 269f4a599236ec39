"""The ``bench`` command: argument parsing lives with each stage; this file only dispatches.

Each subcommand names a module whose ``main(argv)`` takes the remaining arguments and returns an
exit code. Modules are imported only when their subcommand runs, so ``bench run`` never imports
plotting code and ``bench analyze``, ``bench fit``, ``bench tune``, ``bench compare`` and ``bench finetune
--report`` never import torch (the report is served by the analysis stage, which only reads
records).
"""

from __future__ import annotations

import importlib
import sys

from bench.errors import BUSY_EXIT, STORAGE_EXIT, BenchError, CellBusy, StorageError

COMMANDS = {
    "run": ("bench.cell.run", "train one cell and write its record"),
    "models": ("bench.cell.models", "print the size ladder: parameters and FLOPs per image"),
    "grid": ("bench.study.grid", "run every cell of a sweep YAML locally (or --dry-run)"),
    "sweep": ("bench.study.sweep", "create the sweep on W&B and print the agent command"),
    "pull": ("bench.study.pull", "rebuild records from W&B runs or offline run directories"),
    "analyze": (
        "bench.analysis.analyze",
        "fit curves, find the break-even, write figures and report",
    ),
    "fit": ("bench.analysis.fit_csv", "fit scaling curves and break-even on any CSV"),
    "tune": (
        "bench.analysis.tuning",
        "read a tuning grid: per cell, the setting with the lowest validation error",
    ),
    "compare": (
        "bench.analysis.compare",
        "set the gaps of several analysed studies side by side (a control and its baseline)",
    ),
    "study": ("bench.pipeline", "run a sweep's grid locally, then analyze it (the whole study)"),
    "probe": (
        "bench.vit.probe",
        "what a trained ViT learned: filters, position embeddings, attention",
    ),
    "finetune": ("bench.cell.finetune", "fine-tune a trained ViT at a higher resolution"),
}
# ``bench finetune --report DIR`` only reads records: the analysis stage serves it, without torch.
FINETUNE_REPORT = "bench.analysis.finetune_report"


def module_for(name: str, rest: list[str]) -> str:
    if name == "finetune" and any(a == "--report" or a.startswith("--report=") for a in rest):
        return FINETUNE_REPORT
    return COMMANDS[name][0]


def usage() -> str:
    lines = [
        "usage: bench COMMAND [options]   (bench COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10}{doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bench: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(module_for(name, rest)).main(rest) or 0)
    except BenchError as e:
        print(f"bench {name}: error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:  # a full disk or a forbidden folder: one line, exit 3
        print(f"bench {name}: error: {e}", file=sys.stderr)
        return STORAGE_EXIT
    except CellBusy as e:  # another process trains this cell: nothing of it is touched
        print(f"bench {name}: error: {e}", file=sys.stderr)
        return BUSY_EXIT
    except KeyboardInterrupt:
        print(f"bench {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
