"""The ``bench`` command: argument parsing lives with each stage; this file only dispatches.

Each subcommand names ``module:function``; the function takes the remaining argv and returns an
exit code. Modules are imported only when their subcommand runs, so ``bench run`` never imports
plotting code and ``bench analyze`` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

from bench.errors import BenchError

COMMANDS = {
    "run": ("bench.run", "main", "train one cell and write its record"),
    "models": ("bench.models", "main", "print the size ladder: parameters and FLOPs per image"),
    "grid": ("bench.grid", "main", "run every cell of a sweep YAML locally (or --dry-run)"),
    "sweep": ("bench.grid", "sweep_main", "create the sweep on W&B and print the agent command"),
    "pull": ("bench.pull", "main", "rebuild records from W&B runs or offline run directories"),
    "analyze": ("bench.analyze", "main", "fit curves, find the break-even, write figures and report"),
    "fit": ("bench.analyze", "fit_main", "fit scaling curves and break-even on any CSV"),
    "study": ("bench.study", "main", "run a sweep's grid locally, then analyze it (the whole study)"),
    "probe": ("bench.probes", "main", "what a trained ViT learned: filters, position embeddings, attention"),
    "finetune": ("bench.finetune", "main", "fine-tune a trained ViT at a higher resolution"),
}


def usage() -> str:
    lines = ["usage: bench COMMAND [options]   (bench COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10}{doc}" for name, (_, _, doc) in COMMANDS.items()]
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
    module, func, _ = COMMANDS[name]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except BenchError as e:
        print(f"bench {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
