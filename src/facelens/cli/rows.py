"""Reading the pyfunc's response rows on the command line: error lines and short summaries."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ROW_PREFIX", "ood_warning", "row_message", "row_summary", "row_values"]

#: The ``row <n>: `` the pyfunc puts before a row's message (the CLI names the file instead).
ROW_PREFIX = re.compile(r"^row \d+: ")


def row_message(path: Path, row: dict) -> str:
    """One line for a failed row: the file, the pyfunc's message and its error code."""
    return f"{path}: {ROW_PREFIX.sub('', str(row.get('message') or ''))} [{row.get('error')}]"


def row_values(row: dict) -> dict[str, float]:
    """The numeric outputs of a row (probabilities or ratings)."""
    skip = {"label", "error", "message", "cam_target", "cam_method", "cam_png", "ood_score", "ood"}
    return {k: float(v) for k, v in row.items() if k not in skip and v is not None}


def row_summary(row: dict) -> str:
    """``label (p=..)`` for a classifier, else the three highest ratings."""
    values = row_values(row)
    if row.get("label"):
        return f"{row['label']} (p={values.get('p_' + str(row['label']), float('nan')):.2f})"
    top = sorted(values.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {v:.1f}" for k, v in top)


def ood_warning(path: Path, row: dict) -> str | None:
    """The warning line for a row the model flags as out of distribution, else ``None``
    (also for models exported without a detector: their rows have no ``ood`` column)."""
    if not row.get("ood"):
        return None
    return (
        f"{path}: out of distribution (ood_score {float(row['ood_score']):.1f} is above the "
        "threshold calibrated on the validation split): unlike the training images, so the "
        "prediction is unreliable"
    )
