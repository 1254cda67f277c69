"""Side-by-side comparison of MLflow runs as one self-contained HTML report.

The core of ``facelens compare RUN_REF [RUN_REF ...]``. Each reference is an MLflow run id
(``runs:/<id>`` also accepted) or a registered model, ``models:/<name>@<alias>`` or
``models:/<name>/<version>``, resolved to the run that produced it. The report holds:

- the parameters of every run, rows whose values differ highlighted;
- the latest value of every metric, side by side;
- the Grad-CAM grids (PNG under ``explain/``) of the same probe images next to each other,
  matched by file name;
- the manifold plots (PNG under ``manifold/``) next to each other, and links to / optional
  embeds of the interactive pages;
- the faithfulness metrics from ``explain/faithfulness.json``.

Images are embedded as base64 data URIs, so the file opens offline and can be mailed or logged.
"""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "ARTIFACT_DIRS",
    "RunSnapshot",
    "build_report_html",
    "compare_runs",
    "fetch_run",
    "resolve_run_ref",
]

#: Artifact folders read from every run.
ARTIFACT_DIRS: tuple[str, ...] = ("explain", "manifold")

_IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_KEPT_SUFFIXES = {*_IMAGE_SUFFIXES, ".html", ".json"}
_MAX_ARTIFACT_BYTES = 25 * 1024 * 1024
_FAITHFULNESS = "explain/faithfulness.json"
_REF_FORMS = (
    "an MLflow run id (32 hex chars, or runs:/<id>), "
    "models:/<name>@<alias> or models:/<name>/<version>"
)


