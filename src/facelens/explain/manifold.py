"""Manifold analysis of learned embeddings: PCA / t-SNE / UMAP layouts, their quality, alignment.

Everything here is pure: arrays in, arrays / figures / dicts / strings out. Figures are
``matplotlib.figure.Figure`` objects built without pyplot (no global state) and never saved;
the interactive page is returned as an HTML string. The ``manifold`` stage writes the files
and logs them to MLflow.

Layouts of different runs are made comparable by aligning each one to a *reference layout*
(one per data version) on a fixed, seeded subset of sample ids with orthogonal Procrustes
(centring, uniform scaling, rotation and reflection). None of the quality measures changes
under such a similarity transform, so alignment only affects how the pictures look.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "EMBED_METHODS",
    "LAYOUT_METHODS",
    "ManifoldReference",
    "ManifoldResult",
    "align_to_reference",
    "alignment_subset",
    "embed_2d",
    "interactive_html",
    "knn_accuracy",
    "load_reference",
    "manifold_metrics",
    "panel_figure",
    "run_manifold_analysis",
    "save_reference",
    "scatter_figure",
    "thumbnail_png",
]

Method = Literal["pca", "tsne", "umap"]

#: Embedding algorithms accepted by :func:`embed_2d`.
EMBED_METHODS: tuple[str, ...] = ("pca", "tsne", "umap")

#: Layout names accepted by :func:`run_manifold_analysis` (``umap3d`` = UMAP with 3 components).
LAYOUT_METHODS: tuple[str, ...] = ("pca", "tsne", "umap", "umap3d")

_REFERENCE_FORMAT = "facelens.manifold_reference/1"
_MIN_ANCHORS = 3
_SVG_MAX_POINTS = 3000


# --------------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------------


def _check_matrix(X: np.ndarray, name: str = "X") -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features), got shape {arr.shape}; "
            "flatten each sample's embedding first."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or impute those rows.")
    return arr


def embed_2d(
    X: np.ndarray,
    method: Method,
    seed: int,
    n_components: int = 2,
    *,
    perplexity: float | None = None,
    n_neighbors: int | None = None,
) -> np.ndarray:
    """Embed samples in a low-dimensional layout.

    Args:
        X: Samples, shape ``(N, D)``.
        method: ``"pca"``, ``"tsne"`` or ``"umap"``.
        seed: Random seed; the same seed and input give the same layout.
        n_components: Output dimensionality (2 or 3; PCA allows up to ``min(N, D)``).
        perplexity: t-SNE perplexity; default ``min(30, (N - 1) / 3)`` (at least 1), so
            that small sets stay below sklearn's ``perplexity < N`` limit.
        n_neighbors: UMAP neighbourhood size; default ``min(15, N - 1)``.

    Returns:
        Layout, shape ``(N, n_components)``, float64.

    Raises:
        ValueError: Unknown method, too few samples, or a non-finite input.

    Note:
        UMAP is given ``random_state=seed`` and therefore runs single-threaded
        (``n_jobs=1``); that is the price of a reproducible layout.
    """
    arr = _check_matrix(X)
    n, d = arr.shape
    if method not in EMBED_METHODS:
        raise ValueError(f"method must be one of {EMBED_METHODS}, got {method!r}.")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}.")
    if n < n_components + 2:
        raise ValueError(
            f"{method} needs at least n_components + 2 = {n_components + 2} samples, got {n}; "
            "embed a larger set."
        )

    if method == "pca":
        from sklearn.decomposition import PCA

        if n_components > min(n, d):
            raise ValueError(
                f"PCA can give at most min(n_samples, n_features) = {min(n, d)} components, "
                f"got n_components={n_components}."
            )
        # "auto" picks a seeded randomized SVD for wide inputs (4096-D features: ~1 s, not 10 s).
        pca = PCA(n_components=n_components, svd_solver="auto", random_state=seed)
        return np.asarray(pca.fit_transform(arr), dtype=np.float64)

    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = perplexity if perplexity is not None else max(1.0, min(30.0, (n - 1) / 3.0))
        if not 0 < perp < n:
            raise ValueError(f"t-SNE perplexity must lie in (0, {n}) for {n} samples, got {perp}.")
        tsne = TSNE(
            n_components=n_components,
            perplexity=perp,
            init="pca",
            learning_rate="auto",
            random_state=seed,
            method="barnes_hut" if n_components <= 3 else "exact",
        )
        return np.asarray(tsne.fit_transform(arr), dtype=np.float64)

    # UMAP
    import umap

    k = n_neighbors if n_neighbors is not None else min(15, n - 1)
    if not 2 <= k < n:
        raise ValueError(f"UMAP n_neighbors must lie in [2, {n - 1}] for {n} samples, got {k}.")
    # Spectral init solves for n_components + 1 eigenvectors; on tiny sets it fails and
    # UMAP falls back noisily, so start from a seeded random layout there.
    init = "spectral" if n > 4 * (n_components + 1) else "random"
    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=k,
        init=init,
        random_state=seed,
        transform_seed=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # Fully disconnected small graphs and numba's deprecation chatter are not actionable.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        layout = reducer.fit_transform(arr)
    return np.asarray(layout, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Quality measures
# --------------------------------------------------------------------------------------------


def _encode_labels(labels: np.ndarray | Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the samples, got {arr.shape}.")
    classes, codes = np.unique(arr, return_inverse=True)
    return classes, codes.astype(np.int64)


def knn_accuracy(Y: np.ndarray, labels: np.ndarray | Sequence[Any], k: int = 5) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote in a layout.

    Equivalent to leave-one-out cross-validation of
    ``sklearn.neighbors.KNeighborsClassifier(n_neighbors=k)`` (uniform weights, ties to the
    smallest class), computed with one neighbour search instead of N fits.

    Args:
        Y: Layout or feature matrix, shape ``(N, d)``.
        labels: One label per sample, shape ``(N,)`` (any sortable values).
        k: Neighbours per vote; reduced to ``N - 1`` on tiny sets.

    Returns:
        Fraction of samples whose label equals the vote of their k nearest other samples.
    """
    from sklearn.neighbors import NearestNeighbors

    arr = _check_matrix(Y, "Y")
    n = arr.shape[0]
    _, codes = _encode_labels(labels, n)
    if n < 2:
        raise ValueError(f"knn_accuracy needs at least 2 samples, got {n}.")
    kk = max(1, min(k, n - 1))
    # X=None: each indexed point's neighbours, excluding the point itself (leave-one-out).
    neigh = NearestNeighbors(n_neighbors=kk).fit(arr).kneighbors(return_distance=False)
    votes = codes[neigh]  # (N, k)
    n_classes = int(codes.max()) + 1
    counts = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), kk), votes.ravel()), 1)
    predicted = counts.argmax(axis=1)  # ties -> smallest class, as scipy.stats.mode
    return float(np.mean(predicted == codes))


