"""``facelens compare``: runs side by side in one self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facelens.cli.console import err, fail, out
from facelens.cli.defaults import tracking_uri
from facelens.errors import FaceLensError

__all__ = ["compare"]


def compare(
    refs: Annotated[
        list[str],
        typer.Argument(help="Run ids, runs:/<id>, models:/<name>@<alias> or models:/<name>/<v>."),
    ],
    out_html: Annotated[
        Path, typer.Option("--out", help="HTML report to write (self-contained).")
    ] = Path("compare.html"),
    log: Annotated[
        bool, typer.Option("--log", help="Also log the report to a 'facelens-compare' run.")
    ] = False,
    embed_interactive: Annotated[
        bool, typer.Option("--embed-interactive", help="Embed the interactive manifold pages.")
    ] = False,
    mlflow_ui: Annotated[
        str,
        typer.Option(
            "--mlflow-ui",
            help="Base URL of an MLflow UI serving the runs (e.g. http://127.0.0.1:5000); "
            "each thumbnail links to its full-size figure there.",
        ),
    ] = "",
) -> None:
    """Compare runs side by side: params, metrics, Grad-CAM grids, manifolds, faithfulness.

    Figures are embedded as thumbnails so the report stays under 3 MB (without
    --embed-interactive); the full-size ones stay in the runs.

    Examples:

        facelens compare 3f2a... 9c1b... --out report.html

        facelens compare models:/facelens-expression@champion models:/facelens-expression@challenger --log
    """
    from facelens.tracking.compare.report import compare_runs

    if out_html.suffix.lower() not in (".html", ".htm") or out_html.is_dir():
        raise typer.BadParameter(f"got {out_html}; --out must be an .html file", param_hint="--out")
    if mlflow_ui and not mlflow_ui.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"got {mlflow_ui!r}; --mlflow-ui must be an http(s):// URL", param_hint="--mlflow-ui"
        )
    uri = tracking_uri()
    try:
        with err.status(f"comparing {len(refs)} run(s)"):
            written = compare_runs(
                list(refs),
                out_html,
                tracking_uri=uri,
                log_to_run=log,
                embed_interactive=embed_interactive,
                mlflow_ui=mlflow_ui,
            )
    except (FaceLensError, OSError) as exc:
        fail(str(exc).splitlines()[0])
    suffix = " (and logged to MLflow)" if log else ""
    out.print(f"report written to {written}{suffix}", markup=False)
