"""Seeded, grouped, stratified train/val/test split (the leakage check is
:mod:`facelens.data.leakage`).

Rows that must never be separated form one group: the connected components of the graph
whose edges join rows with the same ``identity``, the same pixels (``sha256``) or a
near-duplicate pair. Groups are assigned whole, so no identity, exact duplicate or near
duplicate can cross splits.

With ``use_source_split`` and a ``usage`` column (FER2013 ``Usage``, split folders), the
source's split is kept. A group whose rows the source put in different splits (FER2013 has
duplicates across Training and PrivateTest) is moved whole into the most protected split
among them (test > val > train) and the move is recorded in ``LeakageReport.reassigned``. When
the source has no val (or no test) split, one is carved from its train groups. Unassigned
groups are placed greedily, largest first in a seeded order, into the split that best fits the
per-class targets ``fraction * class count`` (least squares, classes weighted equally).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from facelens._io import atomic_output_dir
from facelens.data.leakage import (
    SPLITS,
    UNLABELED,
    LeakageReport,
    NearPairs,
    check_leakage,
    class_codes,
)
from facelens.data.manifest import (
    find_near_duplicates,
    read_manifest,
    write_manifest,
)
from facelens.data.params import SplitParams

__all__ = [
    "SplitResult",
    "group_ids",
    "split_manifest",
    "split_prepared",
    "stratified_subset",
]


@dataclass(frozen=True)
class SplitResult:
    """The three splits (rows of the manifest, manifest columns) and their leakage report."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    leakage: LeakageReport

    def frames(self) -> dict[str, pd.DataFrame]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}


def group_ids(manifest: pd.DataFrame, near_pairs: NearPairs = ()) -> np.ndarray:
    """Group index per row: connected components over identity, sha256 and near pairs.

    Args:
        manifest: Frame with ``id``, ``identity`` and ``sha256`` columns.
        near_pairs: ``(id_a, id_b, ...)`` tuples; ids not in ``manifest`` are ignored.

    Returns:
        ``(n,)`` int array; rows with the same value must stay in the same split.
    """
    n = len(manifest)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    edges_a: list[np.ndarray] = []
    edges_b: list[np.ndarray] = []
    rows = np.arange(n)
    for col in ("identity", "sha256"):
        codes, _ = pd.factorize(manifest[col].astype(str))
        first = np.full(codes.max() + 1, -1, dtype=np.int64)
        # the first row of each code, via reversed assignment (later writes win)
        first[codes[::-1]] = rows[::-1]
        edges_a.append(rows)
        edges_b.append(first[codes])
    index = {ident: i for i, ident in enumerate(manifest["id"].astype(str))}
    pairs = [(index[str(p[0])], index[str(p[1])]) for p in near_pairs if _both_in(p, index)]
    if pairs:
        arr = np.asarray(pairs, dtype=np.int64)
        edges_a.append(arr[:, 0])
        edges_b.append(arr[:, 1])
    a, b = np.concatenate(edges_a), np.concatenate(edges_b)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _both_in(pair: Sequence[Any], index: dict[str, int]) -> bool:
    return str(pair[0]) in index and str(pair[1]) in index


def split_manifest(
    manifest: pd.DataFrame, params: SplitParams, near_pairs: NearPairs = ()
) -> SplitResult:
    """Split manifest rows into train/val/test without leakage; deterministic given the seed.

    Args:
        manifest: Manifest frame (``id``, ``identity``, ``sha256``, ``label``, ``usage``...);
            not modified.
        params: Seed, fractions and whether to keep the source's split.
        near_pairs: Near-duplicate pairs ``(id_a, id_b, distance)`` to keep together.

    Returns:
        The splits (rows in manifest order, manifest columns) and their leakage report.
    """
    pairs = [tuple(p) for p in near_pairs]
    df = manifest.reset_index(drop=True)
    n = len(df)
    groups = group_ids(df, pairs)
    n_groups = int(groups.max()) + 1 if n else 0
    classes = class_codes(df)
    counts = np.zeros((n_groups, UNLABELED + 1), dtype=np.int64)  # (G, classes + unlabeled)
    np.add.at(counts, (groups, classes), 1)

    fixed, reassigned = _source_assignment(df, groups, n_groups, params.use_source_split)
    fractions = np.array(
        [
            1.0 - params.val_fraction - params.test_fraction,
            params.val_fraction,
            params.test_fraction,
        ]
    )
    allowed = _allowed_splits(fixed, fractions)
    assignment = _greedy_assign(counts, allowed, fractions, params.seed)

    split_of_row = assignment[groups] if n else np.zeros(0, dtype=np.int64)
    frames = [df[split_of_row == s].reset_index(drop=True) for s in range(len(SPLITS))]
    report = check_leakage(*frames, near_pairs=pairs)
    report = LeakageReport(**{**asdict(report), "reassigned": reassigned})
    return SplitResult(train=frames[0], val=frames[1], test=frames[2], leakage=report)


