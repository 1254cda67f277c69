"""The ``manifold`` stage: PCA / t-SNE / UMAP layouts of the test split's embeddings and their
quality, written to ``reports/manifold/`` and logged to the train run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from facelens._io import atomic_output_dir, atomic_write_text, jsonable, write_json
from facelens.config import Params
from facelens.constants import EXPRESSIONS
from facelens.data.dataset import FaceDataset
from facelens.manifold.analysis import ManifoldResult, run_manifold_analysis
from facelens.manifold.features import (
    compact_metrics,
    manifold_features,
    manifold_subset,
    reference_path,
)
from facelens.manifold.html import thumbnail_png
from facelens.manifold.params import ManifoldParams
from facelens.manifold.reference import ManifoldReference, load_reference
from facelens.stages.train_run import (
    TrainedOnTest,
    details_path,
    load_trained,
    log_to_train_run,
    save_figure,
)

__all__ = ["run", "store_reference"]


def run(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    model_dir: Path,
    run_id: str | None,
    *,
    plots_dir: Path,
    metrics_path: Path,
    reference_dir: Path,
) -> dict[str, Any]:
    """The ``manifold`` stage: PCA / t-SNE / UMAP layouts of the test split and their quality.

    Embeds a seeded, fixed subset (``manifold.max_points``) of the test split, lays it out
    with every method and aligns each layout to the reference of the data version (written by
    the first run as ``reference_dir/<data_version>.json``, outside DVC outputs, so later runs
    and ``dvc exp run`` experiments are Procrustes-aligned to it). Writes ``plots_dir``
    atomically (``<embedding>_<method>.png`` coloured by expression, by
    ``manifold.colour_attribute`` and by identity; ``manifold.html``, interactive with
    thumbnails; ``layouts.csv``), ``metrics_path``
    (:func:`~facelens.manifold.features.compact_metrics`, the headline for ``dvc metrics``)
    and the full document beside it (``metrics_details.json``); logs all of it to the train
    run under ``manifold/`` with metrics ``manifold.<embedding>.<method>.<metric>``, and each
    layout figure as an MLflow image keyed ``manifold/<embedding>_<method>``.

    Args:
        params: all params (``manifold`` and ``tracking`` are used).
        prepared_dir: the prepared dataset.
        splits_dir: the split CSVs (``test.csv`` is used).
        model_dir: the exported model.
        run_id: the train run to log to; ``None`` logs nothing.
        plots_dir: e.g. ``reports/manifold/plots``.
        metrics_path: e.g. ``reports/manifold/metrics.json``.
        reference_dir: folder of reference layouts, e.g. ``cache/manifold_reference``.

    Returns:
        The full document (``metrics_details.json``).
    """
    mp = params.manifold
    trained = load_trained(prepared_dir, splits_dir, model_dir, params.device)
    points = _points(trained, prepared_dir, mp)
    ref_file = reference_path(reference_dir, trained.data_version)
    previous = load_reference(ref_file) if ref_file.is_file() else None
    result = run_manifold_analysis(
        points.features,
        points.ds.ids,
        points.labels,
        EXPRESSIONS if points.labels is not None else None,
        colour_by=points.colour_by,
        thumbnails=points.thumbnails,
        methods=mp.methods,
        seed=mp.seed,
        reference=previous,
        anchors=mp.anchors,
        k=mp.k,
    )
    context = {"data_version": trained.data_version, "run_id": str(run_id)}
    store_reference(result.reference, previous, ref_file, {**context, "task": trained.meta.task})
    doc = _document(trained, points, mp, ref_file, result, run_id)
    names = _write_plots(Path(plots_dir), result, points.table(result.layouts))
    compact = compact_metrics(doc)
    write_json(details_path(metrics_path), doc)
    write_json(metrics_path, compact)
    if run_id is not None:
        files = {"": [Path(plots_dir) / n for n in names]}
        docs = {"metrics.json": compact, "metrics_details.json": doc}
        metrics = result.flat_metrics("manifold")
        log_to_train_run(
            params.tracking,
            run_id,
            "manifold",
            files,
            docs,
            metrics,
            trained.device_tags("manifold"),
            images=_chart_images(Path(plots_dir), names),
        )
    return doc


def _chart_images(plots_dir: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Every layout figure as an MLflow image keyed ``manifold/<embedding>_<method>`` (the
    same key in every run, so the chart view shows the runs' layouts side by side)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name.endswith(".png"):
            with Image.open(plots_dir / name) as img:
                out[f"manifold/{Path(name).stem}"] = np.asarray(img.convert("RGB"))
    return out


def _document(
    trained: TrainedOnTest,
    points: _Points,
    mp: ManifoldParams,
    ref_file: Path,
    result: ManifoldResult,
    run_id: str | None,
) -> dict[str, Any]:
    """``metrics_details.json``: what was laid out and how, and every layout's metrics."""
    return jsonable(
        {
            "meta": {
                "task": trained.meta.task,
                "data_version": trained.data_version,
                "n_points": len(points.ds),
                "n_test": len(trained.test_rows),
                "embeddings": {k: list(v.shape) for k, v in points.features.items()},
                "methods": list(mp.methods),
                "colour_by": points.colour_names(),
                "reference": str(ref_file),
                "aligned": result.aligned,
                "seed": mp.seed,
                "run_id": run_id,
            },
            "layouts": result.metrics,
        }
    )


