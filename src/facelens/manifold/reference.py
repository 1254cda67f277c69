"""The reference layouts of a data version, kept outside DVC outputs so that every later run
and experiment on that data is aligned to the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelens._io import atomic_write_text
from facelens.errors import DataError

__all__ = [
    "ManifoldReference",
    "load_reference",
    "save_reference",
]


_REFERENCE_FORMAT = "facelens.manifold_reference/1"


@dataclass(frozen=True)
class ManifoldReference:
    """Reference layouts for one data version, keyed ``"<embedding>/<layout method>"``.

    Attributes:
        ids: Anchor sample ids (sorted), shared by all layouts.
        layouts: Key -> array of shape ``(len(ids), d)``, rows in ``ids`` order.
        meta: Free-form string metadata (data version, seed, source run).
    """

    ids: tuple[str, ...]
    layouts: dict[str, np.ndarray]
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, lay in self.layouts.items():
            if np.asarray(lay).shape[:1] != (len(self.ids),):
                raise ValueError(
                    f"reference layout {key!r} has shape {np.asarray(lay).shape}, "
                    f"expected ({len(self.ids)}, d) rows in ids order."
                )

    def to_json(self) -> str:
        """Serialise to a JSON string (full float precision)."""
        doc = {
            "format": _REFERENCE_FORMAT,
            "meta": dict(self.meta),
            "ids": list(self.ids),
            "layouts": {k: np.asarray(v, dtype=float).tolist() for k, v in self.layouts.items()},
        }
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ManifoldReference:
        """Parse the output of :meth:`to_json`."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != _REFERENCE_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(
                f"not a manifold reference: format {got!r}, expected {_REFERENCE_FORMAT!r}."
            )
        return cls(
            ids=tuple(str(i) for i in doc["ids"]),
            layouts={k: np.asarray(v, dtype=np.float64) for k, v in doc["layouts"].items()},
            meta={str(k): str(v) for k, v in doc.get("meta", {}).items()},
        )


def save_reference(reference: ManifoldReference, path: Path) -> None:
    """Write a reference as JSON, atomically (a concurrent run never reads half of one)."""
    atomic_write_text(path, reference.to_json())


def load_reference(path: Path) -> ManifoldReference:
    """Read a reference written by :func:`save_reference`.

    Raises:
        DataError: the file is not a manifold reference (delete it to start a new one).
    """
    path = Path(path)
    try:
        return ManifoldReference.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a manifold reference ({exc}); delete it and the next manifold run "
            "writes a new one"
        ) from None
