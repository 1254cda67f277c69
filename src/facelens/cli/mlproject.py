"""The command behind every ``MLproject`` entry point: ``dvc exp run`` inside ``mlflow run``.

``mlflow run . -e train --env-manager local --experiment-name facelens -P train.epochs=3``
makes MLflow create the project's run, export its id (``MLFLOW_RUN_ID``) and run
``python -m facelens.cli.mlproject train --train.epochs 3`` (MLflow appends every ``-P`` that
the entry point does not declare as ``--key value``; the entry points declare none, so any
``params.yaml`` key can be set). This module:

1. applies the overrides to a copy of ``params.yaml`` and validates it (a bad key or value
   fails here, before anything runs, with the key's name);
2. checks that the project's run is in the experiment the stages record to
   (``tracking.experiment``), so the stages' runs can be its children;
3. stamps the project's run (owner and heartbeat, see :mod:`facelens.tracking.reaper`) and
   tags it with the entry point and the DVC experiment's name;
4. runs ``dvc exp run -n mlflow-<run id> -S key=value ... [stage]``: the stage and whatever it
   depends on that is out of date, exactly as ``dvc repro <stage>`` would, recorded as a DVC
   experiment (``dvc exp show``); the stages see ``MLFLOW_RUN_ID`` and nest their runs under the
   project's run (:func:`facelens.tracking.runs.tracked_run`);
5. tags the project's run with the same lineage tags as the stages' runs (git commit, data
   version, params hash, versions) and exits with DVC's exit code.

Run outside ``mlflow run`` (no ``MLFLOW_RUN_ID``) it is plain ``dvc exp run -S ...``.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from facelens.cli.params import check_params
from facelens.config import Params, parse_params
from facelens.errors import ConfigError, FaceLensError, MissingInputError
from facelens.tracking.runs import LAUNCHER_RUN_ENV

__all__ = [
    "PIPELINE_ENTRY",
    "apply_overrides",
    "dvc_command",
    "experiment_name",
    "launch",
    "main",
    "parse_overrides",
]

#: The entry point that runs the whole pipeline (``dvc exp run`` without a target).
PIPELINE_ENTRY = "main"
_DVC_YAML = Path("dvc.yaml")


def parse_overrides(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``["--train.epochs", "3", "--tune.n_trials=2"]`` -> ``[("train.epochs", "3"),
    ("tune.n_trials", "2")]`` (the ``--key value`` pairs ``mlflow run`` appends for ``-P``).

    Raises:
        ConfigError: a token is not ``--key`` followed by a value, or a key repeats.
    """
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(
                f"MLproject parameter {token!r}: expected --section.key VALUE "
                "(from `mlflow run ... -P section.key=VALUE`)"
            )
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(tokens):
            key, value = token[2:], tokens[i + 1]
            i += 2
        else:
            raise ConfigError(f"MLproject parameter {token[2:]!r}: no value given")
        if any(k == key for k, _ in pairs):
            raise ConfigError(f"MLproject parameter {key!r}: given twice")
        pairs.append((key, value))
    return pairs


