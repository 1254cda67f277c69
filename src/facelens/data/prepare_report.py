"""What ``prepare`` (or ``check``) found: the report, the quarantine, the summary of the
accepted rows (counts, duplicates, label conflicts, source-split leakage)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.leakage import SPLITS, check_leakage
from facelens.data.manifest import attribute_column, find_exact_duplicates, find_near_duplicates
from facelens.data.params import DataParams

if TYPE_CHECKING:
    from facelens.data.prepare_rows import PreparedRow

__all__ = ["PrepareReport", "nothing_usable", "record_quarantine", "sparse_classes", "summarise"]

#: Quarantined inputs quoted in the "no usable image" message.
_EXAMPLES = 5


@dataclass
class PrepareReport:
    """What ``prepare`` (or ``check``) found; ``to_dict()`` is written as ``report.json``.

    Attributes:
        source: The source kind (``synth``, ``imagefolder``...).
        path: The source path (None for synth).
        image_size: Side of the written images.
        n_images: Accepted images.
        n_quarantined: Refused inputs.
        quarantine_by_reason: Reason -> count.
        quarantine: ``{"file", "reason", "detail"}`` per refused input.
        n_ignored: Inputs skipped on purpose (e.g. images not listed in an attribute table).
        ignored_by_reason: Reason -> count of skipped inputs.
        counts_per_class: Expression name (and ``unlabeled``) -> accepted images.
        counts_per_usage: Source split (``train``/``val``/``test``/``none``) -> accepted images.
        n_identities: Distinct identities among accepted images.
        attributes: Attribute names with an ``attr_*`` column in the manifest.
        exact_duplicates: Groups of ids with identical pixels.
        near_duplicates: ``(id_a, id_b, distance)`` pHash pairs within the threshold.
        near_duplicate_distance: The threshold used.
        label_conflicts: Exact-duplicate groups whose labels disagree.
        leakage: Source-split leakage (identities/duplicates shared by the source's own
            splits), or None when the source prescribes no split.
        synth: SynthFACS calibration (reliability, correlation_mad, images_per_second) or None.
        duration_s: Wall time.
        images_per_second: Inputs processed per second.
    """

    source: str
    path: str | None
    image_size: int
    n_images: int = 0
    n_quarantined: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    quarantine: list[dict[str, str]] = field(default_factory=list)
    n_ignored: int = 0
    ignored_by_reason: dict[str, int] = field(default_factory=dict)
    counts_per_class: dict[str, int] = field(default_factory=dict)
    counts_per_usage: dict[str, int] = field(default_factory=dict)
    n_identities: int = 0
    attributes: list[str] = field(default_factory=list)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    near_duplicate_distance: int = 4
    label_conflicts: list[list[str]] = field(default_factory=list)
    leakage: dict[str, Any] | None = None
    synth: dict[str, Any] | None = None
    duration_s: float = 0.0
    images_per_second: float = 0.0

    def to_dict(self, *, timings: bool = True) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists). ``timings=False`` leaves out the wall-clock
        figures (``duration_s``, ``images_per_second``, the generator's speed): what
        ``report.json`` holds, so that the prepared folder is byte-identical, and its DVC hash
        equal, for the same params on any machine."""
        out = asdict(self)
        out["near_duplicates"] = [list(p) for p in self.near_duplicates]
        if not timings:
            for key in _TIMINGS:
                out.pop(key)
            if out["synth"] is not None:
                out["synth"] = {k: v for k, v in out["synth"].items() if k not in _TIMINGS}
        return out


#: Wall-clock fields of the report (and of its ``synth`` part), not written to ``report.json``.
_TIMINGS = ("duration_s", "images_per_second")


def record_quarantine(report: PrepareReport, origin: str, reason: str, detail: str) -> None:
    report.quarantine.append({"file": origin, "reason": reason, "detail": detail})
    report.n_quarantined += 1
    report.quarantine_by_reason[reason] = report.quarantine_by_reason.get(reason, 0) + 1


def summarise(report: PrepareReport, rows: list[PreparedRow], threshold: int) -> None:
    report.n_images = len(rows)
    report.quarantine_by_reason = dict(sorted(report.quarantine_by_reason.items()))
    labels = Counter(r.label for r in rows)
    if any(label is not None for label in labels):
        report.counts_per_class = {name: labels.get(i, 0) for i, name in enumerate(EXPRESSIONS)}
    if labels.get(None):
        report.counts_per_class["unlabeled"] = labels[None]
    usage = Counter(r.usage or "none" for r in rows)
    report.counts_per_usage = {u: usage[u] for u in (*SPLITS, "none") if usage.get(u)}
    report.n_identities = len({r.identity for r in rows})
    attrs = {c for r in rows for c in r.extra if c.startswith("attr_")}
    report.attributes = [a for a in ATTRIBUTES if attribute_column(a) in attrs]
    if not rows:
        return
    frame = pd.DataFrame(
        {
            "id": [r.id for r in rows],
            "sha256": [r.sha256 for r in rows],
            "phash": [r.phash for r in rows],
            "identity": [r.identity for r in rows],
            "usage": [r.usage for r in rows],
            "label": [r.label for r in rows],
        }
    )
    report.exact_duplicates = find_exact_duplicates(frame)
    report.near_duplicates = find_near_duplicates(frame, threshold)
    label_of = dict(zip(frame["id"], [r.label for r in rows], strict=True))
    report.label_conflicts = [
        group
        for group in report.exact_duplicates
        if len({label_of[i] for i in group if label_of[i] is not None}) > 1
    ]
    if (frame["usage"] != "").any():
        parts = [frame[frame["usage"] == s] for s in SPLITS]
        leak = check_leakage(*parts, near_pairs=report.near_duplicates)
        report.leakage = {
            "clean": leak.clean,
            "identities": len(leak.identity_crossings),
            "exact_duplicates": len(leak.exact_crossings),
            "near_duplicates": len(leak.near_crossings),
            "summary": leak.summary(),
        }


def nothing_usable(params: DataParams, report: PrepareReport) -> str:
    where = params.path or "SynthFACS"
    reasons = ", ".join(f"{k}: {v}" for k, v in report.quarantine_by_reason.items()) or "none"
    examples = "; ".join(
        f"{q['file']}: {q['reason']} ({q['detail']})" for q in report.quarantine[:_EXAMPLES]
    )
    ignored = f", {report.n_ignored} ignored {report.ignored_by_reason}" if report.n_ignored else ""
    return (
        f"{where}: no usable image ({report.n_quarantined} quarantined by reason: {reasons}"
        f"{ignored}). First problems: {examples or 'the source is empty'}. "
        f"Fix the source or point data.path at the right place; run `facelens data check`."
    )


def sparse_classes(report: PrepareReport) -> str | None:
    """A one-line warning naming the expression classes with 0 or 1 accepted image (such a
    class cannot be both learnt and tested; its F1 is undefined or rests on one image), or
    None when every class has at least 2 (or the source has no expression labels)."""
    counts = {k: v for k, v in report.counts_per_class.items() if k != "unlabeled"}
    sparse = {name: n for name, n in counts.items() if n < 2}
    if not counts or not sparse:
        return None
    listed = ", ".join(f"{name} {n}" for name, n in sparse.items())
    return (
        f"classes with fewer than 2 images: {listed}; they cannot be in both the train and the "
        "test split (macro-F1 averages the classes the test split has): add images of them"
    )
