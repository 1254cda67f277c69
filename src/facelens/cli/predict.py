"""``facelens predict``: expressions (or attribute ratings) of image files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.console import err, print_table, progress_bar
from facelens.cli.inputs import read_input
from facelens.cli.model import (
    DetectOption,
    DeviceOption,
    MarginOption,
    ModelOption,
    TaskOption,
    load_model,
    model_uri,
    run_model,
)
from facelens.cli.rows import ood_warning, row_message, row_summary, row_values
from facelens.errors import FaceLensError

__all__ = ["predict"]


def predict(
    images: Annotated[
        list[Path],
        # read_input checks the files (exit 1, one line each), not click (a usage box, exit 2)
        typer.Argument(help="Image files (PNG, JPEG, BMP, GIF, WEBP, TIFF).", readable=False),
    ],
    model: ModelOption = None,
    task: TaskOption = "expression",
    detect_face: DetectOption = False,
    margin: MarginOption = 0.25,
    device: DeviceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
) -> None:
    """Predict expressions (or attribute ratings) for images with a logged MLflow model.

    Uses the same pyfunc model, decoder and preprocessing as `mlflow models serve`.
    Exit code 1 when any image is unusable (one line per image on stderr).

    Examples:

        facelens predict face.jpg

        facelens predict a.png b.png --json --model runs:/<run_id>/model

        facelens predict photo.jpg --detect-face --task attributes
    """
    uri = model_uri(model, task)
    inputs: dict[int, str] = {}
    problems: dict[int, str] = {}
    for i, path in enumerate(images):
        try:
            inputs[i] = read_input(path, detect_face, margin)[0]
        except FaceLensError as exc:
            problems[i] = str(exc)
    results: dict[int, dict] = {}
    if inputs:
        pyfunc = load_model(uri, device)
        order = sorted(inputs)
        with progress_bar(f"predicting {len(order)} image(s)") as progress:
            rows = run_model(pyfunc, [inputs[i] for i in order], {}, progress)
        for i, row in zip(order, rows, strict=True):
            if row.get("error"):
                problems[i] = row_message(images[i], row)
            else:
                results[i] = row
    if as_json:
        _print_json(images, results, problems)
    elif results:
        _print_predictions(images, results, uri, task)
    _warn_ood(images, results)
    for i in sorted(problems):
        err.print(f"[bold red]error:[/] {escape(problems[i])}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


def _warn_ood(images: list[Path], results: dict[int, dict]) -> None:
    """A warning line on stderr per image the model flags as out of distribution."""
    for i in sorted(results):
        line = ood_warning(images[i], results[i])
        if line is not None:
            err.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _print_json(images: list[Path], results: dict[int, dict], problems: dict[int, str]) -> None:
    records = []
    for i, path in enumerate(images):
        if i in results:
            records.append({"file": str(path), **results[i]})
        else:
            records.append({"file": str(path), "error": "bad_input", "message": problems[i]})
    typer.echo(json.dumps(records, indent=2))


def _print_predictions(images: list[Path], results: dict[int, dict], uri: str, task: str) -> None:
    table = Table(title=escape(f"predictions ({uri})"))
    table.add_column("image")
    table.add_column("prediction" if task == "expression" else "highest ratings")
    if results and next(iter(results.values())).get("label"):
        table.add_column("top 3", style="dim")
    for i in sorted(results):
        row = results[i]
        cells = [escape(str(images[i])), row_summary(row)]
        if row.get("label"):
            probs = sorted(
                ((k[2:], v) for k, v in row_values(row).items() if k.startswith("p_")),
                key=lambda kv: -kv[1],
            )[:3]
            cells.append(", ".join(f"{k} {v:.2f}" for k, v in probs))
        table.add_row(*cells)
    print_table(table)
