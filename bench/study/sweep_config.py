"""A sweep YAML: load and check it, expand it to cells with wandb's engine, render each command.

The YAML under ``sweeps/`` is a plain W&B sweep config and the single source of truth for a study.
Two pieces of wandb's own code do the work, so the local runner and a ``wandb agent`` agree:

- the ``sweeps`` package (the engine the W&B server runs) validates the config and proposes the
  cells: ``schema_violations_from_proposed_config`` and ``next_runs``;
- ``wandb.sdk.launch.sweeps.utils`` builds the ``${args}``-style values and expands
  ``${envvar:NAME}``; :func:`render_command` then substitutes the macros exactly as
  ``wandb.wandb_agent.Agent._command_run`` does.

On top of the engine's schema this module insists on what a study needs: flat, scalar, non-null
parameters (the engine silently drops nested ``parameters:`` blocks, and the agent renders None as
the string ``None``) and a ``command:``. The study is the YAML's ``name``: a sweep without a
``study`` parameter gets ``study: {value: <name>}`` added to its parameters, so every cell (and
every agent of a sweep created by ``bench sweep``) renders ``--study=<name>``; a ``study``
parameter, when given, wins.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.cell.config import Cell
from bench.errors import BenchError, yaml_error

METHODS = ("grid", "random", "bayes")
ARGS_MACROS = (
    "${args}",
    "${args_no_hyphens}",
    "${args_no_equals}",
    "${args_no_boolean_flags}",
    "${args_json}",
    "${args_json_file}",
    "${args_append_hydra}",
    "${args_override_hydra}",
)
MAX_GRID = 1_000_000


def _engine():
    """Import wandb's sweep engine (quietly: it uses a pydantic-v1 style config)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


@dataclass(frozen=True)
class Sweep:
    path: Path
    config: dict[str, Any]

    @property
    def study(self) -> str:
        return self.config["parameters"]["study"]["value"]

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def command(self) -> list[str]:
        return [str(c) for c in self.config["command"]]

    @property
    def metric(self) -> dict[str, str] | None:
        return self.config.get("metric")

    @property
    def varied(self) -> list[str]:
        """Parameters that take more than one value (the columns worth showing)."""
        return [k for k, p in self.config["parameters"].items() if "value" not in p]


def load_sweep(path: str | os.PathLike) -> Sweep:
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"sweep file {path} does not exist")
    try:
        config = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise yaml_error(f"sweep file {path}", e) from None
    if not isinstance(config, dict):
        raise BenchError(f"sweep file {path} must hold a mapping (a W&B sweep config)")
    check_config(config, where=str(path))
    return Sweep(p, with_study(config))


def with_study(config: dict[str, Any]) -> dict[str, Any]:
    """The config with ``study: {value: <name>}`` appended when it has no ``study`` parameter.

    Appended last: a one-value parameter changes neither the number nor the order of the cells.
    """
    if "study" in config["parameters"]:
        return config
    return {**config, "parameters": {**config["parameters"], "study": {"value": config["name"]}}}


def check_config(config: dict[str, Any], where: str = "sweep") -> None:
    """The engine's schema first, in its own words; then the rules a study adds."""
    sweeps = _engine()
    try:
        violations = sweeps.schema_violations_from_proposed_config(config)
    except ValueError as e:  # the engine raises for a parameter that is not a mapping
        violations = [str(e)]
    if violations:
        raise BenchError(f"{where}: " + "; ".join(violations))
    method = config.get("method")
    if method not in METHODS:
        raise BenchError(
            f"{where}: method {method!r} is not run locally: use one of {', '.join(METHODS)}"
        )
    _check_parameters(config.get("parameters"), where)
    _check_study(config, where)
    _check_command(config, where)
    if method in ("random", "bayes") or config.get("metric"):
        metric = config.get("metric") or {}
        if not metric.get("name"):
            raise BenchError(
                f"{where}: method {method} needs 'metric: {{name: val/error, goal: minimize}}'"
            )


def _check_parameters(params: Any, where: str) -> None:
    """Flat keys and scalar values: what an agent passes on to a command line intact."""
    if not isinstance(params, dict) or not params:
        raise BenchError(f"{where}: 'parameters' must hold at least one parameter")
    for key, block in params.items():
        if "parameters" in block:
            raise BenchError(
                f"{where}: parameter {key!r} is a nested block, which the engine silently drops: "
                "keep parameter keys flat"
            )
        values = [block["value"]] if "value" in block else block.get("values", [])
        for v in values:
            if v is None or isinstance(v, (dict, list)):
                raise BenchError(
                    f"{where}: parameter {key!r} has the value {v!r}: values must be scalar and "
                    "non-null (an agent renders None as the string 'None' and lists as \"['a']\")"
                )


