"""Static layout figures, built without pyplot (no global state) and never saved."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from facelens.manifold.layouts import check_matrix
from facelens.manifold.quality import class_name

__all__ = [
    "panel_figure",
]


def _is_continuous(values: np.ndarray) -> bool:
    return values.dtype.kind == "f"


def _draw_scatter(
    ax: Any,
    layout: np.ndarray,
    values: np.ndarray,
    *,
    title: str,
    category_names: Sequence[str] | None,
    cmap: str,
    point_size: float,
) -> None:
    fig = ax.figure
    xy = layout[:, :2]
    if _is_continuous(values):
        order = np.argsort(values, kind="stable")  # high values drawn last, on top
        sc = ax.scatter(
            xy[order, 0],
            xy[order, 1],
            c=values[order],
            cmap=cmap,
            s=point_size,
            linewidths=0,
        )
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04)
    else:
        cats, codes = np.unique(values, return_inverse=True)
        many = len(cats) > 20
        palette = matplotlib.colormaps["tab20" if many else "tab10"]
        n_col = palette.N
        for i, cat in enumerate(cats):
            sel = codes == i
            name = class_name(cat, category_names)
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                color=palette(i % n_col),
                s=point_size,
                linewidths=0,
                label=name,
            )
        if not many:
            ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def panel_figure(
    layout: np.ndarray,
    colourings: Mapping[str, np.ndarray | Sequence[Any]],
    *,
    suptitle: str = "",
    category_names: Mapping[str, Sequence[str] | None] | None = None,
    cmap: str = "viridis",
    point_size: float = 8.0,
    ncols: int = 3,
) -> Figure:
    """One layout drawn once per colouring, side by side (e.g. expression, attractive, identity).

    Args:
        layout: Layout, shape ``(N, >=2)``.
        colourings: Panel title -> colour variable of shape ``(N,)``; see :func:`scatter_figure`.
        suptitle: Figure title.
        category_names: Panel title -> names for integer categories.
        cmap: Colormap for continuous panels.
        point_size: Marker area in points².
        ncols: Panels per row.

    Returns:
        A new ``matplotlib.figure.Figure``.
    """
    lay = check_matrix(layout, "layout")
    if lay.shape[1] < 2:
        raise ValueError(f"layout must have at least 2 columns to draw, got {lay.shape[1]}.")
    if not colourings:
        raise ValueError("colourings is empty; pass at least one variable to colour by.")
    n_panels = len(colourings)
    cols = max(1, min(ncols, n_panels))
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(4.2 * cols, 4.0 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, vals) in zip(axes.ravel(), colourings.items(), strict=False):
        arr = np.asarray(vals)
        if arr.shape != (lay.shape[0],):
            raise ValueError(
                f"colouring {name!r} has shape {arr.shape}, expected ({lay.shape[0]},)."
            )
        names = (category_names or {}).get(name)
        _draw_scatter(
            ax,
            lay,
            arr,
            title=name,
            category_names=names,
            cmap=cmap,
            point_size=point_size,
        )
    for ax in axes.ravel()[n_panels:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig
