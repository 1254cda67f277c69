"""The ``explain`` stage: Grad-CAM grids, raw maps and faithfulness checks of a fixed probe
set of the test split, written to ``reports/explain/`` and logged to the train run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facelens._io import atomic_output_dir, write_json
from facelens.config import Params
from facelens.explain.report import explain_probes, faithfulness_metrics, select_probes
from facelens.stages.train_run import details_path, load_trained, log_to_train_run, save_figure

__all__ = ["run"]


def run(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    model_dir: Path,
    run_id: str | None,
    *,
    figures_dir: Path,
    maps_dir: Path,
    metrics_path: Path,
) -> dict[str, Any]:
    """The ``explain`` stage: CAM grids, raw maps and faithfulness checks of the probe set.

    Writes ``figures_dir`` (``cam_grid_<method>.png``, ``class_<name>.png``,
    ``method_grid_*.png``, ``sanity_<method>.png``) and ``maps_dir`` (``cams_<method>.npz``)
    atomically, then the full summary beside ``metrics_path`` (``faithfulness_details.json``)
    and ``metrics_path`` itself (``faithfulness.json``, :func:`faithfulness_metrics`, the
    compact numbers ``dvc metrics`` shows). Logs the figures and both JSON files to the train
    run under ``explain/``, the maps under ``explain/maps/``, the faithfulness numbers as
    metrics ``explain.*`` and one composite per (method, class or attribute) as an MLflow
    image with a stable key (``cam/<method>/<group>``, :mod:`facelens.explain.chart_images`).

    Args:
        params: all params (``explain`` and ``tracking`` are used).
        prepared_dir: the prepared dataset.
        splits_dir: the split CSVs (``test.csv`` is used).
        model_dir: the exported model.
        run_id: the train run to log to; ``None`` logs nothing.
        figures_dir: e.g. ``reports/explain/figures``.
        maps_dir: e.g. ``reports/explain/maps``.
        metrics_path: e.g. ``reports/explain/faithfulness.json``.

    Returns:
        The full summary (``faithfulness_details.json``).
    """
    trained = load_trained(prepared_dir, splits_dir, model_dir, params.device)
    rows = select_probes(trained.test_rows, trained.meta.task, params.explain)
    probes = trained.dataset(rows, prepared_dir)
    result = explain_probes(
        trained.model,
        trained.meta,
        probes,
        params.explain,
        context={"data_version": trained.data_version, "run_id": run_id},
    )
    with atomic_output_dir(Path(figures_dir)) as tmp:
        for name, fig in result.figures.items():
            save_figure(fig, tmp / name)
    with atomic_output_dir(Path(maps_dir)) as tmp:
        for name, arrays in result.arrays.items():
            np.savez_compressed(tmp / name, **arrays)
    compact = faithfulness_metrics(result.summary)
    write_json(details_path(metrics_path), result.summary)
    write_json(metrics_path, compact)
    if run_id is not None:
        files = {
            "": [Path(figures_dir) / n for n in sorted(result.figures)],
            "maps": [Path(maps_dir) / n for n in sorted(result.arrays)],
        }
        docs = {"faithfulness.json": compact, "faithfulness_details.json": result.summary}
        log_to_train_run(
            params.tracking,
            run_id,
            "explain",
            files,
            docs,
            result.metrics(),
            trained.device_tags("explain"),
            images=result.images,
        )
    return result.summary
