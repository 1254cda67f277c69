"""The ``facelens`` command line (Typer): the app, its top-level options and its commands.

Exit codes: 0 ok, 1 bad input (a one-line message naming the file and the reason), 2 usage.
Heavy libraries (torch, mlflow) are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from facelens import __version__
from facelens.cli.compare import compare
from facelens.cli.console import out
from facelens.cli.data import data_app
from facelens.cli.explain import explain
from facelens.cli.predict import predict
from facelens.cli.runs import runs
from facelens.cli.tune import tune_app

# The commands draw their own progress; MLflow's per-file download bars would interleave.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__all__ = ["app"]

app = typer.Typer(
    name="facelens",
    help="Tracked facial-expression deep learning with explanations (DVC + Optuna + MLflow).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(tune_app, name="tune")


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"facelens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """facelens: every dataset version, tuning trial, model and explanation, tracked.

    Examples:

        facelens data synth --preview grid.png

        facelens data check path/to/fer2013.csv

        facelens predict face.png --json

        facelens explain face.png --target happy --out cam.png

        facelens runs --limit 10

        facelens compare <run_id> models:/facelens-expression@champion --out report.html
    """


app.command("predict")(predict)
app.command("explain")(explain)
app.command("runs")(runs)
app.command("compare")(compare)