@dataclass
class RunSnapshot:
    """What the report needs from one run.

    Attributes:
        ref: The reference as given on the command line.
        run_id: The resolved run id.
        run_name: The run's name (may be empty).
        experiment: The experiment's name.
        start_time: Start time, ISO 8601 (UTC), or empty.
        status: Run status (FINISHED, FAILED, ...).
        params: Parameter name -> value.
        metrics: Metric name -> latest value.
        tags: Non-system tags (``mlflow.*`` dropped).
        artifacts: Artifact path (e.g. ``explain/cam_grid_happy.png``) -> file bytes, for the
            files under :data:`ARTIFACT_DIRS` with a kept suffix.
    """

    ref: str
    run_id: str
    run_name: str = ""
    experiment: str = ""
    start_time: str = ""
    status: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short column heading: run name and id prefix (two runs of one stage share a name),
        and the ref when it was a model."""
        base = f"{self.run_name} {self.run_id[:8]}" if self.run_name else self.run_id[:8]
        return f"{base} ({self.ref})" if self.ref.startswith("models:/") else base


# --------------------------------------------------------------------------------------------
# Resolution and fetching (MLflow)
# --------------------------------------------------------------------------------------------


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def resolve_run_ref(ref: str, *, client: Any = None, tracking_uri: str | None = None) -> str:
    """Resolve a run reference to an MLflow run id.

    Args:
        ref: ``<run_id>``, ``runs:/<run_id>[/...]``, ``models:/<name>@<alias>`` or
            ``models:/<name>/<version>``.
        client: An ``MlflowClient``; built from ``tracking_uri`` when ``None``.
        tracking_uri: Tracking URI for a new client (``None``: the usual environment).

    Returns:
        The run id.

    Raises:
        LookupError: The run, model, alias or version does not exist, or the model version
            is not linked to a run.
        ValueError: ``ref`` has none of the accepted forms.
    """
    from mlflow.exceptions import MlflowException

    cl = client if client is not None else _client(tracking_uri)
    text = ref.strip()
    if text.startswith("models:/"):
        body = text[len("models:/") :]
        try:
            if "@" in body:
                name, alias = body.rsplit("@", 1)
                if not name or not alias:
                    raise ValueError(f"malformed model reference {ref!r}; accepted: {_REF_FORMS}.")
                version = cl.get_model_version_by_alias(name, alias)
            else:
                name, _, number = body.rpartition("/")
                if not name or not number.isdigit():
                    raise ValueError(f"malformed model reference {ref!r}; accepted: {_REF_FORMS}.")
                version = cl.get_model_version(name, number)
        except MlflowException as exc:
            raise LookupError(
                f"model reference {ref!r} was not found in the registry ({_first_line(exc)}); "
                f"check the name and alias/version in the MLflow UI (Models). "
                f"Accepted forms: {_REF_FORMS}."
            ) from exc
        run_id = getattr(version, "run_id", None)
        model_id = getattr(version, "model_id", None)
        if not run_id and model_id:
            # MLflow 3 may link a version to a LoggedModel only; that knows its source run.
            try:
                run_id = cl.get_logged_model(model_id).source_run_id
            except MlflowException:
                run_id = None
        if not run_id:
            raise LookupError(
                f"model reference {ref!r} resolves to version {version.version} of "
                f"{version.name!r}, which is not linked to a run; register the model from a run."
            )
        return str(run_id)

    run_id = text[len("runs:/") :].split("/", 1)[0] if text.startswith("runs:/") else text
    if not re.fullmatch(r"[0-9A-Za-z_\-]{1,64}", run_id):
        raise ValueError(f"unrecognised run reference {ref!r}; accepted: {_REF_FORMS}.")
    try:
        cl.get_run(run_id)
    except MlflowException as exc:
        raise LookupError(
            f"run {run_id!r} (from {ref!r}) was not found at tracking URI "
            f"{cl.tracking_uri!r} ({_first_line(exc)}); point MLFLOW_TRACKING_URI (or the "
            f"tracking URI option) at the store that holds it. Accepted forms: {_REF_FORMS}."
        ) from exc
    return run_id


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "message", "") or exc)
    return msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__


def _walk_artifacts(client: Any, run_id: str, path: str) -> Iterable[Any]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _walk_artifacts(client, run_id, info.path)
        else:
            yield info


def fetch_run(
    ref: str,
    *,
    client: Any = None,
    tracking_uri: str | None = None,
    artifact_dirs: Sequence[str] = ARTIFACT_DIRS,
) -> RunSnapshot:
    """Resolve a reference and collect params, latest metrics, tags and report artifacts.

    Args:
        ref: See :func:`resolve_run_ref`.
        client: An ``MlflowClient``; built from ``tracking_uri`` when ``None``.
        tracking_uri: Tracking URI for a new client.
        artifact_dirs: Artifact folders to read (recursively); only images, HTML and JSON
            files up to 25 MiB each are kept.

    Returns:
        A :class:`RunSnapshot`.
    """
    cl = client if client is not None else _client(tracking_uri)
    run_id = resolve_run_ref(ref, client=cl)
    run = cl.get_run(run_id)
    try:
        experiment = cl.get_experiment(run.info.experiment_id).name
    except Exception:  # a deleted experiment must not stop the report
        experiment = str(run.info.experiment_id)
    start = run.info.start_time
    snap = RunSnapshot(
        ref=ref,
        run_id=run_id,
        run_name=run.info.run_name or "",
        experiment=experiment,
        start_time=(
            datetime.fromtimestamp(start / 1000, tz=UTC).isoformat(timespec="seconds")
            if start
            else ""
        ),
        status=str(run.info.status),
        params={k: str(v) for k, v in run.data.params.items()},
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags={k: str(v) for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
    )
    with tempfile.TemporaryDirectory(prefix="facelens-compare-") as tmp:
        for top in artifact_dirs:
            for info in _walk_artifacts(cl, run_id, top):
                suffix = Path(info.path).suffix.lower()
                size = info.file_size or 0
                if suffix not in _KEPT_SUFFIXES or size > _MAX_ARTIFACT_BYTES:
                    continue
                local = cl.download_artifacts(run_id, info.path, tmp)
                snap.artifacts[info.path] = Path(local).read_bytes()
    return snap


# --------------------------------------------------------------------------------------------
# Report (pure)
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:18px 0 6px;font-family:monospace}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6}
tr.diff td{background:#fff3cd} tr.diff td:first-child{font-weight:bold}
td.num{text-align:right;font-family:monospace}
td.missing{color:#aaa}
.row{display:flex;gap:12px;align-items:flex-start;overflow-x:auto}
.cell{flex:1;min-width:220px}
.cell img{max-width:100%;border:1px solid #ddd}
.cell .cap{font-size:12px;color:#555;margin-bottom:4px}
.note{color:#666;font-size:13px}
iframe{width:100%;height:620px;border:1px solid #ddd}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_number(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.5g}"


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(doc, list) and all(not isinstance(v, (Mapping, list)) for v in doc):
        out[prefix] = ", ".join(str(v) for v in doc)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = doc
    return out


def _table(
    title_cols: Sequence[str],
    rows: Mapping[str, Sequence[Any]],
    *,
    numeric: bool,
    only_diff: bool = False,
) -> tuple[str, int]:
    """HTML table; rows whose present values differ get class 'diff'. Returns (html, n_diff)."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in ("name", *title_cols))
    body: list[str] = []
    n_diff = 0
    for name in sorted(rows):
        vals = rows[name]
        differs = len({json.dumps(v, default=str) for v in vals}) > 1 if len(vals) > 1 else False
        n_diff += differs
        if only_diff and not differs:
            continue
        cells = []
        for v in vals:
            if v is None:
                cells.append("<td class='missing'>—</td>")
            elif numeric and isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f"<td class='num'>{_esc(_fmt_number(float(v)))}</td>")
            else:
                cells.append(f"<td>{_esc(v)}</td>")
        cls = " class='diff'" if differs else ""
        body.append(f"<tr{cls}><td>{_esc(name)}</td>{''.join(cells)}</tr>")
    if not body:
        return "<p class='note'>none</p>", n_diff
    return f"<table><tr>{head}</tr>{''.join(body)}</table>", n_diff


