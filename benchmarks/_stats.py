"""Small statistics shared by the benchmark scripts (run as ``python benchmarks/x.py``)."""

from __future__ import annotations

import statistics


def mean_spread(values: list[float]) -> str:
    """``"0.937 +/- 0.007"``: mean and sample standard deviation (nan for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} +/- {spread:.3f}"
