"""``facelens compare``: fetch the runs, write the report, optionally log it to a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facelens.errors import RunReferenceError
from facelens.tracking.compare.page import build_report_html
from facelens.tracking.compare.refs import REF_FORMS, mlflow_client
from facelens.tracking.compare.snapshot import RunSnapshot, fetch_run

__all__ = ["compare_runs"]


def compare_runs(
    run_refs: list[str],
    out_html: Path,
    *,
    tracking_uri: str | None = None,
    log_to_run: bool = False,
    experiment_name: str = "facelens-compare",
    embed_interactive: bool = False,
    mlflow_ui: str = "",
) -> Path:
    """Write one self-contained HTML report (under 3 MB without ``embed_interactive``)
    comparing MLflow runs.

    Args:
        run_refs: Run references (see :func:`~facelens.tracking.compare.refs.resolve_run_ref`), one report column each.
        out_html: Output file; parent folders are created.
        tracking_uri: MLflow tracking URI; ``None`` uses ``MLFLOW_TRACKING_URI`` / the default.
        log_to_run: Also log the report to a new run in ``experiment_name``, tagged with the
            compared run ids (``facelens.compared_runs``) and refs (``facelens.compared_refs``).
        experiment_name: Experiment of the comparison run.
        embed_interactive: Embed the interactive manifold pages too (large).
        mlflow_ui: Base URL of an MLflow UI serving the runs; thumbnails link to the full-size
            artifacts there.

    Returns:
        ``out_html``.

    Raises:
        RunReferenceError: No references, or a malformed one (a ``ValueError``).
        RunNotFound: A run / model / alias / version that does not exist (a ``LookupError``).
    """
    if not run_refs:
        raise RunReferenceError(f"run_refs is empty; pass at least one of: {REF_FORMS}.")
    client = mlflow_client(tracking_uri)
    runs = [fetch_run(ref, client=client) for ref in run_refs]
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        build_report_html(runs, embed_interactive=embed_interactive, mlflow_ui=mlflow_ui),
        encoding="utf-8",
    )
    if log_to_run:
        _log_comparison(client, runs, out, experiment_name, tracking_uri)
    return out


def _log_comparison(
    client: Any,
    runs: Sequence[RunSnapshot],
    report: Path,
    experiment: str,
    tracking_uri: str | None,
) -> str:
    import mlflow
    from mlflow.entities import RunStatus

    from facelens.tracking.workspace import check_workspace

    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    check_workspace(exp_id, tracking_uri or mlflow.get_tracking_uri(), client)
    run = client.create_run(
        exp_id,
        tags={
            "facelens.kind": "comparison",
            "facelens.compared_runs": ",".join(r.run_id for r in runs),
            "facelens.compared_refs": ",".join(r.ref for r in runs),
        },
        run_name="compare-" + "-".join(r.run_id[:8] for r in runs),
    )
    run_id = run.info.run_id
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        client.log_artifact(run_id, str(report), artifact_path="compare")
        status = RunStatus.to_string(RunStatus.FINISHED)
    finally:
        client.set_terminated(run_id, status=status)
    return run_id