def split_prepared(prepared_dir: Path, out_dir: Path, params: SplitParams) -> SplitResult:
    """The ``split`` stage's core: read the manifest, split, check, write atomically.

    Near-duplicate pairs come from the prepared ``report.json`` (``near_duplicates``); when it
    is missing they are recomputed at its ``near_duplicate_distance`` (default 4).

    Writes ``out_dir/{train,val,test}.csv`` (manifest columns) and ``out_dir/leakage.json``.

    Raises:
        FileNotFoundError: When the manifest is missing.
        LeakageError: When the split is not clean (nothing is written then).
    """
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir / "manifest.csv")
    near_pairs = _near_pairs_of(prepared_dir, manifest)
    result = split_manifest(manifest, params, near_pairs)
    result.leakage.raise_if_leaky()
    with atomic_output_dir(Path(out_dir)) as tmp:
        for name, frame in result.frames().items():
            write_manifest(frame, tmp / f"{name}.csv")
        payload = {"params": params.model_dump(mode="json"), **result.leakage.to_dict()}
        (tmp / "leakage.json").write_text(json.dumps(payload, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- internals


def _near_pairs_of(prepared_dir: Path, manifest: pd.DataFrame) -> list[tuple[str, str, int]]:
    report_path = prepared_dir / "report.json"
    report: dict[str, Any] = {}
    if report_path.is_file():
        report = json.loads(report_path.read_text())
    if isinstance(report.get("near_duplicates"), list):
        return [(str(a), str(b), int(d)) for a, b, d in report["near_duplicates"]]
    threshold = int(report.get("near_duplicate_distance", 4))
    return find_near_duplicates(manifest, threshold)


def _source_assignment(
    df: pd.DataFrame, groups: np.ndarray, n_groups: int, use_source_split: bool
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Split index per group fixed by the source (-1 = free), and the rows moved to do so."""
    fixed = np.full(n_groups, -1, dtype=np.int64)
    reassigned: list[dict[str, str]] = []
    if not use_source_split or "usage" not in df.columns or not len(df):
        return fixed, reassigned
    order = {name: i for i, name in enumerate(SPLITS)}
    usage = df["usage"].fillna("").astype(str).map(lambda u: order.get(u, -1)).to_numpy()
    np.maximum.at(fixed, groups, usage)  # most protected split among the group's rows
    moved = (usage >= 0) & (usage != fixed[groups])
    for i in np.flatnonzero(moved):
        reassigned.append(
            {
                "id": str(df["id"].iloc[i]),
                "from": SPLITS[usage[i]],
                "to": SPLITS[fixed[groups[i]]],
            }
        )
    return fixed, reassigned


def _allowed_splits(fixed: np.ndarray, fractions: np.ndarray) -> list[tuple[int, ...]]:
    """Splits each group may go to: free groups anywhere (with a positive fraction); the
    source's train groups also to a split the source lacks; other fixed groups stay."""
    wanted = tuple(s for s in range(len(SPLITS)) if s == 0 or fractions[s] > 0)
    present = set(fixed[fixed >= 0].tolist())
    missing = tuple(s for s in wanted if s != 0 and s not in present)
    allowed: list[tuple[int, ...]] = []
    for f in fixed.tolist():
        if f < 0:
            allowed.append(wanted)
        elif f == 0:
            allowed.append((0, *missing))
        else:
            allowed.append((f,))
    return allowed


def _greedy_assign(
    counts: np.ndarray, allowed: list[tuple[int, ...]], fractions: np.ndarray, seed: int
) -> np.ndarray:
    n_groups, _ = counts.shape
    assignment = np.zeros(n_groups, dtype=np.int64)
    if n_groups == 0:
        return assignment
    totals = counts.sum(axis=0).astype(np.float64)  # (C,)
    targets = fractions[:, None] * totals[None, :]  # (S, C)
    weights = 1.0 / np.maximum(totals, 1.0)  # each class matters equally
    size_weight = 1.0 / max(float(totals.sum()), 1.0)
    size_targets = targets.sum(axis=1)  # (S,)
    assigned = np.zeros_like(targets)
    free: list[int] = []
    for g, options in enumerate(allowed):
        if len(options) == 1:
            assignment[g] = options[0]
            assigned[options[0]] += counts[g]
        else:
            free.append(g)
    rng = np.random.default_rng(seed)
    order = np.asarray(free, dtype=np.int64)[rng.permutation(len(free))]
    sizes = counts.sum(axis=1)
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest groups first
    for g in order.tolist():
        x = counts[g].astype(np.float64)
        best, best_cost = -1, np.inf
        for s in allowed[g]:
            gap = assigned[s] - targets[s]
            cost = float(np.sum(weights * ((gap + x) ** 2 - gap**2)))
            size_gap = assigned[s].sum() - size_targets[s]
            cost += size_weight * float((size_gap + x.sum()) ** 2 - size_gap**2)
            if cost < best_cost:
                best, best_cost = s, cost
        assignment[g] = best
        assigned[best] += x
    return assignment


def stratified_subset(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded, label-stratified subset of ``rows`` (all of them when ``fraction >= 1``).

    Rows without labels (the attributes task) are sampled uniformly; the subset keeps the
    original row order.
    """
    if fraction >= 1.0:
        return rows
    key = rows["label"] if "label" in rows and rows["label"].notna().all() else None
    if key is None:
        return rows.sample(frac=fraction, random_state=seed).sort_index()
    parts = [
        g.sample(n=max(1, round(len(g) * fraction)), random_state=seed)
        for _, g in rows.groupby(key, sort=True)
    ]
    return pd.concat(parts).sort_index()
