"""The ``facelens`` command line (Typer): the app, its top-level options and its commands.

Exit codes: 0 ok, 1 bad input (a one-line message naming the file and the reason), 2 usage.
Heavy libraries (torch, mlflow) are imported inside commands so ``--help`` stays fast, and the
``facelens`` console script leaves without tearing the interpreter down (:class:`FaceLensTyper`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import Annotated, Any, NoReturn

import typer

from facelens import __version__
from facelens.cli.compare import compare
from facelens.cli.console import out
from facelens.cli.data import data_app
from facelens.cli.explain import explain
from facelens.cli.params import params_app
from facelens.cli.predict import predict
from facelens.cli.runs import runs_app
from facelens.cli.tune import tune_app

# The commands draw their own progress; MLflow's per-file download bars would interleave.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__all__ = ["FaceLensTyper", "app", "exit_now"]


def exit_now(code: object) -> NoReturn:
    """``sys.exit(code)`` without the interpreter's teardown, when nothing else still runs.

    Tearing down an interpreter that holds torch, MLflow and their libraries (every module,
    every object, the C++ static destructors) takes about 1.5 s after ``predict`` and 3 s after
    ``explain``, longer than the command itself. What that teardown does that matters is done
    here: the ``atexit`` handlers run (temporary folders, logging, MLflow's open run) and stdout
    and stderr are flushed; then the process ends (``os._exit``). With another thread still
    running, it is a plain ``sys.exit`` (which waits for that thread).
    """
    if threading.active_count() > 1:
        raise SystemExit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message") prints it and exits 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to flush
            stream.flush()
    os._exit(status)


class FaceLensTyper(typer.Typer):
    """The app as the ``facelens`` console script calls it: the command, then :func:`exit_now`.

    Only that call ends the process; ``typer.testing.CliRunner`` and ``standalone_mode=False``
    callers get the command's result or exception as usual.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exc:
            exit_now(exc.code)


app = FaceLensTyper(
    name="facelens",
    help="Tracked facial-expression deep learning with explanations (DVC + Optuna + MLflow).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(params_app, name="params")
app.add_typer(runs_app, name="runs")
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

        facelens params check

        facelens predict face.png --json

        facelens explain face.png --target happy --out cam.png

        facelens runs --limit 10

        facelens runs reap --dry-run

        facelens compare <run_id> models:/facelens-expression@champion --out report.html
    """


app.command("predict")(predict)
app.command("explain")(explain)
app.command("compare")(compare)
