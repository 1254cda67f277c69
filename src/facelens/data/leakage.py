"""The leakage check: identities, exact duplicates (``sha256``) and near duplicates that
different splits share, and per-split class counts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from facelens.constants import EXPRESSIONS
from facelens.errors import LeakageError

__all__ = [
    "SPLITS",
    "UNLABELED",
    "LeakageReport",
    "NearPairs",
    "check_leakage",
    "check_pool_disjoint",
    "class_codes",
]

#: Split names, in priority order for the leakage resolution (last = most protected).
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Class index used for rows without a label.
UNLABELED = len(EXPRESSIONS)
_EXAMPLES = 20  # offending entries listed per kind in reports and messages

NearPairs = Iterable[Sequence[Any]]


@dataclass(frozen=True)
class LeakageReport:
    """What crosses split boundaries (all lists empty = clean).

    Attributes:
        id_crossings: Ids present in more than one split.
        identity_crossings: ``{"identity", "splits", "ids"}`` per identity in several splits.
        exact_crossings: ``{"sha256", "splits", "ids"}`` per identical-pixel group split apart.
        near_crossings: ``{"a", "b", "distance", "split_a", "split_b"}`` per near pair split apart.
        sizes: Rows per split.
        counts_per_class: Split -> class name (or ``unlabeled``) -> rows.
        reassigned: Source-split rows moved to keep their group together
            (``{"id", "from", "to"}``).
    """

    id_crossings: list[str] = field(default_factory=list)
    identity_crossings: list[dict[str, Any]] = field(default_factory=list)
    exact_crossings: list[dict[str, Any]] = field(default_factory=list)
    near_crossings: list[dict[str, Any]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    counts_per_class: dict[str, dict[str, int]] = field(default_factory=dict)
    reassigned: list[dict[str, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing crosses split boundaries."""
        return not (
            self.id_crossings
            or self.identity_crossings
            or self.exact_crossings
            or self.near_crossings
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``clean`` and per-kind counts."""
        out = asdict(self)
        out["clean"] = self.clean
        out["n_crossings"] = {
            "ids": len(self.id_crossings),
            "identities": len(self.identity_crossings),
            "exact_duplicates": len(self.exact_crossings),
            "near_duplicates": len(self.near_crossings),
        }
        return out

    def summary(self) -> str:
        """One line naming the first offending ids/identities, or ``"clean"``."""
        if self.clean:
            return "clean"
        parts = []
        if self.id_crossings:
            parts.append(f"ids in several splits: {', '.join(self.id_crossings[:5])}")
        if self.identity_crossings:
            shown = "; ".join(
                f"identity {c['identity']!r} in {'/'.join(c['splits'])}"
                for c in self.identity_crossings[:5]
            )
            parts.append(f"{len(self.identity_crossings)} identities cross splits ({shown})")
        if self.exact_crossings:
            shown = "; ".join(
                f"ids {', '.join(c['ids'][:4])} in {'/'.join(c['splits'])}"
                for c in self.exact_crossings[:3]
            )
            parts.append(f"{len(self.exact_crossings)} exact-duplicate groups cross ({shown})")
        if self.near_crossings:
            shown = "; ".join(
                f"{c['a']} ({c['split_a']}) ~ {c['b']} ({c['split_b']}), distance {c['distance']}"
                for c in self.near_crossings[:3]
            )
            parts.append(f"{len(self.near_crossings)} near-duplicate pairs cross ({shown})")
        return "; ".join(parts)

    def raise_if_leaky(self) -> None:
        """Raise :class:`LeakageError` naming the offenders unless the report is clean."""
        if not self.clean:
            raise LeakageError(
                f"leakage between splits: {self.summary()}. Keep each identity and its "
                f"duplicates in one split (re-run `split`; check `usage` in the manifest)."
            )


def check_leakage(
    train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, near_pairs: NearPairs = ()
) -> LeakageReport:
    """Find identities, exact duplicates and near duplicates shared by different splits.

    Args:
        train: Train rows (``id``, ``identity``, ``sha256``; ``label`` optional).
        val: Validation rows.
        test: Test rows.
        near_pairs: ``(id_a, id_b, distance)`` tuples; pairs with an id in no split are ignored.

    Returns:
        The report; ``report.clean`` is True when nothing crosses.
    """
    frames = {"train": train, "val": val, "test": test}
    parts = [
        pd.DataFrame(
            {
                "id": f["id"].astype(str).to_numpy(),
                "identity": f["identity"].astype(str).to_numpy(),
                "sha256": f["sha256"].astype(str).to_numpy(),
                "split": name,
            }
        )
        for name, f in frames.items()
    ]
    rows = pd.concat(parts, ignore_index=True)
    order = {name: i for i, name in enumerate(SPLITS)}

    def crossings(col: str) -> list[dict[str, Any]]:
        spread = rows.groupby(col, sort=True)["split"].nunique()
        bad = rows[rows[col].isin(spread[spread > 1].index)]
        out = []
        for key, sub in bad.groupby(col, sort=True):
            splits = sorted(set(sub["split"]), key=order.__getitem__)
            out.append({col: str(key), "splits": splits, "ids": sub["id"].tolist()[:_EXAMPLES]})
        return out

    id_spread = rows.groupby("id")["split"].nunique()
    split_of = dict(zip(rows["id"], rows["split"], strict=True))
    near: list[dict[str, Any]] = []
    for pair in near_pairs:
        a, b = str(pair[0]), str(pair[1])
        sa, sb = split_of.get(a), split_of.get(b)
        if sa is not None and sb is not None and sa != sb:
            dist = int(pair[2]) if len(pair) > 2 else -1
            near.append({"a": a, "b": b, "distance": dist, "split_a": sa, "split_b": sb})
    return LeakageReport(
        id_crossings=[str(i) for i in id_spread[id_spread > 1].index],
        identity_crossings=crossings("identity"),
        exact_crossings=crossings("sha256"),
        near_crossings=near,
        sizes={name: len(f) for name, f in frames.items()},
        counts_per_class={name: _class_counts(f) for name, f in frames.items()},
    )


def class_codes(df: pd.DataFrame) -> np.ndarray:
    if "label" not in df.columns:
        return np.full(len(df), UNLABELED, dtype=np.int64)
    labels = pd.to_numeric(df["label"], errors="coerce")
    return labels.fillna(UNLABELED).astype(np.int64).clip(0, UNLABELED).to_numpy()


def _class_counts(df: pd.DataFrame) -> dict[str, int]:
    codes = class_codes(df)
    names = [*EXPRESSIONS, "unlabeled"]
    found = np.bincount(codes, minlength=len(names))
    return {names[i]: int(c) for i, c in enumerate(found) if c}


def check_pool_disjoint(
    manifest: pd.DataFrame,
    pool_identities: Iterable[str],
    pool_sha256: Iterable[str],
    namespace: str,
    *,
    where: str = "the prepared data",
) -> None:
    """Refuse task data that shares a person or an image with a pretraining pool.

    The pool's identities live in their own ``namespace`` (``pre-p0001``), so a task
    identity in that namespace is pool data mixed into the task; an identity or an image
    (pixel ``sha256``) found in both means the backbone has seen test people.

    Raises:
        LeakageError: naming the first shared identities or images and what to do.
    """
    task_ids = {str(v) for v in manifest.get("identity", pd.Series(dtype=str)).dropna()}
    pool_ids = set(pool_identities)
    shared = sorted((task_ids & pool_ids) | {i for i in task_ids if i.startswith(namespace)})
    images = set(manifest.get("sha256", pd.Series(dtype=str)).dropna()) & set(pool_sha256)
    if not shared and not images:
        return
    found = []
    if shared:
        found.append(f"{len(shared)} pretraining-pool identities ({', '.join(shared[:5])})")
    if images:
        shown = manifest.loc[manifest["sha256"].isin(images), "id"].astype(str).tolist()[:5]
        found.append(f"{len(images)} pretraining-pool images (ids {', '.join(shown)})")
    raise LeakageError(
        f"{where} contains {' and '.join(found)}: the pretrained backbone has seen these "
        f"people. Remove them from the data, or pretrain on another pool "
        f"(`pretrain.seed`) or use `model.weights: none`."
    )