def apply_overrides(raw: dict[str, Any], overrides: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A copy of the ``params.yaml`` mapping ``raw`` with each dotted key set to its value,
    read as YAML (``3`` is an int, ``null`` None, ``[1, 2]`` a list), as ``dvc exp run -S``
    reads it.

    Raises:
        ConfigError: a key walks into a value that is not a mapping, or a value is not YAML.
    """
    out = copy.deepcopy(raw)
    for key, text in overrides:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"MLproject parameter {key}={text!r}: not a YAML value") from None
        *path, leaf = key.split(".")
        node = out
        for depth, part in enumerate(path):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(
                    f"MLproject parameter {key!r}: params.yaml {where} is a value, not a section"
                )
        node[leaf] = value
    return out


def experiment_name(launcher_run_id: str | None) -> str | None:
    """The DVC experiment of a project run: ``mlflow-<first 12 characters of its id>``."""
    return f"mlflow-{launcher_run_id[:12]}" if launcher_run_id else None


def dvc_command(
    dvc: str, entry: str, overrides: Sequence[tuple[str, str]], name: str | None
) -> list[str]:
    """``dvc exp run [-n name] -S key=value ... [stage]`` for an entry point (no stage for
    :data:`PIPELINE_ENTRY`: the whole pipeline)."""
    cmd = [dvc, "exp", "run"]
    if name:
        cmd += ["-n", name]
    for key, value in overrides:
        cmd += ["-S", f"{key}={value}"]
    if entry != PIPELINE_ENTRY:
        cmd.append(entry)
    return cmd


def _stages(dvc_yaml: Path) -> list[str]:
    try:
        return list((yaml.safe_load(dvc_yaml.read_text()) or {})["stages"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{dvc_yaml}: no readable stages ({exc}); run from the repo root"
        ) from None


def _prepared_dir(dvc_yaml: Path) -> Path | None:
    """The ``prepare`` stage's output, as written once in ``dvc.yaml``."""
    try:
        out = yaml.safe_load(dvc_yaml.read_text())["stages"]["prepare"]["outs"][0]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None
    return Path(next(iter(out)) if isinstance(out, dict) else out)


def _validated(params_file: Path, overrides: Sequence[tuple[str, str]]) -> Params:
    try:
        raw = yaml.safe_load(params_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{params_file}: unreadable ({exc})") from None
    source = f"{params_file} with the -P overrides"
    params = parse_params(apply_overrides(raw, overrides), source)
    check_params(params, params_file.resolve().parent, source)
    return params


def _dvc_binary() -> str:
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def launch(
    entry: str, overrides: Sequence[tuple[str, str]], params_file: Path = Path("params.yaml")
) -> int:
    """Run an entry point (see the module docstring); DVC's exit code.

    Raises:
        ConfigError: unknown entry point, bad override, or the project's run is in another
            experiment than ``tracking.experiment``.
    """
    stages = _stages(_DVC_YAML)
    if entry != PIPELINE_ENTRY and entry not in stages:
        raise ConfigError(
            f"entry point {entry!r}: not a stage of {_DVC_YAML}; "
            f"use {PIPELINE_ENTRY} or one of {', '.join(stages)}"
        )
    params = _validated(params_file, overrides)
    launcher = os.environ.get(LAUNCHER_RUN_ENV) or None
    cmd = dvc_command(_dvc_binary(), entry, overrides, experiment_name(launcher))
    if launcher is None:
        return subprocess.run(cmd, check=False).returncode
    from facelens.tracking.project import ProjectRun

    with ProjectRun(launcher, params.tracking, entry, experiment_name(launcher)) as project:
        code = subprocess.run(cmd, check=False).returncode
        _tag_lineage(project, params_file)
    return code


def _tag_lineage(project: Any, params_file: Path) -> None:
    """The project run's lineage tags, from ``params.yaml`` and the data as DVC left them."""
    from facelens.config import load_params
    from facelens.data.manifest import data_version

    try:
        params = load_params(params_file)
    except ConfigError:
        return  # DVC failed on it and said why; the run fails with DVC's exit code
    prepared = _prepared_dir(_DVC_YAML)
    try:
        version = data_version(prepared) if prepared is not None else "unknown"
    except MissingInputError:
        version = "unknown"
    project.tag_lineage(Path.cwd(), params, params.task, version)


_USAGE = (
    "usage: python -m facelens.cli.mlproject ENTRY [--section.key VALUE ...]\n"
    f"ENTRY: {PIPELINE_ENTRY} (the whole pipeline) or a stage of dvc.yaml; "
    "run it through `mlflow run . -e ENTRY --env-manager local -P section.key=VALUE`"
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facelens.cli.mlproject ENTRY [--section.key VALUE ...]``; exit code 1 with
    one line on a bad entry point or parameter, else DVC's."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    try:
        return launch(args[0], parse_overrides(args[1:]))
    except FaceLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
