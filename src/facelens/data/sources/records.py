"""One candidate image of a source, not decoded yet, and the problems skipped on purpose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["IGNORED_REASONS", "RawRecord", "no_bytes"]

#: Problem reasons that mean "skipped on purpose": counted in reports, not quarantined.
IGNORED_REASONS: frozenset[str] = frozenset({"not_in_table"})


def no_bytes() -> bytes:
    """The ``load`` of a record that is never decoded (it carries a problem)."""
    return b""


@dataclass(frozen=True)
class RawRecord:
    """One candidate image from a source, not decoded yet.

    Attributes:
        key: Stable, unique key within the source (a relative path or ``fer2013_row00017``);
            ``prepare`` derives the image id from it.
        load: Returns the encoded image bytes (may raise ``OSError``, or ``ImageRejected``
            with ``too_large`` for a file above :data:`MAX_FILE_BYTES`).
        label: Expression index into EXPRESSIONS, or None when the source has none.
        identity: Subject id, or None when unknown (prepare then uses the image id).
        usage: ``train``/``val``/``test`` when the source prescribes a split, else None.
        attributes: Attribute name (from ATTRIBUTES) -> score on the 1..9 scale, or None.
        origin: Human-readable location for reports (a path, or ``fer2013.csv:row 17``).
        problem: ``(reason, detail)`` when the record is known bad before decoding.
    """

    key: str
    load: Callable[[], bytes] = field(repr=False, compare=False)
    label: int | None = None
    identity: str | None = None
    usage: str | None = None
    attributes: dict[str, float] | None = None
    origin: str = ""
    problem: tuple[str, str] | None = None