def manifold_metrics(
    X: np.ndarray,
    Y2d: np.ndarray,
    labels: np.ndarray | Sequence[Any] | None,
    *,
    k: int = 5,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Quality of one layout: neighbourhood preservation and class structure.

    Args:
        X: Original samples, shape ``(N, D)``.
        Y2d: Their layout, shape ``(N, d)``.
        labels: Class label per sample (``(N,)``) or ``None`` when there are no classes.
        k: Neighbourhood size for trustworthiness and the k-NN vote (shrunk on tiny sets).
        label_names: Names for integer labels ``0..C-1`` in ``silhouette_per_class``.

    Returns:
        ``n``, ``k``, ``trustworthiness`` (sklearn, in [0, 1]), and with labels also
        ``knn_accuracy`` (leave-one-out, in the layout), ``knn_accuracy_input`` (the same in
        the original space, to show what the layout loses), ``knn_chance`` (majority-class
        rate), ``silhouette`` (mean, in the layout; NaN unless 2 <= classes < N) and
        ``silhouette_per_class`` (class name -> mean silhouette of its samples).
    """
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import silhouette_samples

    xa = _check_matrix(X)
    ya = _check_matrix(Y2d, "Y2d")
    n = xa.shape[0]
    if ya.shape[0] != n:
        raise ValueError(f"X has {n} rows but Y2d has {ya.shape[0]}; pass the layout of X.")
    if n < 4:
        raise ValueError(f"manifold_metrics needs at least 4 samples, got {n}.")
    # sklearn requires n_neighbors < n_samples / 2.
    kt = max(1, min(k, math.ceil(n / 2) - 1))
    out: dict[str, Any] = {
        "n": n,
        "k": kt,
        "trustworthiness": float(trustworthiness(xa, ya, n_neighbors=kt)),
    }
    if labels is None:
        return out
    classes, codes = _encode_labels(labels, n)
    out["knn_accuracy"] = knn_accuracy(ya, codes, k=k)
    out["knn_accuracy_input"] = knn_accuracy(xa, codes, k=k)
    out["knn_chance"] = float(np.bincount(codes).max() / n)
    if 2 <= len(classes) <= n - 1:
        sil = silhouette_samples(ya, codes)
        out["silhouette"] = float(sil.mean())
        per_class: dict[str, float] = {}
        for i, c in enumerate(classes):
            name = _class_name(c, label_names)
            per_class[name] = float(sil[codes == i].mean())
        out["silhouette_per_class"] = per_class
    else:
        out["silhouette"] = float("nan")
        out["silhouette_per_class"] = {}
    return out


def _class_name(value: Any, label_names: Sequence[str] | None) -> str:
    if (
        label_names is not None
        and isinstance(value, (int, np.integer))
        and 0 <= int(value) < len(label_names)
    ):
        return str(label_names[int(value)])
    return str(value)


# --------------------------------------------------------------------------------------------
# Alignment across runs
# --------------------------------------------------------------------------------------------


def alignment_subset(ids: Sequence[str], size: int, seed: int) -> list[str]:
    """Choose the fixed anchor subset used to align layouts across runs.

    The choice depends only on the *set* of ids, the size and the seed (ids are sorted before
    a seeded draw), so every run over the same data version picks the same anchors.

    Args:
        ids: Sample ids (unique).
        size: Number of anchors; all ids when ``size >= len(ids)``.
        seed: Seed of the draw.

    Returns:
        The chosen ids, sorted.
    """
    unique = sorted({str(i) for i in ids})
    if len(unique) != len(ids):
        raise ValueError(f"ids must be unique; got {len(ids)} ids but {len(unique)} distinct.")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}.")
    if size >= len(unique):
        return unique
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(unique), size=size, replace=False)
    return sorted(unique[i] for i in chosen)


def align_to_reference(
    layout: np.ndarray,
    ids: Sequence[str],
    reference_layout: np.ndarray,
    reference_ids: Sequence[str],
) -> np.ndarray:
    """Map a layout onto a reference layout by a similarity transform fitted on shared ids.

    Fits centring, one uniform scale and an orthogonal map (rotation, reflection allowed;
    ``scipy.linalg.orthogonal_procrustes``) on the ids present in both, then applies it to
    *every* point of ``layout``.

    Args:
        layout: Layout to align, shape ``(N, d)``.
        ids: Its sample ids, length ``N``.
        reference_layout: Reference layout, shape ``(M, d)``.
        reference_ids: Reference sample ids, length ``M``.

    Returns:
        The aligned layout, shape ``(N, d)`` (a new array; inputs are not modified).

    Raises:
        ValueError: Shape or id mismatch, fewer than 3 shared ids, or a degenerate layout.
    """
    from scipy.linalg import orthogonal_procrustes

    a = _check_matrix(layout, "layout")
    b = _check_matrix(reference_layout, "reference_layout")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"layout has {a.shape[1]} dimensions but the reference has {b.shape[1]}; "
            "align layouts of the same method and n_components."
        )
    if len(ids) != a.shape[0] or len(reference_ids) != b.shape[0]:
        raise ValueError(
            f"ids ({len(ids)}) and reference_ids ({len(reference_ids)}) must match the layout "
            f"rows ({a.shape[0]}, {b.shape[0]})."
        )
    pos_a = {str(i): r for r, i in enumerate(ids)}
    pos_b = {str(i): r for r, i in enumerate(reference_ids)}
    shared = sorted(pos_a.keys() & pos_b.keys())
    if len(shared) < _MIN_ANCHORS:
        raise ValueError(
            f"only {len(shared)} ids are shared with the reference, at least {_MIN_ANCHORS} "
            "are needed; build the reference from the same data version."
        )
    sa = a[[pos_a[i] for i in shared]]
    sb = b[[pos_b[i] for i in shared]]
    mu_a, mu_b = sa.mean(axis=0), sb.mean(axis=0)
    ca, cb = sa - mu_a, sb - mu_b
    na, nb = float(np.linalg.norm(ca)), float(np.linalg.norm(cb))
    if na == 0.0 or nb == 0.0:
        raise ValueError("the shared points collapse to a single point; cannot align.")
    rot, scale = orthogonal_procrustes(ca / na, cb / nb)
    # Optimal scale for unit-norm ca @ rot onto unit-norm cb is the sum of singular values.
    return ((a - mu_a) / na) @ rot * (scale * nb) + mu_b


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

    def to_csv(self) -> str:
        """Serialise to a long CSV: ``key,id,c0,c1[,c2]`` (metadata is not kept)."""
        width = max((np.asarray(v).shape[1] for v in self.layouts.values()), default=2)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["key", "id", *[f"c{j}" for j in range(width)]])
        for key, lay in self.layouts.items():
            arr = np.asarray(lay, dtype=float)
            for i, row in zip(self.ids, arr, strict=True):
                cells = [repr(float(x)) for x in row] + [""] * (width - arr.shape[1])
                writer.writerow([key, i, *cells])
        return buf.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> ManifoldReference:
        """Parse the output of :meth:`to_csv`."""
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or rows[0][:2] != ["key", "id"]:
            raise ValueError("reference CSV must start with a 'key,id,c0,...' header row.")
        per_key: dict[str, list[tuple[str, list[float]]]] = {}
        for row in rows[1:]:
            vals = [float(x) for x in row[2:] if x != ""]
            per_key.setdefault(row[0], []).append((row[1], vals))
        ids: tuple[str, ...] | None = None
        layouts: dict[str, np.ndarray] = {}
        for key, items in per_key.items():
            key_ids = tuple(i for i, _ in items)
            if ids is None:
                ids = key_ids
            elif key_ids != ids:
                raise ValueError(f"reference CSV key {key!r} lists different ids from the first.")
            layouts[key] = np.asarray([v for _, v in items], dtype=np.float64)
        return cls(ids=ids or (), layouts=layouts)


def save_reference(reference: ManifoldReference, path: Path) -> None:
    """Write a reference as JSON (``.json``) or CSV (``.csv``), chosen by suffix."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(reference.to_json(), encoding="utf-8")
    elif path.suffix == ".csv":
        path.write_text(reference.to_csv(), encoding="utf-8")
    else:
        raise ValueError(f"reference path must end in .json or .csv, got {path.name!r}.")


def load_reference(path: Path) -> ManifoldReference:
    """Read a reference written by :func:`save_reference`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return ManifoldReference.from_json(text)
    if path.suffix == ".csv":
        return ManifoldReference.from_csv(text)
    raise ValueError(f"reference path must end in .json or .csv, got {path.name!r}.")


# --------------------------------------------------------------------------------------------
# Static figures
# --------------------------------------------------------------------------------------------


def _is_continuous(values: np.ndarray) -> bool:
    return values.dtype.kind == "f"


def _draw_scatter(
    ax: Any,
    layout: np.ndarray,
    values: np.ndarray,
    *,
    title: str,
    category_names: Sequence[str] | None,
    cmap: str,
    point_size: float,
) -> None:
    fig = ax.figure
    xy = layout[:, :2]
    if _is_continuous(values):
        order = np.argsort(values, kind="stable")  # high values drawn last, on top
        sc = ax.scatter(
            xy[order, 0],
            xy[order, 1],
            c=values[order],
            cmap=cmap,
            s=point_size,
            linewidths=0,
        )
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04)
    else:
        cats, codes = np.unique(values, return_inverse=True)
        many = len(cats) > 20
        palette = matplotlib.colormaps["tab20" if many else "tab10"]
        n_col = palette.N
        for i, cat in enumerate(cats):
            sel = codes == i
            name = _class_name(cat, category_names)
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                color=palette(i % n_col),
                s=point_size,
                linewidths=0,
                label=name,
            )
        if not many:
            ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def scatter_figure(
    layout: np.ndarray,
    values: np.ndarray | Sequence[Any],
    *,
    title: str = "",
    category_names: Sequence[str] | None = None,
    cmap: str = "viridis",
    point_size: float = 8.0,
) -> Figure:
    """Scatter plot of a 2-D layout coloured by one variable.

    Float values get a continuous colormap with a colour bar (e.g. an attribute pole such as
    ``"attractive"``); anything else (integer labels, strings such as identities) is
    categorical with one colour per value (legend up to 20 categories, colours cycle beyond).

    Args:
        layout: Layout, shape ``(N, >=2)``; only the first two columns are drawn.
        values: Colour variable, shape ``(N,)``.
        title: Axes title.
        category_names: Names for integer categories ``0..C-1`` (e.g. EXPRESSIONS).
        cmap: Colormap name for continuous values.
        point_size: Marker area in points².

    Returns:
        A new ``matplotlib.figure.Figure`` (not registered with pyplot).
    """
    return panel_figure(
        layout,
        {title: values},
        category_names={title: category_names} if category_names is not None else None,
        cmap=cmap,
        point_size=point_size,
    )


def panel_figure(
    layout: np.ndarray,
    colourings: Mapping[str, np.ndarray | Sequence[Any]],
    *,
    suptitle: str = "",
    category_names: Mapping[str, Sequence[str] | None] | None = None,
    cmap: str = "viridis",
    point_size: float = 8.0,
    ncols: int = 3,
) -> Figure:
    """One layout drawn once per colouring, side by side (e.g. expression, attractive, identity).

    Args:
        layout: Layout, shape ``(N, >=2)``.
        colourings: Panel title -> colour variable of shape ``(N,)``; see :func:`scatter_figure`.
        suptitle: Figure title.
        category_names: Panel title -> names for integer categories.
        cmap: Colormap for continuous panels.
        point_size: Marker area in points².
        ncols: Panels per row.

    Returns:
        A new ``matplotlib.figure.Figure``.
    """
    lay = _check_matrix(layout, "layout")
    if lay.shape[1] < 2:
        raise ValueError(f"layout must have at least 2 columns to draw, got {lay.shape[1]}.")
    if not colourings:
        raise ValueError("colourings is empty; pass at least one variable to colour by.")
    n_panels = len(colourings)
    cols = max(1, min(ncols, n_panels))
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(4.2 * cols, 4.0 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, vals) in zip(axes.ravel(), colourings.items(), strict=False):
        arr = np.asarray(vals)
        if arr.shape != (lay.shape[0],):
            raise ValueError(
                f"colouring {name!r} has shape {arr.shape}, expected ({lay.shape[0]},)."
            )
        names = (category_names or {}).get(name)
        _draw_scatter(
            ax,
            lay,
            arr,
            title=name,
            category_names=names,
            cmap=cmap,
            point_size=point_size,
        )
    for ax in axes.ravel()[n_panels:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --------------------------------------------------------------------------------------------
# Interactive page
# --------------------------------------------------------------------------------------------


def thumbnail_png(image: np.ndarray, size: int = 48) -> bytes:
    """Encode an image as a small PNG for hover thumbnails.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8 array, or float in [0, 1].
        size: Longest side of the thumbnail in pixels.

    Returns:
        PNG bytes.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {arr.shape}.")
    img = Image.fromarray(arr)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _js(value: Any) -> str:
    """JSON for embedding inside a <script> element."""
    return json.dumps(value).replace("</", "<\\/")


_PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:0;display:flex}
#fl-main{flex:1;min-width:0;padding:8px}
#fl-side{width:220px;padding:12px;border-left:1px solid #ddd;position:sticky;top:0;
height:100vh;box-sizing:border-box;font-size:13px}
#fl-thumb{width:192px;height:192px;image-rendering:pixelated;border:1px solid #ccc;
display:block;object-fit:contain;background:#f4f4f4}
.fl-plot{height:560px;margin-bottom:12px}
h1{font-size:18px} h2{font-size:15px;margin:16px 0 4px}
"""

_HOVER_JS = """
function flShow(pt){
  var i = pt.customdata; if (Array.isArray(i)) { i = i[0]; }
  var img = document.getElementById('fl-thumb');
  var t = FL_THUMBS ? FL_THUMBS[i] : null;
  if (t) { img.src = 'data:image/png;base64,' + t; img.style.visibility = 'visible'; }
  else { img.removeAttribute('src'); img.style.visibility = 'hidden'; }
  document.getElementById('fl-info').innerHTML = FL_INFO[i];
}
"""


def interactive_html(
    layouts: Mapping[str, np.ndarray],
    ids: Sequence[str],
    labels: np.ndarray | Sequence[Any] | None,
    *,
    label_names: Sequence[str] | None = None,
    hover: Mapping[str, np.ndarray | Sequence[Any]] | None = None,
    thumbnails: Sequence[bytes | None] | None = None,
    title: str = "facelens manifold",
    point_size: float = 5.0,
) -> str:
    """A self-contained, offline HTML page with one interactive plot per layout.

    Plotly.js is embedded once (no network needed). 2-D layouts become ``Scatter`` plots and
    3-D layouts ``Scatter3d`` plots, one trace per class so the legend toggles classes.
    Plotly's hover boxes cannot show images, so each point's ``customdata`` holds its sample
    index and a small inline script shows that sample's thumbnail (base64 PNG, stored once in
    the page) and its labels in a side panel whenever a point is hovered.

    Args:
        layouts: Plot title -> layout of shape ``(N, 2)`` or ``(N, 3)``; all in ``ids`` order.
        ids: Sample ids, length ``N``.
        labels: Class per sample (``(N,)``) or ``None``.
        label_names: Names for integer classes (e.g. EXPRESSIONS).
        hover: Extra per-sample values to show (e.g. ``{"attractive": ..., "identity": ...}``).
        thumbnails: PNG bytes per sample (``None`` entries allowed), or ``None``.
        title: Page title.
        point_size: Marker size in pixels.

    Returns:
        The HTML document as a string.
    """
    import plotly.graph_objects as go
    import plotly.io as pio

    n = len(ids)
    if not layouts:
        raise ValueError("layouts is empty; pass at least one layout to plot.")
    if thumbnails is not None and len(thumbnails) != n:
        raise ValueError(f"thumbnails has {len(thumbnails)} entries, expected one per id ({n}).")
    if labels is not None:
        classes, codes = _encode_labels(labels, n)
    else:
        classes, codes = np.asarray(["all"]), np.zeros(n, dtype=np.int64)
    class_names = [_class_name(c, label_names) for c in classes]
    extra = {k: np.asarray(v) for k, v in (hover or {}).items()}
    for k, v in extra.items():
        if v.shape != (n,):
            raise ValueError(f"hover[{k!r}] has shape {v.shape}, expected ({n},).")

    def _fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{float(v):.3g}"
        return str(v)

    info: list[str] = []
    hover_text: list[str] = []
    for i in range(n):
        pairs = [("id", str(ids[i]))]
        if labels is not None:
            pairs.append(("label", class_names[codes[i]]))
        pairs += [(k, _fmt(v[i])) for k, v in extra.items()]
        info.append("<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in pairs))
        hover_text.append("<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in pairs))
    thumbs = [
        base64.b64encode(t).decode("ascii") if t is not None else None for t in (thumbnails or [])
    ]

    parts: list[str] = []
    first = True
    for plot_idx, (name, layout) in enumerate(layouts.items()):
        lay = _check_matrix(layout, f"layouts[{name!r}]")
        if lay.shape[0] != n or lay.shape[1] not in (2, 3):
            raise ValueError(
                f"layouts[{name!r}] has shape {lay.shape}, expected ({n}, 2) or ({n}, 3)."
            )
        fig = go.Figure()
        for c, cname in enumerate(class_names):
            sel = np.flatnonzero(codes == c)
            common = {
                "name": cname,
                "mode": "markers",
                "customdata": sel.tolist(),
                "text": [hover_text[i] for i in sel],
                "hovertemplate": "%{text}<extra></extra>",
                "marker": {"size": point_size},
            }
            if lay.shape[1] == 3:
                fig.add_trace(go.Scatter3d(x=lay[sel, 0], y=lay[sel, 1], z=lay[sel, 2], **common))
            else:
                # SVG up to a few thousand points; WebGL beyond (browsers cap WebGL contexts).
                trace = go.Scatter if n <= _SVG_MAX_POINTS else go.Scattergl
                fig.add_trace(trace(x=lay[sel, 0], y=lay[sel, 1], **common))
        fig.update_layout(
            margin={"l": 10, "r": 10, "t": 10, "b": 10},
            legend={"itemsizing": "constant"},
            template="plotly_white",
        )
        if lay.shape[1] == 2:
            fig.update_yaxes(scaleanchor="x", scaleratio=1)
        div = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=first,  # embed plotly.js once, offline
            div_id=f"fl-plot-{plot_idx}",
            default_height="560px",
            post_script=(
                "var gd=document.getElementById('{plot_id}');"
                "gd.on('plotly_hover',function(e){flShow(e.points[0]);});"
                "gd.on('plotly_click',function(e){flShow(e.points[0]);});"
            ),
            config={"displaylogo": False, "responsive": True},
        )
        first = False
        parts.append(f"<h2>{html.escape(name)}</h2>\n<div class='fl-plot'>{div}</div>")

    head = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_PAGE_CSS}</style>"
        f"<script>var FL_THUMBS={_js(thumbs if thumbnails is not None else None)};"
        f"var FL_INFO={_js(info)};{_HOVER_JS}</script></head><body>"
    )
    main = f"<div id='fl-main'><h1>{html.escape(title)}</h1>{''.join(parts)}</div>"
    side = (
        "<div id='fl-side'><div>hover a point</div>"
        "<img id='fl-thumb' alt='thumbnail' style='visibility:hidden'>"
        "<div id='fl-info'></div></div>"
    )
    return head + main + side + "</body></html>\n"


# --------------------------------------------------------------------------------------------
# Whole analysis
# --------------------------------------------------------------------------------------------


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

    def flat_metrics(self) -> dict[str, float]:
        """Scalar metrics named ``"<embedding>.<method>.<metric>"`` for ``mlflow.log_metrics``.

        Per-class silhouettes become ``...silhouette.<class>``; NaNs are dropped.
        """
        out: dict[str, float] = {}
        for key, met in self.metrics.items():
            prefix = key.replace("/", ".")
            for name, val in met.items():
                if isinstance(val, dict):
                    for cls_name, v in val.items():
                        out[f"{prefix}.{name.replace('_per_class', '')}.{cls_name}"] = float(v)
                elif isinstance(val, (int, float, np.number)) and name not in ("n", "k"):
                    out[f"{prefix}.{name}"] = float(val)
        return {k: v for k, v in out.items() if math.isfinite(v)}


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
    if not embeddings:
        raise ValueError("embeddings is empty; pass at least one name -> (N, D) array.")
    bad = [m for m in methods if m not in LAYOUT_METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {LAYOUT_METHODS}, got {methods}.")
    n = len(ids)
    ids_s = [str(i) for i in ids]
    mats = {name: _check_matrix(x, f"embeddings[{name!r}]") for name, x in embeddings.items()}
    for name, x in mats.items():
        if x.shape[0] != n:
            raise ValueError(f"embeddings[{name!r}] has {x.shape[0]} rows, expected {n} (ids).")
    label_arr = None if labels is None else np.asarray(labels)
    if label_arr is not None and label_arr.shape != (n,):
        raise ValueError(f"labels has shape {label_arr.shape}, expected ({n},).")
    colours = {name: np.asarray(v) for name, v in (colour_by or {}).items()}

    anchor_ids = alignment_subset(ids_s, anchors, seed)
    row_of = {i: r for r, i in enumerate(ids_s)}
    ref_layouts = dict(reference.layouts) if reference is not None else {}
    ref_ids = reference.ids if reference is not None else tuple(anchor_ids)

    layouts: dict[str, np.ndarray] = {}
    metrics: dict[str, dict[str, Any]] = {}
    figures: dict[str, Figure] = {}
    aligned: dict[str, bool] = {}
    new_ref_layouts = dict(ref_layouts)
    for emb_name, x in mats.items():
        for method in methods:
            key = f"{emb_name}/{method}"
            algo = "umap" if method == "umap3d" else method
            dims = 3 if method == "umap3d" else 2
            lay = embed_2d(x, algo, seed, n_components=dims)  # type: ignore[arg-type]
            is_aligned = False
            if key in ref_layouts and ref_layouts[key].shape[1] == dims:
                shared = set(ref_ids) & row_of.keys()
                if len(shared) >= _MIN_ANCHORS:
                    lay = align_to_reference(lay, ids_s, ref_layouts[key], list(ref_ids))
                    is_aligned = True
            elif set(ref_ids) <= row_of.keys():
                new_ref_layouts[key] = lay[[row_of[i] for i in ref_ids]]
            layouts[key] = lay
            aligned[key] = is_aligned
            metrics[key] = manifold_metrics(x, lay, label_arr, k=k, label_names=label_names)
            if dims == 2:
                panels: dict[str, np.ndarray] = {}
                names: dict[str, Sequence[str] | None] = {}
                if label_arr is not None:
                    panels["expression"] = label_arr
                    names["expression"] = label_names
                panels.update(colours)
                if not panels:
                    panels["sample"] = np.zeros(n, dtype=np.int64)
                figures[f"{emb_name}_{method}"] = panel_figure(
                    lay,
                    panels,
                    suptitle=f"{emb_name} — {method}",
                    category_names=names,
                )

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
    new_reference = ManifoldReference(ids=tuple(ref_ids), layouts=new_ref_layouts, meta=meta)
    return ManifoldResult(
        layouts=layouts,
        metrics=metrics,
        figures=figures,
        html={"manifold.html": page},
        reference=new_reference,
        aligned=aligned,
    )
