"""The comparison report as one self-contained HTML page (pure; images as data-URI thumbnails
within a byte budget, so the file opens offline, stays under 3 MB and can be mailed or
logged)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from facelens.tracking.compare.sections import (
    diff_table,
    esc,
    faithfulness_section,
    image_names,
    image_rows,
    interactive_section,
)
from facelens.tracking.compare.snapshot import RunSnapshot
from facelens.tracking.compare.thumbs import MAX_REPORT_BYTES, image_budget

__all__ = ["build_report_html"]

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
.cell .src{font-size:11px;color:#777;word-break:break-all}
.note{color:#666;font-size:13px}
iframe{width:100%;height:620px;border:1px solid #ddd}
"""


def _overview(runs: Sequence[RunSnapshot], cols: Sequence[str]) -> str:
    head_rows = {
        "run id": [r.run_id for r in runs],
        "reference": [r.ref for r in runs],
        "experiment": [r.experiment for r in runs],
        "start (UTC)": [r.start_time for r in runs],
        "status": [r.status for r in runs],
    }
    overview = "".join(
        f"<tr><td>{esc(k)}</td>{''.join(f'<td>{esc(v)}</td>' for v in vals)}</tr>"
        for k, vals in head_rows.items()
    )
    return (
        f"<table><tr><th></th>{''.join(f'<th>{esc(c)}</th>' for c in cols)}</tr>{overview}</table>"
    )


def build_report_html(
    runs: Sequence[RunSnapshot], *, embed_interactive: bool = False, mlflow_ui: str = ""
) -> str:
    """Render the comparison report for already fetched runs.

    Without ``embed_interactive`` the page stays under :data:`MAX_REPORT_BYTES`: the images
    share what the tables leave (:func:`~facelens.tracking.compare.thumbs.image_budget`).

    Args:
        runs: Snapshots in column order.
        embed_interactive: Also embed the runs' interactive manifold pages (``iframe srcdoc``;
            several MiB each because each page carries plotly.js).
        mlflow_ui: Base URL of an MLflow UI serving these runs (e.g.
            ``http://127.0.0.1:5000``): each thumbnail links to its full-size artifact there.

    Returns:
        A self-contained HTML document.
    """
    if not runs:
        raise ValueError("runs is empty; pass at least one RunSnapshot.")
    cols = [r.label for r in runs]
    overview = _overview(runs, cols)
    param_keys = sorted({k for r in runs for k in r.params})
    params_html, n_pdiff = diff_table(
        cols, {k: [r.params.get(k) for r in runs] for k in param_keys}, numeric=False
    )
    metric_keys = sorted({k for r in runs for k in r.metrics})
    metrics_html, _ = diff_table(
        cols, {k: [r.metrics.get(k) for r in runs] for k in metric_keys}, numeric=True
    )
    tag_keys = sorted({k for r in runs for k in r.tags})
    tags_html, _ = diff_table(
        cols, {k: [r.tags.get(k) for r in runs] for k in tag_keys}, numeric=False
    )
    generated = datetime.now(tz=UTC).isoformat(timespec="seconds")
    faith_html = faithfulness_section(runs)
    interactive_html = interactive_section(runs, embed_interactive)
    text = (params_html, metrics_html, tags_html, faith_html, overview)
    n_images = sum(len(image_names(runs, f)) for f in ("explain", "manifold")) * len(runs)
    page_bytes = sum(len(t.encode()) for t in text)
    if not embed_interactive:
        page_bytes += len(interactive_html.encode())
    budget = image_budget(n_images, page_bytes=page_bytes)
    body = [
        f"<h1>facelens run comparison</h1><p class='note'>Generated {esc(generated)}; images "
        f"are thumbnails within {MAX_REPORT_BYTES / 1e6:g} MB, the full-size figures stay in "
        "the runs (<code>runs:/</code> URIs under each).</p>",
        overview,
        f"<h2>Parameters</h2><p class='note'>{n_pdiff} of {len(param_keys)} differ "
        "(highlighted).</p>",
        params_html,
        "<h2>Metrics (latest values)</h2>",
        metrics_html,
        "<h2>Faithfulness</h2>",
        faith_html,
        "<h2>Grad-CAM grids</h2>",
        image_rows(runs, "explain", budget=budget, mlflow_ui=mlflow_ui),
        "<h2>Manifold plots</h2>",
        image_rows(runs, "manifold", budget=budget, mlflow_ui=mlflow_ui),
        interactive_html,
        "<h2>Tags</h2>",
        f"<details><summary>{len(tag_keys)} tags</summary>{tags_html}</details>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>facelens comparison: {esc(', '.join(cols))}</title><style>{_CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )
