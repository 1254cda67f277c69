"""The manifold analysis of a set of embeddings: every layout, aligned to the data version's
reference, its quality, figures and the interactive page (pure: arrays in, objects out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from facelens._io import flatten_metrics
from facelens.manifold.alignment import MIN_ANCHORS, align_to_reference, alignment_subset
from facelens.manifold.figures import panel_figure
from facelens.manifold.html import interactive_html
from facelens.manifold.layouts import LAYOUT_METHODS, check_matrix, embed_2d
from facelens.manifold.quality import manifold_metrics
from facelens.manifold.reference import ManifoldReference
from facelens.progress import task as progress_task

__all__ = [
    "ManifoldResult",
    "run_manifold_analysis",
]


@dataclass
class ManifoldResult:
    """Everything the manifold stage writes or logs.

    Attributes:
        layouts: ``"<embedding>/<layout method>"`` -> aligned layout ``(N, 2|3)``.
        metrics: Same keys -> :func:`manifold_metrics` dict.
        figures: ``"<embedding>_<layout method>"`` -> multi-panel Figure (2-D layouts only).
        html: File name -> HTML page (one page ``manifold.html`` with every layout).
        reference: Reference to store for the next runs of this data version.
        aligned: Same keys as ``layouts`` -> whether the layout was aligned to a given reference.
    """

    layouts: dict[str, np.ndarray]
    metrics: dict[str, dict[str, Any]]
    figures: dict[str, Figure]
    html: dict[str, str]
    reference: ManifoldReference
    aligned: dict[str, bool]

    def flat_metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics named ``"<prefix>.<embedding>.<method>.<metric>"`` for MLflow.

        Per-class silhouettes become ``...silhouette.<class>``; NaNs and the counts ``n`` and
        ``k`` are dropped.
        """
        doc: dict[str, dict[str, Any]] = {}
        for key, met in self.metrics.items():
            embedding, method = key.split("/", 1)
            doc.setdefault(embedding, {})[method] = {
                name.removesuffix("_per_class"): value
                for name, value in met.items()
                if name not in ("n", "k")
            }
        return flatten_metrics(doc, prefix, sep=".", bools=True, lists=False)


def run_manifold_analysis(
    embeddings: Mapping[str, np.ndarray],
    ids: Sequence[str],
    labels: np.ndarray | Sequence[Any] | None,
    label_names: Sequence[str] | None,
    colour_by: Mapping[str, np.ndarray | Sequence[Any]] | None = None,
    thumbnails: Sequence[bytes | None] | None = None,
    methods: Sequence[str] = ("pca", "tsne", "umap", "umap3d"),
    seed: int = 0,
    reference: ManifoldReference | None = None,
    *,
    anchors: int = 500,
    k: int = 5,
) -> ManifoldResult:
    """Embed, measure, align and draw every embedding with every layout method.

    Args:
        embeddings: Name -> features ``(N, D)`` for the same samples (e.g. ``"penultimate"``,
            ``"attributes"``).
        ids: Sample ids, length ``N`` (unique).
        labels: Expression class per sample (``(N,)`` ints into ``label_names``) or ``None``.
        label_names: Class names (e.g. EXPRESSIONS), or ``None``.
        colour_by: Extra colourings, name -> ``(N,)``: floats are continuous (an attribute
            pole such as ``"attractive"``), other dtypes categorical (e.g. ``"identity"``).
        thumbnails: PNG bytes per sample for the interactive page, or ``None``.
        methods: Layout methods from :data:`LAYOUT_METHODS` (``"umap3d"`` = 3-D UMAP).
        seed: Seed for every layout and for the anchor subset.
        reference: Reference layouts of this data version; layouts with a matching key are
            aligned to it. ``None`` starts a new reference from this run.
        anchors: Size of the anchor subset for a new reference.
        k: Neighbourhood size for the metrics.

    Returns:
        A :class:`ManifoldResult`. The returned reference is the given one (so all runs stay
        aligned to the first), extended with any key it lacked.
    """
    mats, label_arr = _check_inputs(embeddings, ids, labels, methods)
    n = len(ids)
    ids_s = [str(i) for i in ids]
    colours = {name: np.asarray(v) for name, v in (colour_by or {}).items()}
    aligner = _Aligner(ids_s, reference, alignment_subset(ids_s, anchors, seed))
    layouts: dict[str, np.ndarray] = {}
    metrics: dict[str, dict[str, Any]] = {}
    figures: dict[str, Figure] = {}
    with progress_task("layouts", len(mats) * len(methods)) as bar:
        for emb_name, x in mats.items():
            for method in methods:
                key = f"{emb_name}/{method}"
                bar.update(len(layouts), {"now": key})
                algo = "umap" if method == "umap3d" else method
                dims = 3 if method == "umap3d" else 2
                lay = embed_2d(x, algo, seed, n_components=dims)  # type: ignore[arg-type]
                layouts[key] = lay = aligner.align(key, lay)
                metrics[key] = manifold_metrics(x, lay, label_arr, k=k, label_names=label_names)
                if dims == 2:
                    figures[f"{emb_name}_{method}"] = _figure(
                        lay, f"{emb_name} — {method}", label_arr, label_names, colours, n
                    )
        bar.update(len(layouts))

    page = interactive_html(
        {f"{k_.split('/')[0]} — {k_.split('/')[1]}": v for k_, v in layouts.items()},
        ids_s,
        label_arr,
        label_names=label_names,
        hover=colours,
        thumbnails=thumbnails,
        title="facelens manifold",
    )
    meta = dict(reference.meta) if reference is not None else {"seed": str(seed)}
    return ManifoldResult(
        layouts=layouts,
        metrics=metrics,
        figures=figures,
        html={"manifold.html": page},
        reference=ManifoldReference(
            ids=tuple(aligner.ref_ids), layouts=aligner.new_layouts, meta=meta
        ),
        aligned=aligner.aligned,
    )


def _check_inputs(
    embeddings: Mapping[str, np.ndarray],
    ids: Sequence[str],
    labels: np.ndarray | Sequence[Any] | None,
    methods: Sequence[str],
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if not embeddings:
        raise ValueError("embeddings is empty; pass at least one name -> (N, D) array.")
    bad = [m for m in methods if m not in LAYOUT_METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {LAYOUT_METHODS}, got {methods}.")
    n = len(ids)
    mats = {name: check_matrix(x, f"embeddings[{name!r}]") for name, x in embeddings.items()}
    for name, x in mats.items():
        if x.shape[0] != n:
            raise ValueError(f"embeddings[{name!r}] has {x.shape[0]} rows, expected {n} (ids).")
    label_arr = None if labels is None else np.asarray(labels)
    if label_arr is not None and label_arr.shape != (n,):
        raise ValueError(f"labels has shape {label_arr.shape}, expected ({n},).")
    return mats, label_arr


class _Aligner:
    """Aligns each layout to the reference's layout of the same key, and extends the
    reference with the keys it lacked (rows in the reference's anchor id order)."""

    def __init__(
        self, ids: list[str], reference: ManifoldReference | None, anchor_ids: list[str]
    ) -> None:
        self.ids = ids
        self.row_of = {i: r for r, i in enumerate(ids)}
        self.ref_layouts = dict(reference.layouts) if reference is not None else {}
        self.ref_ids = reference.ids if reference is not None else tuple(anchor_ids)
        self.new_layouts = dict(self.ref_layouts)
        self.aligned: dict[str, bool] = {}

    def align(self, key: str, lay: np.ndarray) -> np.ndarray:
        """``lay`` aligned to the reference (unchanged when it has no such key)."""
        self.aligned[key] = False
        ref = self.ref_layouts.get(key)
        if ref is not None and ref.shape[1] == lay.shape[1]:
            if len(set(self.ref_ids) & self.row_of.keys()) >= MIN_ANCHORS:
                self.aligned[key] = True
                return align_to_reference(lay, self.ids, ref, list(self.ref_ids))
        elif set(self.ref_ids) <= self.row_of.keys():
            self.new_layouts[key] = lay[[self.row_of[i] for i in self.ref_ids]]
        return lay


def _figure(
    lay: np.ndarray,
    title: str,
    label_arr: np.ndarray | None,
    label_names: Sequence[str] | None,
    colours: Mapping[str, np.ndarray],
    n: int,
) -> Figure:
    """One panel per colouring: expression (when labelled), then each extra colouring."""
    panels: dict[str, np.ndarray] = {}
    names: dict[str, Sequence[str] | None] = {}
    if label_arr is not None:
        panels["expression"] = label_arr
        names["expression"] = label_names
    panels.update(colours)
    if not panels:
        panels["sample"] = np.zeros(n, dtype=np.int64)
    return panel_figure(lay, panels, suptitle=title, category_names=names)
