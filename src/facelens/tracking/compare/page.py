"""The comparison report as one self-contained HTML page (pure; images as data URIs, so the
file opens offline and can be mailed or logged)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from facelens.tracking.compare.sections import (
    diff_table,
    esc,
    faithfulness_section,
    image_rows,
    interactive_section,
)
from facelens.tracking.compare.snapshot import RunSnapshot

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
.note{color:#666;font-size:13px}
iframe{width:100%;height:620px;border:1px solid #ddd}
"""


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
        f"<tr><td>{esc(k)}</td>{''.join(f'<td>{esc(v)}</td>' for v in vals)}</tr>"
        for k, vals in head_rows.items()
    )
    overview = (
        f"<table><tr><th></th>{''.join(f'<th>{esc(c)}</th>' for c in cols)}</tr>{overview}</table>"
    )
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
    body = [
        f"<h1>facelens run comparison</h1><p class='note'>Generated {esc(generated)}.</p>",
        overview,
        f"<h2>Parameters</h2><p class='note'>{n_pdiff} of {len(param_keys)} differ "
        "(highlighted).</p>",
        params_html,
        "<h2>Metrics (latest values)</h2>",
        metrics_html,
        "<h2>Faithfulness</h2>",
        faithfulness_section(runs),
        "<h2>Grad-CAM grids</h2>",
        image_rows(runs, "explain"),
        "<h2>Manifold plots</h2>",
        image_rows(runs, "manifold"),
        interactive_section(runs, embed_interactive),
        "<h2>Tags</h2>",
        f"<details><summary>{len(tag_keys)} tags</summary>{tags_html}</details>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>facelens comparison: {esc(', '.join(cols))}</title><style>{_CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )
