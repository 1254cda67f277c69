"""The parts of the comparison report (pure): tables whose differing rows are highlighted, the
runs' images side by side, the interactive manifold pages and the faithfulness metrics."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from facelens.tracking.compare.snapshot import IMAGE_SUFFIXES, RunSnapshot
from facelens.tracking.compare.thumbs import thumbnail

__all__ = [
    "diff_table",
    "esc",
    "faithfulness_section",
    "image_names",
    "image_rows",
    "interactive_section",
]

_FAITHFULNESS = "explain/faithfulness.json"
#: Every method's numbers (its ``methods`` block); runs before the headline-only
#: ``faithfulness.json`` kept them in that file instead.
_FAITHFULNESS_DETAILS = "explain/faithfulness_details.json"


def esc(value: Any) -> str:
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


def diff_table(
    title_cols: Sequence[str],
    rows: Mapping[str, Sequence[Any]],
    *,
    numeric: bool,
    only_diff: bool = False,
) -> tuple[str, int]:
    """HTML table; rows whose present values differ get class 'diff'. Returns (html, n_diff)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in ("name", *title_cols))
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
                cells.append(f"<td class='num'>{esc(_fmt_number(float(v)))}</td>")
            else:
                cells.append(f"<td>{esc(v)}</td>")
        cls = " class='diff'" if differs else ""
        body.append(f"<tr{cls}><td>{esc(name)}</td>{''.join(cells)}</tr>")
    if not body:
        return "<p class='note'>none</p>", n_diff
    return f"<table><tr>{head}</tr>{''.join(body)}</table>", n_diff


def image_names(runs: Sequence[RunSnapshot], folder: str) -> list[str]:
    """Image names (relative to ``folder``) found under ``folder`` in any run, sorted."""
    names: set[str] = set()
    for r in runs:
        for p in r.artifacts:
            if p.startswith(folder + "/") and Path(p).suffix.lower() in IMAGE_SUFFIXES:
                names.add(p[len(folder) + 1 :])
    return sorted(names)


def _image_cell(r: RunSnapshot, path: str, data: bytes, budget: int, mlflow_ui: str) -> str:
    name = Path(path).name
    try:
        th = thumbnail(data, IMAGE_SUFFIXES[Path(path).suffix.lower()], budget)
    except ValueError as exc:
        return f"<p class='note'>{esc(path)}: {esc(exc)}</p>"
    uri = f"data:{th.mime};base64,{base64.b64encode(th.data).decode('ascii')}"
    img = f"<img alt='{esc(name)}' src='{uri}'>"
    where = f"runs:/{r.run_id}/{path}"
    if mlflow_ui:
        query = urlencode({"path": path, "run_uuid": r.run_id})
        img = f"<a href='{esc(mlflow_ui.rstrip('/'))}/get-artifact?{esc(query)}'>{img}</a>"
    size = f"{th.width}x{th.height}" + (", thumbnail" if th.shrunk else "")
    return f"{img}<div class='src'><code>{esc(where)}</code> ({size})</div>"


def image_rows(
    runs: Sequence[RunSnapshot], folder: str, *, budget: int, mlflow_ui: str = ""
) -> str:
    """One row per image name found under ``folder`` in any run, one cell per run.

    Each image is embedded as a thumbnail of at most ``budget`` bytes (see
    :func:`~facelens.tracking.compare.thumbs.thumbnail`), named by its ``runs:/`` URI and,
    with ``mlflow_ui`` (the UI's base URL), linked to the full-size artifact there.
    """
    names = image_names(runs, folder)
    if not names:
        return f"<p class='note'>No images under <code>{esc(folder)}/</code> in these runs.</p>"
    parts: list[str] = []
    for name in names:
        cells = []
        for r in runs:
            path = f"{folder}/{name}"
            data = r.artifacts.get(path)
            cap = f"<div class='cap'>{esc(r.label)}</div>"
            if data is None:
                cells.append(f"<div class='cell'>{cap}<p class='note'>missing</p></div>")
            else:
                body = _image_cell(r, path, data, budget, mlflow_ui)
                cells.append(f"<div class='cell'>{cap}{body}</div>")
        parts.append(f"<h3>{esc(name)}</h3><div class='row'>{''.join(cells)}</div>")
    return "".join(parts)


def interactive_section(runs: Sequence[RunSnapshot], embed: bool) -> str:
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
                    f"<h3>{esc(r.label)} — {esc(p)}</h3>"
                    f"<iframe sandbox='allow-scripts' srcdoc='{esc(doc)}'></iframe>"
                )
            else:
                items.append(
                    f"<li>{esc(r.label)}: <code>{esc(where)}</code> ({size_mb:.1f} MiB)</li>"
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


def faithfulness_section(runs: Sequence[RunSnapshot]) -> str:
    flat: list[dict[str, Any] | None] = []
    for r in runs:
        details = r.artifacts.get(_FAITHFULNESS_DETAILS)
        data = details if details is not None else r.artifacts.get(_FAITHFULNESS)
        if data is None:
            flat.append(None)
            continue
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            flat.append({"(unreadable faithfulness file)": str(exc)})
            continue
        if details is not None:  # the per-method table, not every class and image
            doc = {"methods": doc.get("methods", {}), "headline": doc.get("headline", {})}
        flat.append(_flatten(doc))
    if all(f is None for f in flat):
        return f"<p class='note'>No <code>{_FAITHFULNESS}</code> in these runs.</p>"
    keys = sorted({k for f in flat if f for k in f})
    rows = {k: [None if f is None else f.get(k) for f in flat] for k in keys}
    rendered, _ = diff_table([r.label for r in runs], rows, numeric=True)
    return rendered