def _check_study(config: dict[str, Any], where: str) -> None:
    """A sweep names its study: one folder for all its cells."""
    name = config.get("name")
    if not name or not isinstance(name, str):
        raise BenchError(f"{where}: give the sweep a 'name': it is the study's name")
    study = config["parameters"].get("study")
    if study is not None and not isinstance(study.get("value"), str):
        raise BenchError(
            f"{where}: parameter study must be one name ('value: NAME'; default: the sweep's "
            f"name {name!r}), not {study.get('value', study.get('values'))!r}"
        )


def _check_command(config: dict[str, Any], where: str) -> None:
    """The command must pass each cell its own arguments."""
    command = config.get("command")
    if not isinstance(command, list) or not command:
        raise BenchError(f"{where}: give a 'command:' list, e.g. [bench, run, ${{args}}]")
    if not any(str(c) in ARGS_MACROS for c in command):
        raise BenchError(
            f"{where}: command {command} has no ${{args}}: every cell would run the same command"
        )
    if "${program}" in command and not config.get("program"):
        raise BenchError(f"{where}: command uses ${{program}} but the sweep has no 'program'")


# ---------------------------------------------------------------------- expansion
def _plain(v: Any) -> Any:
    """numpy scalars from the engine as Python values (the server sends JSON)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v


def params_of(run) -> dict[str, Any]:
    return {k: _plain(v["value"]) for k, v in run.config.items()}


def expand(sweep: Sweep, runs: list | None = None, n: int | None = None) -> list[dict[str, Any]]:
    """Cells the engine proposes, as ``{param: value}`` dicts.

    grid: every remaining cell (``runs`` already in the sweep are left out, as on the server);
    random and bayes: ``n`` proposals given ``runs``.
    """
    sweeps = _engine()
    if n is None:
        if sweep.method != "grid":
            raise BenchError(f"a {sweep.method} sweep has no fixed size: give --count N")
        n = MAX_GRID
    try:
        proposed = sweeps.next_runs(sweep.config, list(runs or []), validate=True, n=n)
    except (ValueError, TypeError) as e:
        raise BenchError(f"{sweep.path}: {e}") from None
    return [params_of(r) for r in proposed if r is not None]


def sweep_run(params: dict[str, Any], state: str = "finished", summary: dict | None = None):
    """A cell as the engine sees a run of the sweep.

    The metrics go in by their alias ``summaryMetrics``: under pydantic 2 the field name
    ``summary_metrics=`` is silently ignored, and bayes would see runs without metrics.
    """
    sweeps = _engine()
    return sweeps.SweepRun(
        config={k: {"value": v} for k, v in params.items()},
        state=state,
        summaryMetrics=summary or {},
    )


def metric_from_record(record: dict[str, Any], metric: str) -> float | None:
    """``val/error`` in a W&B summary is ``metrics.val_error`` in the record."""
    metrics = record.get("metrics") or {}
    for key in (metric, metric.replace("/", "_")):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


def to_cell(params: dict[str, Any], results_dir: str | os.PathLike | None = None) -> Cell:
    """Validate one proposed cell the way ``bench run`` will."""
    values = dict(params)
    if results_dir is not None:
        values["results_dir"] = str(results_dir)
    return Cell.from_dict(values)


# ---------------------------------------------------------------------- rendering
def render_command(
    command: list[str] | None,
    params: dict[str, Any],
    *,
    program: str | None = None,
    args_json_file: str | None = None,
) -> list[str]:
    """The argv a ``wandb agent`` runs for one cell.

    ``create_sweep_command`` and ``create_sweep_command_args`` are wandb's own functions; the
    macro substitution below is the loop of ``wandb_agent.Agent._command_run`` (wandb keeps it
    inline there, so it cannot be imported), with the values the agent sets for ``interpreter``,
    ``program``, ``args_json_file`` and ``env``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from wandb.sdk.launch.sweeps import utils as sweep_utils

    sweep_command = sweep_utils.create_sweep_command(
        list(command or sweep_utils.DEFAULT_SWEEP_COMMAND)
    )
    sweep_vars: dict[str, Any] = sweep_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in params.items()}}
    )
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [program]
    sweep_vars["args_json_file"] = [args_json_file]
    sweep_vars["env"] = ["/usr/bin/env"]
    command_list: list[str] = []
    for c in sweep_command:
        c = str(c)
        if c.startswith("${") and c.endswith("}"):
            command_list += sweep_vars.get(c[2:-1]) or []
        else:
            command_list += [c]
    return command_list
