"""Figure builders: each returns a matplotlib Figure and never saves (callers log or save)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: stages, tests and the server never open windows

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["attribute_r_figure", "confusion_figure", "fidelity_figure"]


def confusion_figure(confusion: np.ndarray, names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix with counts annotated.

    Args:
        confusion: (C, C) counts, rows = true class, columns = predicted class.
        names: the C class names.
    """
    counts = np.asarray(confusion, dtype=float)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if norm[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=8
            )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    return fig


def attribute_r_figure(table: Sequence[dict[str, Any]]) -> Figure:
    """Per-attribute Pearson r (bars) beside the rater ceiling and the paper's VGG16 column."""
    rows = sorted(table, key=lambda r: r["pearson"], reverse=True)
    names = [r["attribute"] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7.0, max(4.0, 0.22 * len(rows))))
    ax.barh(y, [r["pearson"] for r in rows], color="#4c72b0", label="facelens (test r)")
    ceiling = [r.get("rater_ceiling") for r in rows]
    if any(c is not None for c in ceiling):
        ax.scatter(
            [np.nan if c is None else c for c in ceiling],
            y,
            marker="|",
            s=120,
            color="black",
            label="rater ceiling (split-half)",
        )
    paper = [r.get("paper_VGG16") for r in rows]
    if any(p is not None for p in paper):
        ax.scatter(
            [np.nan if p is None else p for p in paper],
            y,
            marker="o",
            s=14,
            color="#dd8452",
            label="arXiv 2404.18352 VGG16",
        )
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, min(r["pearson"] for r in rows)), 1.0)
    ax.set_xlabel("Pearson r")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("Per-attribute Pearson r (test split)")
    fig.tight_layout()
    return fig


def fidelity_figure(trial: Sequence[float], full: Sequence[float], title: str) -> Figure:
    """Trial score against the score after full training, one point per configuration."""
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    ax.scatter(trial, full, color="#4c72b0")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("trial score (validation)")
    ax.set_ylabel("score after full training (validation)")
    fig.tight_layout()
    return fig
