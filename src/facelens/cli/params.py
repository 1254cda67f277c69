"""``facelens params check``: what a stage would refuse in ``params.yaml``, before any stage runs.

``make repro`` and every MLflow Project entry point (:mod:`facelens.cli.mlproject`) run this
check first: under a bare ``dvc repro``, a bad value stops the stage only after DVC has
removed its outputs (README, Reliability: how to get them back). Beyond what loading the file
checks (unknown keys, wrong types, out-of-range values: :func:`facelens.config.load_params`),
it checks what only shows when a stage runs: the data files the ``prepare`` stage reads, and
every choice and range end of ``tune.space``, which a trial would hand to the training recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facelens.cli.console import fail, out

__all__ = ["check_params", "params_app"]

params_app = typer.Typer(help="Validate params.yaml before running the pipeline.")


def check_params(params: Any, base: Path, source: str = "params.yaml") -> None:
    """Raise one :class:`~facelens.errors.ConfigError` naming every problem of ``params`` (a
    loaded :class:`~facelens.config.Params`) that a stage would meet; paths are relative to
    ``base`` (the folder DVC runs the stages in).

    Raises:
        ConfigError: ``source: key: problem; key2: ...``.
    """
    from facelens.errors import ConfigError

    problems = [*_data_problems(params.data, base), *_space_problems(params)]
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def _data_problems(data: Any, base: Path) -> list[str]:
    problems = []
    for key, kind in (("path", "the dataset"), ("table", "the attribute table")):
        value = getattr(data, key)
        if data.source == "synth" or not value:
            continue
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.exists():
            problems.append(
                f"data.{key}: {value!r} does not exist (source {data.source!r} reads {kind} "
                "there); set it to an existing path relative to the project root"
            )
    return problems


def _candidates(dim: Any) -> list[Any]:
    """The values of a search-space dimension a trial can draw at the edges: every choice of
    a list, both ends of a range."""
    return list(dim) if isinstance(dim, list | tuple) else [dim.low, dim.high]


def _space_problems(params: Any) -> list[str]:
    """Every choice and range end of ``tune.space`` through the recipe a trial builds."""
    from pydantic import ValidationError

    from facelens.training.recipe import make_recipe

    problems = []
    space = params.tune.space
    for name in type(space).model_fields:
        for value in _candidates(getattr(space, name)):
            try:
                make_recipe(params.task, params.model, params.train, {name: value})
            except ValidationError as exc:
                first = exc.errors()[0]
                reason = " ".join(str(first["msg"]).split())
                problems.append(f"tune.space.{name}: {value!r} cannot be sampled ({reason})")
                break
            except ValueError as exc:
                problems.append(f"tune.space.{name}: {value!r} cannot be sampled ({exc})")
                break
    return problems


@params_app.command("check")
def params_check(
    params_file: Annotated[Path, typer.Option("--params", help="The params file to check.")] = Path(
        "params.yaml"
    ),
) -> None:
    """Check params.yaml as the stages will read it: exit 1 with one line naming every bad key.

    Examples:

        facelens params check

        facelens params check --params experiments/params.yaml
    """
    from facelens.config import load_params
    from facelens.errors import ConfigError

    try:
        params = load_params(params_file)
        check_params(params, params_file.resolve().parent, str(params_file))
    except ConfigError as exc:
        fail(str(exc))
    out.print(f"{params_file}: ok", highlight=False)
