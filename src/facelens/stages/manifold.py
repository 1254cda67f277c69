"""The ``manifold`` stage: PCA / t-SNE / UMAP layouts of the test split's embeddings and their
quality, written to ``reports/manifold/`` and logged to the train run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facelens._io import atomic_output_dir, atomic_write_text, jsonable, write_json
from facelens.config import Params
from facelens.constants import EXPRESSIONS
from facelens.explain.manifold import (
    ManifoldReference,
    load_reference,
    run_manifold_analysis,
    thumbnail_png,
)
from facelens.explain.report import metric_key
from facelens.manifold.features import (
    compact_metrics,
    manifold_features,
    manifold_subset,
    reference_path,
)
from facelens.stages.train_run import details_path, load_trained, log_to_train_run, save_figure

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
    thumbnails; ``layouts.csv``), ``metrics_path`` (:func:`~facelens.manifold.features.compact_metrics`, for ``dvc
    metrics``) and the full document beside it (``metrics_details.json``); logs all of it to
    the train run under
    ``manifold/`` with metrics ``manifold.<embedding>.<method>.<metric>``.

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
    trained = load_trained(prepared_dir, splits_dir, model_dir)
    meta, data_version, test_rows = trained.meta, trained.data_version, trained.test_rows
    rows = manifold_subset(test_rows, mp)
    ds = trained.dataset(rows, prepared_dir)
    feats = manifold_features(trained.model, meta, ds)
    labels = np.asarray(ds.labels)
    has_labels = bool(len(labels)) and bool((labels >= 0).all())
    colour_by: dict[str, np.ndarray] = {}
    column = f"attr_{mp.colour_attribute}"
    if column in rows.columns:
        colour_by[mp.colour_attribute] = pd.to_numeric(rows[column], errors="coerce").to_numpy(
            dtype=np.float64
        )
    if "identity" in rows.columns:
        colour_by["identity"] = rows["identity"].astype(str).to_numpy()
    thumbs = [
        thumbnail_png(img, mp.thumbnail_size)
        for img in ds.images.permute(0, 2, 3, 1).contiguous().numpy()
    ]

    ref_file = reference_path(reference_dir, data_version)
    previous = load_reference(ref_file) if ref_file.is_file() else None
    result = run_manifold_analysis(
        feats,
        ds.ids,
        labels if has_labels else None,
        EXPRESSIONS if has_labels else None,
        colour_by=colour_by,
        thumbnails=thumbs,
        methods=mp.methods,
        seed=mp.seed,
        reference=previous,
        anchors=mp.anchors,
        k=mp.k,
    )
    store_reference(
        result.reference,
        previous,
        ref_file,
        {"data_version": data_version, "run_id": str(run_id), "task": meta.task},
    )

    layouts = pd.DataFrame({"id": ds.ids})
    if has_labels:
        layouts["expression"] = [EXPRESSIONS[i] for i in labels]
    for name, values in colour_by.items():
        layouts[name] = values
    for key, lay in result.layouts.items():
        for j in range(lay.shape[1]):
            layouts[f"{key}/{j}"] = lay[:, j]
    doc = jsonable(
        {
            "meta": {
                "task": meta.task,
                "data_version": data_version,
                "n_points": len(ds),
                "n_test": len(test_rows),
                "embeddings": {k: list(v.shape) for k, v in feats.items()},
                "methods": list(mp.methods),
                "colour_by": ["expression", *colour_by] if has_labels else list(colour_by),
                "reference": str(ref_file),
                "aligned": result.aligned,
                "seed": mp.seed,
                "run_id": run_id,
            },
            "layouts": result.metrics,
        }
    )
    names: list[str] = []
    with atomic_output_dir(Path(plots_dir)) as tmp:
        for name, fig in result.figures.items():
            save_figure(fig, tmp / f"{name}.png")
            names.append(f"{name}.png")
        for name, page in result.html.items():
            (tmp / name).write_text(page, encoding="utf-8")
            names.append(name)
        layouts.to_csv(tmp / "layouts.csv", index=False)
        names.append("layouts.csv")
    compact = compact_metrics(doc)
    write_json(details_path(metrics_path), doc)
    write_json(metrics_path, compact)
    if run_id is not None:
        flat = {metric_key(f"manifold.{k}"): v for k, v in result.flat_metrics().items()}
        files = {"": [Path(plots_dir) / n for n in names]}
        docs = {"metrics.json": compact, "metrics_details.json": doc}
        log_to_train_run(params.tracking, run_id, "manifold", files, docs, flat)
    return doc


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
