"""A preview of SynthFACS: a grid of example faces, one row per expression class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from facelens.constants import EXPRESSIONS
from facelens.data.synthfacs.generate import SynthSample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["preview_grid"]


def preview_grid(samples: Sequence[SynthSample], n_per_class: int = 4) -> Figure:
    """A grid of example faces, one row per expression class (never saved here).

    Args:
        samples: generated samples (the first ``n_per_class`` of each class are shown).
        n_per_class: columns.

    Returns:
        A matplotlib Figure (no pyplot state involved); save it with ``fig.savefig``.
    """
    from matplotlib.figure import Figure

    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    rows = len(EXPRESSIONS)
    fig = Figure(figsize=(1.3 * n_per_class + 0.8, 1.3 * rows), layout="constrained")
    axes = fig.subplots(rows, n_per_class, squeeze=False)
    for r, name in enumerate(EXPRESSIONS):
        chosen = [s for s in samples if s.label == r][:n_per_class]
        for c in range(n_per_class):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(chosen):
                ax.imshow(chosen[c].image, interpolation="nearest")
                ax.set_title(chosen[c].id, fontsize=6)
            else:
                ax.set_axis_off()
        axes[r][0].set_ylabel(name, fontsize=9)
    return fig
