"""The faithfulness document: the three checks bundled for ``reports/explain/`` (NaN -> None)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from facelens._io import jsonable

__all__ = ["faithfulness_summary"]


def faithfulness_summary(
    *,
    localization: Mapping[str, Any] | None = None,
    sanity: Mapping[str, Any] | None = None,
    deletion: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Bundle the reports into one JSON-serialisable dict (NaN/inf become None).

    Args:
        localization: :func:`localization_report` output (or a method -> report mapping).
        sanity: :func:`sanity_check` output (or a method -> report mapping).
        deletion: :func:`deletion_report` output (or a method -> report mapping).
        meta: context such as method, layer, target kind, probe-set size, data version.

    Returns:
        ``{"meta": ..., "localization": ..., "sanity": ..., "deletion": ...}`` (absent parts
        omitted), safe for ``json.dump(..., allow_nan=False)``.
    """
    parts = {"meta": meta, "localization": localization, "sanity": sanity, "deletion": deletion}
    return {k: jsonable(v) for k, v in parts.items() if v is not None}