def _data_uri(path: str, data: bytes) -> str:
    mime = _IMAGE_SUFFIXES[Path(path).suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image_rows(runs: Sequence[RunSnapshot], folder: str) -> str:
    """One row per image name found under ``folder`` in any run, one cell per run."""
    names: set[str] = set()
    for r in runs:
        for p in r.artifacts:
            if p.startswith(folder + "/") and Path(p).suffix.lower() in _IMAGE_SUFFIXES:
                names.add(p[len(folder) + 1 :])
    if not names:
        return f"<p class='note'>No images under <code>{_esc(folder)}/</code> in these runs.</p>"
    parts: list[str] = []
    for name in sorted(names):
        cells = []
        for r in runs:
            data = r.artifacts.get(f"{folder}/{name}")
            cap = f"<div class='cap'>{_esc(r.label)}</div>"
            if data is None:
                cells.append(f"<div class='cell'>{cap}<p class='note'>missing</p></div>")
            else:
                img = f"<img alt='{_esc(name)}' src='{_data_uri(name, data)}'>"
                cells.append(f"<div class='cell'>{cap}{img}</div>")
        parts.append(f"<h3>{_esc(name)}</h3><div class='row'>{''.join(cells)}</div>")
    return "".join(parts)


def _interactive_section(runs: Sequence[RunSnapshot], embed: bool) -> str:
    items: list[str] = []
    for r in runs:
        for p, data in sorted(r.artifacts.items()):
            if not (p.startswith("manifold/") and p.endswith(".html")):
                continue
            size_mb = len(data) / 2**20
            where = f"runs:/{r.run_id}/{p}"
            if embed:
                doc = data.decode("utf-8", errors="replace")
                items.append(
                    f"<h3>{_esc(r.label)} — {_esc(p)}</h3>"
                    f"<iframe sandbox='allow-scripts' srcdoc='{_esc(doc)}'></iframe>"
                )
            else:
                items.append(
                    f"<li>{_esc(r.label)}: <code>{_esc(where)}</code> ({size_mb:.1f} MiB)</li>"
                )
    if not items:
        return ""
    if embed:
        return "<h2>Interactive manifold pages</h2>" + "".join(items)
    return (
        "<h2>Interactive manifold pages</h2><p class='note'>Not embedded (each holds its own "
        "copy of plotly.js); download them from the runs, or rerun with embedding on.</p>"
        f"<ul>{''.join(items)}</ul>"
    )


def _faithfulness_section(runs: Sequence[RunSnapshot]) -> str:
    flat: list[dict[str, Any] | None] = []
    for r in runs:
        data = r.artifacts.get(_FAITHFULNESS)
        if data is None:
            flat.append(None)
            continue
        try:
            flat.append(_flatten(json.loads(data.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            flat.append({"(unreadable faithfulness.json)": str(exc)})
    if all(f is None for f in flat):
        return f"<p class='note'>No <code>{_FAITHFULNESS}</code> in these runs.</p>"
    keys = sorted({k for f in flat if f for k in f})
    rows = {k: [None if f is None else f.get(k) for f in flat] for k in keys}
    table, _ = _table([r.label for r in runs], rows, numeric=True)
    return table


def build_report_html(runs: Sequence[RunSnapshot], *, embed_interactive: bool = False) -> str:
    """Render the comparison report for already fetched runs.

    Args:
        runs: Snapshots in column order.
        embed_interactive: Also embed the runs' interactive manifold pages (``iframe srcdoc``;
            several MiB each because each page carries plotly.js).

    Returns:
        A self-contained HTML document.
    """
    if not runs:
        raise ValueError("runs is empty; pass at least one RunSnapshot.")
    cols = [r.label for r in runs]
    head_rows = {
        "run id": [r.run_id for r in runs],
        "reference": [r.ref for r in runs],
        "experiment": [r.experiment for r in runs],
        "start (UTC)": [r.start_time for r in runs],
        "status": [r.status for r in runs],
    }
    overview = "".join(
        f"<tr><td>{_esc(k)}</td>{''.join(f'<td>{_esc(v)}</td>' for v in vals)}</tr>"
        for k, vals in head_rows.items()
    )
    overview = (
        f"<table><tr><th></th>{''.join(f'<th>{_esc(c)}</th>' for c in cols)}</tr>{overview}</table>"
    )
    param_keys = sorted({k for r in runs for k in r.params})
    params_html, n_pdiff = _table(
        cols, {k: [r.params.get(k) for r in runs] for k in param_keys}, numeric=False
    )
    metric_keys = sorted({k for r in runs for k in r.metrics})
    metrics_html, _ = _table(
        cols, {k: [r.metrics.get(k) for r in runs] for k in metric_keys}, numeric=True
    )
    tag_keys = sorted({k for r in runs for k in r.tags})
    tags_html, _ = _table(cols, {k: [r.tags.get(k) for r in runs] for k in tag_keys}, numeric=False)
    generated = datetime.now(tz=UTC).isoformat(timespec="seconds")
    body = [
        f"<h1>facelens run comparison</h1><p class='note'>Generated {_esc(generated)}.</p>",
        overview,
        f"<h2>Parameters</h2><p class='note'>{n_pdiff} of {len(param_keys)} differ "
        "(highlighted).</p>",
        params_html,
        "<h2>Metrics (latest values)</h2>",
        metrics_html,
        "<h2>Faithfulness</h2>",
        _faithfulness_section(runs),
        "<h2>Grad-CAM grids</h2>",
        _image_rows(runs, "explain"),
        "<h2>Manifold plots</h2>",
        _image_rows(runs, "manifold"),
        _interactive_section(runs, embed_interactive),
        "<h2>Tags</h2>",
        f"<details><summary>{len(tag_keys)} tags</summary>{tags_html}</details>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>facelens comparison: {_esc(', '.join(cols))}</title><style>{_CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def compare_runs(
    run_refs: list[str],
    out_html: Path,
    *,
    tracking_uri: str | None = None,
    log_to_run: bool = False,
    experiment_name: str = "facelens-compare",
    embed_interactive: bool = False,
) -> Path:
    """Write one self-contained HTML report comparing MLflow runs.

    Args:
        run_refs: Run references (see :func:`resolve_run_ref`), one report column each.
        out_html: Output file; parent folders are created.
        tracking_uri: MLflow tracking URI; ``None`` uses ``MLFLOW_TRACKING_URI`` / the default.
        log_to_run: Also log the report to a new run in ``experiment_name``, tagged with the
            compared run ids (``facelens.compared_runs``) and refs (``facelens.compared_refs``).
        experiment_name: Experiment of the comparison run.
        embed_interactive: Embed the interactive manifold pages too (large).

    Returns:
        ``out_html``.

    Raises:
        ValueError: No references, or a malformed one.
        LookupError: A run / model / alias / version that does not exist.
    """
    if not run_refs:
        raise ValueError(f"run_refs is empty; pass at least one of: {_REF_FORMS}.")
    client = _client(tracking_uri)
    runs = [fetch_run(ref, client=client) for ref in run_refs]
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report_html(runs, embed_interactive=embed_interactive), encoding="utf-8")
    if log_to_run:
        _log_comparison(client, runs, out, experiment_name)
    return out


def _log_comparison(client: Any, runs: Sequence[RunSnapshot], report: Path, experiment: str) -> str:
    from mlflow.entities import RunStatus

    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
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
