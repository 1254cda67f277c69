"""``facelens runs``: the recent MLflow runs with their key metrics; ``facelens runs reap``:
close the runs whose process died; ``facelens runs relocate``: point a copied workspace's
experiments at its own artifact folder."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.console import fail, out, print_table
from facelens.cli.defaults import tracking_uri

__all__ = ["runs", "runs_app"]

runs_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

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


@runs_app.callback()
def runs(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Runs to show.")] = 20,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment (name).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (all metrics).")] = False,
) -> None:
    """List recent MLflow runs (newest first) with their key metrics; `reap` closes the runs
    whose process died.

    Examples:

        facelens runs

        facelens runs --limit 5 --experiment facelens --json

        facelens runs reap --dry-run
    """
    if ctx.invoked_subcommand is not None:
        return
    from mlflow import MlflowClient

    uri = tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiments, ids = _experiments(client, uri, experiment)
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


def _experiments(client, uri: str, experiment: str | None) -> tuple[dict[str, str], list[str]]:
    """All experiments (id -> name) and the ids selected by ``experiment`` (all when None);
    exit 1 with one line when the store is unreadable or the experiment unknown."""
    try:
        experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    except Exception as exc:  # unreachable server, corrupt store: one line, exit 1
        fail(f"{uri}: cannot read the MLflow store ({str(exc).splitlines()[0][:200]})")
    if experiment is None:
        return experiments, list(experiments)
    ids = [i for i, n in experiments.items() if n == experiment]
    if not ids:
        fail(
            f"experiment {experiment!r} not found in {uri}; "
            f"known: {', '.join(sorted(experiments.values())) or 'none'}"
        )
    return experiments, ids


@runs_app.command("reap")
def reap(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment (name).")
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(
            "--stale-after",
            min=1.0,
            help="Seconds without a heartbeat after which a run of another host is dead "
            "(default: ten missed heartbeats, 600).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list the runs that would be closed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Mark KILLED the RUNNING runs whose process died: on this host, its process id is gone or
    now belongs to another process; on another host, its heartbeat is older than
    --stale-after. Runs facelens did not start are left alone; a finished train run that a
    later stage reopened gets FINISHED back. Every stage does this for its experiment first.

    Examples:

        facelens runs reap --dry-run

        facelens runs reap --experiment facelens --json
    """
    from mlflow import MlflowClient

    from facelens.tracking.reaper import STALE_AFTER_S
    from facelens.tracking.reaper import reap as reap_runs

    uri = tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    _, ids = _experiments(client, uri, experiment)
    stale_after_s = STALE_AFTER_S if stale_after is None else stale_after
    closed = reap_runs(client, ids, stale_after_s=stale_after_s, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps([dict(vars(r), dry_run=dry_run) for r in closed], indent=2))
        return
    verb = "would close" if dry_run else "closed"
    for r in closed:
        out.print(f"{verb} {r.line()}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"{verb} {len(closed)} dead run(s) in {uri}", markup=False, highlight=False)


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


@runs_app.command("relocate")
def runs_relocate(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would move; change nothing.")
    ] = False,
) -> None:
    """Point a copied or moved workspace's MLflow experiments at its own mlruns/.

    After `cp -r project copy` the copy's mlflow.db still names the original's artifact
    folders (absolute paths): stages refuse to log there until this is run in the copy.

    Examples:

        facelens runs relocate --dry-run

        facelens runs relocate
    """
    from facelens.errors import FaceLensError
    from facelens.tracking.workspace import relocate

    uri = tracking_uri()
    try:
        moved = relocate(uri, dry_run=dry_run)
    except FaceLensError as exc:
        fail(str(exc))
    verb = "would move" if dry_run else "moved"
    for m in moved:
        out.print(
            f"{verb} experiment {m.experiment!r}: {m.old} -> {m.new}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"{verb} {len(moved)} experiment(s) in {uri}", markup=False, highlight=False, soft_wrap=True
    )
