"""``facelens runs``: the recent MLflow runs with their key metrics."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.console import fail, out, print_table
from facelens.cli.defaults import tracking_uri

__all__ = ["runs"]

#: Metrics shown by ``facelens runs`` when a run has them.
_KEY_METRICS = (
    "best_value",  # a study's parent run
    "final_objective",  # a trial
    "best_val_metric",
    "val_metric",
    "test_macro_f1",
    "test_accuracy",
    "test_mean_pearson",
)


def _iso(ms: int | None) -> str:
    from datetime import UTC, datetime

    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Runs to show.")] = 20,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment (name).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (all metrics).")] = False,
) -> None:
    """List recent MLflow runs (newest first) with their key metrics.

    Examples:

        facelens runs

        facelens runs --limit 5 --experiment facelens --json
    """
    from mlflow import MlflowClient

    uri = tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    try:
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    except Exception as exc:  # unreachable server, corrupt store: one line, exit 1
        fail(f"{uri}: cannot read the MLflow store ({str(exc).splitlines()[0][:200]})")
    if experiment is not None:
        ids = [i for i, n in experiments.items() if n == experiment]
        if not ids:
            fail(
                f"experiment {experiment!r} not found in {uri}; "
                f"known: {', '.join(sorted(experiments.values())) or 'none'}"
            )
    else:
        ids = list(experiments)
    found = (
        client.search_runs(ids, max_results=limit, order_by=["attributes.start_time DESC"])
        if ids
        else []
    )
    records = [_record(r, experiments) for r in found]
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if not records:
        out.print(f"no runs in {uri}", markup=False)
        return
    print_table(_runs_table(records, uri))


def _record(run, experiments: dict[str, str]) -> dict:
    """The JSON record of one MLflow run."""
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or "",
        "experiment": experiments.get(run.info.experiment_id, run.info.experiment_id),
        "status": run.info.status,
        "start_time": _iso(run.info.start_time),
        "task": run.data.tags.get("facelens.task", ""),
        "stage": run.data.tags.get("facelens.stage", ""),
        "metrics": dict(sorted(run.data.metrics.items())),
    }


def _runs_table(records: list[dict], uri: str) -> Table:
    shown = [m for m in _KEY_METRICS if any(m in r["metrics"] for r in records)]
    one_experiment = len({r["experiment"] for r in records}) == 1
    title = f"{len(records)} most recent run(s) in {uri}"
    if one_experiment:
        title += f", experiment {records[0]['experiment']}"
    table = Table(title=escape(title))
    table.add_column(
        "run id", no_wrap=True, min_width=32
    )  # full ids: `facelens compare` takes them
    columns = ["name", *([] if one_experiment else ["experiment"]), "status", "started (UTC)"]
    for name in columns:
        table.add_column(name, no_wrap=name != "name")
    for name in shown:
        table.add_column(name.replace("_", " "), justify="right", no_wrap=True)
    for r in records:
        table.add_row(
            r["run_id"],
            escape(r["run_name"]),
            *([] if one_experiment else [escape(r["experiment"])]),
            r["status"],
            r["start_time"][:16],
            *(f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "" for m in shown),
        )
    return table