@dataclass
class _Points:
    """The laid-out test images: dataset, embeddings, labels and colourings."""

    ds: FaceDataset
    features: dict[str, np.ndarray]
    labels: np.ndarray | None  # (N,) expression ids, None when not every point has one
    colour_by: dict[str, np.ndarray]
    thumbnails: list[bytes]

    def colour_names(self) -> list[str]:
        """The colourings of the plots, expression first when labelled."""
        extra = list(self.colour_by)
        return ["expression", *extra] if self.labels is not None else extra

    def table(self, layouts: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """``layouts.csv``: id, expression, colourings and every layout coordinate."""
        table = pd.DataFrame({"id": self.ds.ids})
        if self.labels is not None:
            table["expression"] = [EXPRESSIONS[i] for i in self.labels]
        for name, values in self.colour_by.items():
            table[name] = values
        for key, lay in layouts.items():
            for j in range(lay.shape[1]):
                table[f"{key}/{j}"] = lay[:, j]
        return table


def _points(trained: TrainedOnTest, prepared_dir: Path, mp: ManifoldParams) -> _Points:
    rows = manifold_subset(trained.test_rows, mp)
    ds = trained.dataset(rows, prepared_dir)
    labels = np.asarray(ds.labels)
    has_labels = bool(len(labels)) and bool((labels >= 0).all())
    colour_by: dict[str, np.ndarray] = {}
    column = f"attr_{mp.colour_attribute}"
    if column in rows.columns:
        values = pd.to_numeric(rows[column], errors="coerce")
        colour_by[mp.colour_attribute] = values.to_numpy(dtype=np.float64)
    if "identity" in rows.columns:
        colour_by["identity"] = rows["identity"].astype(str).to_numpy()
    images = ds.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3) uint8
    return _Points(
        ds=ds,
        features=manifold_features(trained.model, trained.meta, ds),
        labels=labels if has_labels else None,
        colour_by=colour_by,
        thumbnails=[thumbnail_png(img, mp.thumbnail_size) for img in images],
    )


def _write_plots(plots_dir: Path, result: ManifoldResult, table: pd.DataFrame) -> list[str]:
    """Figures, the interactive page and ``layouts.csv``, swapped in atomically."""
    names: list[str] = []
    with atomic_output_dir(plots_dir) as tmp:
        for name, fig in result.figures.items():
            save_figure(fig, tmp / f"{name}.png")
            names.append(f"{name}.png")
        for name, page in result.html.items():
            (tmp / name).write_text(page, encoding="utf-8")
            names.append(name)
        table.to_csv(tmp / "layouts.csv", index=False)
        names.append("layouts.csv")
    return names


def store_reference(
    reference: ManifoldReference,
    previous: ManifoldReference | None,
    path: Path,
    extra: Mapping[str, str],
) -> None:
    """Save the reference of a data version when it is new or gained layouts (atomically: a
    concurrent run never reads half a reference)."""
    if previous is not None and set(reference.layouts) == set(previous.layouts):
        return
    if previous is None:
        reference = ManifoldReference(
            ids=reference.ids, layouts=reference.layouts, meta={**reference.meta, **extra}
        )
    atomic_write_text(path, reference.to_json())
