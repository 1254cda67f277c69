"""Names shared by every part of facelens: expression classes, attribute poles, mask regions.

The attribute names and the reference statistics come from the bundled copy of
``reference/attribute_stats.json`` (aggregates of the 10k US Adult Faces ratings and the
per-attribute Pearson r table of arXiv 2404.18352).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "ATTRIBUTES",
    "EXPRESSIONS",
    "REGIONS",
    "REGION_BITS",
    "reference_stats",
]

#: FER2013 label order; index = label id.
EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Region masks are stored as one uint8 PNG per image with one bit per region.
REGIONS: tuple[str, ...] = ("face", "brows", "eyes", "nose", "mouth")
REGION_BITS: dict[str, int] = {name: 1 << i for i, name in enumerate(REGIONS)}


@cache
def reference_stats() -> dict[str, Any]:
    """Return the bundled reference statistics (attributes, mean, std, correlation, paper table)."""
    text = resources.files("facelens").joinpath("reference/attribute_stats.json").read_text()
    return json.loads(text)


#: The 40 attribute poles, in the reference file's order.
ATTRIBUTES: tuple[str, ...] = tuple(reference_stats()["attributes"])
