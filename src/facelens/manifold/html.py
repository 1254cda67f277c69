"""The interactive, offline manifold page: every layout, coloured by each variable, with face
thumbnails on hover; returned as an HTML string.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from facelens.manifold.layouts import check_matrix
from facelens.manifold.quality import class_name, encode_labels

__all__ = [
    "interactive_html",
    "thumbnail_png",
]


_SVG_MAX_POINTS = 3000


def thumbnail_png(image: np.ndarray, size: int = 48) -> bytes:
    """Encode an image as a small PNG for hover thumbnails.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 array, or float in [0, 1].
        size: Longest side of the thumbnail in pixels.

    Returns:
        PNG bytes.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {arr.shape}.")
    img = Image.fromarray(arr)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _js(value: Any) -> str:
    """JSON for embedding inside a <script> element."""
    return json.dumps(value).replace("</", "<\\/")


_PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:0;display:flex}
#fl-main{flex:1;min-width:0;padding:8px}
#fl-side{width:220px;padding:12px;border-left:1px solid #ddd;position:sticky;top:0;
height:100vh;box-sizing:border-box;font-size:13px}
#fl-thumb{width:192px;height:192px;image-rendering:pixelated;border:1px solid #ccc;
display:block;object-fit:contain;background:#f4f4f4}
.fl-plot{height:560px;margin-bottom:12px}
h1{font-size:18px} h2{font-size:15px;margin:16px 0 4px}
"""


_HOVER_JS = """
function flShow(pt){
  var i = pt.customdata; if (Array.isArray(i)) { i = i[0]; }
  var img = document.getElementById('fl-thumb');
  var t = FL_THUMBS ? FL_THUMBS[i] : null;
  if (t) { img.src = 'data:image/png;base64,' + t; img.style.visibility = 'visible'; }
  else { img.removeAttribute('src'); img.style.visibility = 'hidden'; }
  document.getElementById('fl-info').innerHTML = FL_INFO[i];
}
"""


def interactive_html(
    layouts: Mapping[str, np.ndarray],
    ids: Sequence[str],
    labels: np.ndarray | Sequence[Any] | None,
    *,
    label_names: Sequence[str] | None = None,
    hover: Mapping[str, np.ndarray | Sequence[Any]] | None = None,
    thumbnails: Sequence[bytes | None] | None = None,
    title: str = "facelens manifold",
    point_size: float = 5.0,
) -> str:
    """A self-contained, offline HTML page with one interactive plot per layout.

    Plotly.js is embedded once (no network needed). 2-D layouts become ``Scatter`` plots and
    3-D layouts ``Scatter3d`` plots, one trace per class so the legend toggles classes.
    Plotly's hover boxes cannot show images, so each point's ``customdata`` holds its sample
    index and a small inline script shows that sample's thumbnail (base64 PNG, stored once in
    the page) and its labels in a side panel whenever a point is hovered.

    Args:
        layouts: Plot title -> layout of shape ``(N, 2)`` or ``(N, 3)``; all in ``ids`` order.
        ids: Sample ids, length ``N``.
        labels: Class per sample (``(N,)``) or ``None``.
        label_names: Names for integer classes (e.g. EXPRESSIONS).
        hover: Extra per-sample values to show (e.g. ``{"attractive": ..., "identity": ...}``).
        thumbnails: PNG bytes per sample (``None`` entries allowed), or ``None``.
        title: Page title.
        point_size: Marker size in pixels.

    Returns:
        The HTML document as a string.
    """
    n = len(ids)
    if not layouts:
        raise ValueError("layouts is empty; pass at least one layout to plot.")
    if thumbnails is not None and len(thumbnails) != n:
        raise ValueError(f"thumbnails has {len(thumbnails)} entries, expected one per id ({n}).")
    if labels is not None:
        classes, codes = encode_labels(labels, n)
    else:
        classes, codes = np.asarray(["all"]), np.zeros(n, dtype=np.int64)
    names = [class_name(c, label_names) for c in classes]
    info, hover_text = _point_texts(ids, names if labels is not None else None, codes, hover)
    thumbs = [
        base64.b64encode(t).decode("ascii") if t is not None else None for t in (thumbnails or [])
    ]
    parts = [
        _plot_div(i, name, layout, n, names, codes, hover_text, point_size)
        for i, (name, layout) in enumerate(layouts.items())
    ]
    head = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_PAGE_CSS}</style>"
        f"<script>var FL_THUMBS={_js(thumbs if thumbnails is not None else None)};"
        f"var FL_INFO={_js(info)};{_HOVER_JS}</script></head><body>"
    )
    main = f"<div id='fl-main'><h1>{html.escape(title)}</h1>{''.join(parts)}</div>"
    side = (
        "<div id='fl-side'><div>hover a point</div>"
        "<img id='fl-thumb' alt='thumbnail' style='visibility:hidden'>"
        "<div id='fl-info'></div></div>"
    )
    return head + main + side + "</body></html>\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        return f"{float(v):.3g}"
    return str(v)


def _point_texts(
    ids: Sequence[str],
    names: list[str] | None,
    codes: np.ndarray,
    hover: Mapping[str, np.ndarray | Sequence[Any]] | None,
) -> tuple[list[str], list[str]]:
    """Per point: the side panel's HTML and the hover box's text (id, label, extra values)."""
    n = len(ids)
    extra = {k: np.asarray(v) for k, v in (hover or {}).items()}
    for k, v in extra.items():
        if v.shape != (n,):
            raise ValueError(f"hover[{k!r}] has shape {v.shape}, expected ({n},).")
    info: list[str] = []
    hover_text: list[str] = []
    for i in range(n):
        pairs = [("id", str(ids[i]))]
        if names is not None:
            pairs.append(("label", names[codes[i]]))
        pairs += [(k, _fmt(v[i])) for k, v in extra.items()]
        info.append("<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in pairs))
        hover_text.append("<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in pairs))
    return info, hover_text


def _plot_div(
    plot_idx: int,
    name: str,
    layout: np.ndarray,
    n: int,
    names: list[str],
    codes: np.ndarray,
    hover_text: list[str],
    point_size: float,
) -> str:
    """One layout as a plotly figure, one trace per class (plotly.js embedded in the first)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    lay = check_matrix(layout, f"layouts[{name!r}]")
    if lay.shape[0] != n or lay.shape[1] not in (2, 3):
        raise ValueError(f"layouts[{name!r}] has shape {lay.shape}, expected ({n}, 2) or ({n}, 3).")
    fig = go.Figure()
    for c, cname in enumerate(names):
        sel = np.flatnonzero(codes == c)
        common = {
            "name": cname,
            "mode": "markers",
            "customdata": sel.tolist(),
            "text": [hover_text[i] for i in sel],
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"size": point_size},
        }
        if lay.shape[1] == 3:
            fig.add_trace(go.Scatter3d(x=lay[sel, 0], y=lay[sel, 1], z=lay[sel, 2], **common))
        else:
            # SVG up to a few thousand points; WebGL beyond (browsers cap WebGL contexts).
            trace = go.Scatter if n <= _SVG_MAX_POINTS else go.Scattergl
            fig.add_trace(trace(x=lay[sel, 0], y=lay[sel, 1], **common))
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"itemsizing": "constant"},
        template="plotly_white",
    )
    if lay.shape[1] == 2:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    div = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=plot_idx == 0,  # embed plotly.js once, offline
        div_id=f"fl-plot-{plot_idx}",
        default_height="560px",
        post_script=(
            "var gd=document.getElementById('{plot_id}');"
            "gd.on('plotly_hover',function(e){flShow(e.points[0]);});"
            "gd.on('plotly_click',function(e){flShow(e.points[0]);});"
        ),
        config={"displaylogo": False, "responsive": True},
    )
    return f"<h2>{html.escape(name)}</h2>\n<div class='fl-plot'>{div}</div>"
