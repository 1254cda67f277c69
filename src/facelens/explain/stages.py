"""Cores of the ``explain`` and ``manifold`` stages.

Each stage is I/O around pure calls: :func:`explain_stage` / :func:`manifold_stage` load the
exported model and the test split, call :func:`explain_probes` / :func:`manifold_features` +
:func:`facelens.explain.manifold.run_manifold_analysis`, write ``reports/explain/`` /
``reports/manifold/`` atomically and log the same files and the numbers to the *train* run
(``models/run.json``) under the artifact folders ``explain/`` and ``manifold/``.

File names use a slug of the method (``gradcam++`` -> ``gradcampp``) and MLflow metric names
are sanitised the same way (MLflow refuses ``+`` in metric keys).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from facelens.config import ExplainParams, ManifoldParams, Params
from facelens.constants import EXPRESSIONS
from facelens.data.dataset import FaceDataset, make_transform
from facelens.explain.cams import (
    attribute_grid,
    cam_grid,
    compute_cam_batch,
    make_targets,
    method_grid,
    probe_set,
)
from facelens.explain.faithfulness import (
    deletion_report,
    faithfulness_summary,
    localization_report,
    randomized_copy,
    sanity_check,
    sanity_figure,
    summary_metrics,
)
from facelens.models.vgg import FaceVGG, ModelMeta

__all__ = [
    "Explanations",
    "explain_probes",
    "explain_stage",
    "manifold_features",
    "manifold_stage",
    "method_slug",
    "metric_key",
    "randomized_layers",
    "reference_path",
    "select_probes",
]

_FIG_DPI = 90
_MAX_SANITY_ROWS = 7


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def method_slug(method: str) -> str:
    """File-name form of a CAM method: ``gradcam++`` -> ``gradcampp``."""
    return method.replace("+", "p")


def metric_key(name: str) -> str:
    """An MLflow-safe metric key: ``+`` -> ``p``; anything outside ``[\\w./ -]`` -> ``_``."""
    return re.sub(r"[^\w./ -]", "_", name.replace("+", "p"))


def randomized_layers(params: ExplainParams) -> list[str]:
    """Module names re-initialised by the sanity check.

    ``auto`` randomises the head and every block from the target layer's block upward: all the
    weights between the explained activations and the score (plus the block that produces the
    activations), the top of Adebayo et al.'s cascade down to the explained layer.

    Returns:
        Qualified module names of :class:`FaceVGG` (``classifier``, ``blocks.4``, ...).
    """
    chosen = list(params.randomize)
    if chosen == ["auto"]:
        first = int(params.layer.removeprefix("block"))
        chosen = ["head", *[f"block{b}" for b in range(5, first - 1, -1)]]
    return ["classifier" if c == "head" else f"blocks.{int(c[5:]) - 1}" for c in chosen]


def reference_path(reference_dir: Path, data_version: str) -> Path:
    """Where the manifold reference layout of a data version lives (outside DVC outputs)."""
    return Path(reference_dir) / f"{data_version}.json"


# --------------------------------------------------------------------------------------------
# Explain: pure core
# --------------------------------------------------------------------------------------------


@dataclass
class Explanations:
    """What the ``explain`` stage writes.

    Attributes:
        figures: file name -> figure (``cam_grid_<method>.png``, ``class_<name>.png``,
            ``method_grid_<n>_<id>.png``, ``sanity_<method>.png``).
        arrays: file name -> arrays saved with ``np.savez_compressed`` (``cams_<method>.npz``).
        summary: the ``faithfulness.json`` document (JSON-safe: NaN -> None).
    """

    figures: dict[str, Figure] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Numeric leaves of the summary as MLflow metrics, prefixed ``explain.``."""
        flat = summary_metrics(self.summary, prefix="explain.")
        return {metric_key(k): v for k, v in flat.items()}


def select_probes(rows: pd.DataFrame, task: str, params: ExplainParams) -> pd.DataFrame:
    """The fixed, seeded probe set: ``per_class`` rows per expression, or for the attributes
    task ``attribute_probes`` rows regardless of expression.

    Selection hashes ``(seed, id)`` (see :func:`facelens.explain.cams.probe_set`), so the same
    data version gives the same probes in every run.
    """
    if task == "attributes":
        unlabelled = rows.assign(label=np.nan)
        picked = probe_set(unlabelled, params.attribute_probes, params.seed)
        return (
            rows.set_index(rows["id"].astype(str))
            .loc[picked["id"].astype(str)]
            .reset_index(drop=True)
        )
    labelled = pd.to_numeric(rows["label"], errors="coerce").notna()
    if not labelled.any():
        raise ValueError(
            "the test split has no expression labels, so there is no probe set for the "
            "expression task; train an attributes model or use a labelled source."
        )
    return probe_set(rows[labelled], params.per_class, params.seed)


def _round_robin(labels: np.ndarray) -> list[int]:
    """Indices ordered first probe of each class, then second of each class, ..."""
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    order: list[int] = []
    depth = max((len(g) for g in groups.values()), default=0)
    for d in range(depth):
        order.extend(g[d] for _, g in sorted(groups.items()) if d < len(g))
    return order


def _class_targets(
    target: str,
    outputs: torch.Tensor,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    softmax: bool,
) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    if target in ("predicted", "true"):
        return make_targets(target, outputs, labels, names, softmax=softmax)
    return make_targets("class", outputs, labels, names, name=target, softmax=softmax)


def _class_indices(
    target: str, outputs: torch.Tensor, labels: np.ndarray, names: Sequence[str]
) -> np.ndarray:
    """The class each image is explained for (as :func:`_class_targets` chooses it)."""
    if target == "predicted":
        return outputs.argmax(dim=1).numpy().astype(np.int64)
    if target == "true":
        return np.asarray(labels, dtype=np.int64)
    return np.full(len(outputs), list(names).index(target), dtype=np.int64)


def _take(items: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    return [items[i] for i in idx]


def _hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8 -> (B, H, W, 3) uint8."""
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def _headline(
    method: str,
    localization: Mapping[str, Any] | None,
    sanity: Mapping[str, Any],
    deletion: Mapping[str, Any],
) -> dict[str, Any]:
    def num(x: Any) -> float | None:
        return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None

    return {
        "method": method,
        "localization_lift": num((localization or {}).get(method, {}).get("mean_lift")),
        "localization_lift_in_face": num(
            (localization or {}).get(method, {}).get("mean_lift_in_face")
        ),
        "sanity_spearman": num(sanity.get(method, {}).get("spearman_mean")),
        "road_combined": num(deletion.get(method, {}).get("road_combined")),
        "confidence_drop": num(deletion.get(method, {}).get("confidence_drop")),
    }


def explain_probes(
    model: FaceVGG,
    meta: ModelMeta,
    probes: FaceDataset,
    params: ExplainParams,
    *,
    context: Mapping[str, Any] | None = None,
) -> Explanations:
    """CAMs of every method on the probe set, their figures and faithfulness checks.

    For the expression task each image is explained for ``params.target`` (predicted class,
    true class or a named class); localization scores the explained class's regions (SynthFACS
    masks; skipped with a note when the data has none). For the attributes task every
    attribute of ``params.attributes`` is explained with a ``+`` and a ``-`` target and the
    faithfulness checks use the first attribute's ``+`` target. ScoreCAM runs on the first
    ``params.scorecam_images`` probes (one per class first). The sanity check compares the
    raw maps of the model and of a copy with :func:`randomized_layers` re-initialised.

    The model is left in eval mode with its weights and gradients untouched.

    Args:
        model: the exported model.
        meta: its metadata (task, output names, normalisation).
        probes: the probe images (a ``FaceDataset`` of :func:`select_probes` rows).
        params: the ``explain`` section.
        context: extra entries for ``summary["meta"]`` (data version, run id, ...).

    Returns:
        The figures, arrays and summary to write.
    """
    model.eval()
    names = list(meta.output_names)
    task = meta.task
    n = len(probes)
    if n == 0:
        raise ValueError("the probe set is empty; the test split has no usable rows.")
    tf = make_transform(
        meta.input_size, train=False, augment=0.0, norm_mean=meta.norm_mean, norm_std=meta.norm_std
    )
    x = tf(probes.images)  # (N, 3, S, S) normalised
    shown = _hwc(probes.images)  # (N, S, S, 3) uint8
    with torch.no_grad():
        outputs = model(x)  # (N, K)
    layer = model.gradcam_layers()[params.layer]
    random_names = randomized_layers(params)
    random_model = randomized_copy(model, random_names, params.seed)
    random_layer = random_model.gradcam_layers()[params.layer]
    labels = np.asarray(probes.labels)
    notes: list[str] = []

    if task == "expression":
        explained = _class_targets(params.target, outputs, labels, names, softmax=False)
        scored = _class_targets(params.target, outputs, labels, names, softmax=True)
        target_index = _class_indices(params.target, outputs, labels, names)
        order = _round_robin(labels)
        n_compare = len(set(labels.tolist()))
        target_sets = {params.target: explained}
    else:
        target_sets = {
            f"{a} {'+' if s > 0 else '-'}": make_targets("attribute", outputs, None, names, a, s)
            for a in params.attributes
            for s in (1, -1)
        }
        primary = next(iter(target_sets))
        explained = target_sets[primary]
        scored = explained
        target_index = np.full(n, names.index(params.attributes[0]), dtype=np.int64)
        order = list(range(n))
        n_compare = min(4, n)
        notes.append(
            f"attributes task: sanity and deletion use the target {primary!r}; localization "
            "is defined for expression classes only."
        )

    masks = None if probes.masks is None else probes.masks.numpy()
    if task == "expression" and masks is None:
        notes.append("no region masks in the prepared data: localization skipped.")
    if task == "expression":
        probs = torch.softmax(outputs, dim=1).numpy()
        preds = probs.argmax(axis=1)
        pred_probs = probs[np.arange(n), preds]
    else:
        mean = np.asarray(meta.target_mean or [0.0] * len(names), dtype=np.float32)
        std = np.asarray(meta.target_std or [1.0] * len(names), dtype=np.float32)
        scores = outputs.numpy() * std + mean  # (N, A) on the rating scale

    out = Explanations()
    localization: dict[str, Any] = {}
    sanity: dict[str, Any] = {}
    deletion: dict[str, Any] = {}
    full_cams: dict[str, np.ndarray] = {}
    per_image: dict[str, dict[int, np.ndarray]] = {}
    methods_run: dict[str, list[str]] = {}
    for method in params.methods:
        slug = method_slug(method)
        idx = sorted(order[: params.scorecam_images]) if method == "scorecam" else list(range(n))
        xs = x[idx]
        kw = {"method": method, "batch_size": params.batch_size}
        by_target: dict[str, np.ndarray] = {}
        raw_primary = None
        cams_primary = None
        for t_name, t_list in target_sets.items():
            if method == "scorecam" and t_list is not explained:
                continue  # ScoreCAM is slow: the primary target only
            batch = compute_cam_batch(model, layer, xs, _take(t_list, idx), **kw)
            by_target[t_name] = batch.cams
            if t_list is explained:
                raw_primary, cams_primary = batch.raw, batch.cams
        assert raw_primary is not None and cams_primary is not None
        methods_run[method] = list(by_target)
        rand = compute_cam_batch(random_model, random_layer, xs, _take(explained, idx), **kw)
        sanity[method] = sanity_check(raw_primary, rand.raw, threshold=params.sanity_threshold)
        deletion[method] = deletion_report(
            model,
            xs,
            cams_primary,
            _take(scored, idx),
            removal_fractions=params.removal_fractions,
            seed=params.seed,
            road=params.road,
        )
        if task == "expression" and masks is not None:
            localization[method] = localization_report(
                cams_primary, masks[idx], target_index[idx], class_names=names
            )
        per_image[method] = dict(zip(idx, cams_primary, strict=True))
        if len(idx) == n:
            full_cams[method] = cams_primary

        ids = np.asarray([probes.ids[i] for i in idx])
        if task == "expression":
            out.arrays[f"cams_{slug}.npz"] = {
                "ids": ids,
                "cams": cams_primary.astype(np.float16),
                "raw": raw_primary.astype(np.float32),
                "target_index": target_index[idx],
                "target_name": np.asarray([names[i] for i in target_index[idx]]),
            }
            out.figures[f"cam_grid_{slug}.png"] = cam_grid(
                shown[idx],
                cams_primary,
                [int(v) if v >= 0 else None for v in labels[idx]],
                [int(v) for v in preds[idx]],
                [float(v) for v in pred_probs[idx]],
                names,
                title=f"{method} @ {params.layer}, target: {params.target}",
            )
        else:
            out.arrays[f"cams_{slug}.npz"] = {
                "ids": ids,
                "targets": np.asarray(list(by_target)),
                "cams": np.stack(list(by_target.values())).astype(np.float16),  # (T, N, H, W)
                "raw": raw_primary.astype(np.float32),
            }
            out.figures[f"cam_grid_{slug}.png"] = attribute_grid(
                shown[idx],
                by_target,
                {k: scores[idx, names.index(k.split(" ")[0])].tolist() for k in by_target},
                title=f"{method} @ {params.layer}: signed attribute targets",
            )
        chosen = set(idx)
        show = sorted([i for i in order if i in chosen][:_MAX_SANITY_ROWS])
        pos = [idx.index(i) for i in show]
        norm_rand = rand.cams[pos]
        out.figures[f"sanity_{slug}.png"] = sanity_figure(
            shown[show],
            cams_primary[pos],
            norm_rand,
            [sanity[method]["spearman_per_image"][p] for p in pos],
            title=f"{method}: trained vs randomised ({', '.join(random_names)})",
        )

    if task == "expression" and full_cams:
        for c in sorted({int(v) for v in labels if v >= 0}):
            sel = np.flatnonzero(labels == c)
            out.figures[f"class_{names[c]}.png"] = attribute_grid(
                shown[sel],
                {m: cams[sel] for m, cams in full_cams.items()},
                title=f"true class {names[c]} — {params.layer}, target: {params.target}",
            )
    for rank, i in enumerate(order[:n_compare]):
        maps = {m: per_image[m][i] for m in params.methods if i in per_image[m]}
        if task == "expression":
            what = f"true {names[labels[i]] if labels[i] >= 0 else '?'}, pred {names[preds[i]]}"
        else:
            what = f"target {next(iter(target_sets))}"
        out.figures[f"method_grid_{rank:02d}_{probes.ids[i]}.png"] = method_grid(
            shown[i], maps, title=f"{probes.ids[i]}: {what} ({params.layer})"
        )

    meta_doc: dict[str, Any] = {
        "task": task,
        "layer": params.layer,
        "target": params.target if task == "expression" else list(target_sets),
        "methods": {
            m: {"targets": t, "n_images": len(per_image[m])} for m, t in methods_run.items()
        },
        "headline_method": params.methods[0],
        "n_probes": n,
        "probe_ids": list(probes.ids),
        "randomized_layers": random_names,
        "sanity_maps": "raw (unclipped, unnormalised) layer maps",
        "localization_class": "the explained class" if task == "expression" else None,
        "seed": params.seed,
        "notes": notes,
        **dict(context or {}),
    }
    out.summary = faithfulness_summary(
        localization=localization or None, sanity=sanity, deletion=deletion, meta=meta_doc
    )
    out.summary["headline"] = _headline(params.methods[0], localization or None, sanity, deletion)
    return out


# --------------------------------------------------------------------------------------------
# Manifold: pure core
# --------------------------------------------------------------------------------------------


def manifold_features(
    model: FaceVGG, meta: ModelMeta, ds: FaceDataset, *, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Penultimate embeddings (and, for the attributes task, predicted attribute vectors).

    Args:
        model: the exported model (used in eval mode, no gradients).
        meta: its metadata.
        ds: the samples (uint8 images; normalised here with the model's statistics).
        batch_size: images per forward pass.

    Returns:
        ``{"penultimate": (N, D)}`` plus ``{"attributes": (N, A)}`` (rating scale) for the
        attributes task.
    """
    tf = make_transform(
        meta.input_size, train=False, augment=0.0, norm_mean=meta.norm_mean, norm_std=meta.norm_std
    )
    was_training = model.training
    model.eval()
    emb: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for start in range(0, len(ds), batch_size):
                xb = tf(ds.images[start : start + batch_size])
                e = model.embed(xb)  # (B, D)
                emb.append(e.numpy())
                outs.append(model.classifier[-1](e).numpy())
    finally:
        model.train(was_training)
    feats = {"penultimate": np.concatenate(emb).astype(np.float64)}
    if meta.task == "attributes":
        pred = np.concatenate(outs)
        if meta.target_mean is not None and meta.target_std is not None:
            pred = pred * np.asarray(meta.target_std) + np.asarray(meta.target_mean)
        feats["attributes"] = pred.astype(np.float64)
    return feats


# --------------------------------------------------------------------------------------------
# Stage cores (I/O)
# --------------------------------------------------------------------------------------------


def _load(
    prepared_dir: Path, splits_dir: Path, model_dir: Path
) -> tuple[pd.DataFrame, FaceVGG, ModelMeta, str]:
    from facelens.models.vgg import load_exported
    from facelens.workflows import data_version_of, load_splits

    (test_rows,) = load_splits(prepared_dir, splits_dir, ("test",))
    if test_rows.empty:
        raise ValueError(
            f"{Path(splits_dir) / 'test.csv'} has no rows; the explain and manifold stages "
            "need a test split (check split.test_fraction)."
        )
    model, meta = load_exported(model_dir)
    return test_rows, model, meta, data_version_of(prepared_dir)


def _dataset(rows: pd.DataFrame, prepared_dir: Path, meta: ModelMeta) -> FaceDataset:
    # uint8 images are normalised by the callers; no transform, no target standardisation.
    return FaceDataset(rows, prepared_dir, meta.task, meta.input_size, transform=None)


def _log_to_run(
    params: Params, run_id: str, folder: Path, artifact_dir: str, metrics: Mapping[str, float]
) -> None:
    import mlflow

    from facelens.tracking.runs import configure, tracked_run

    configure(params.tracking.tracking_uri, params.tracking.experiment)
    with tracked_run("train", run_id=run_id):
        items = sorted(metrics.items())
        for start in range(0, len(items), 500):  # MLflow's batch limit is 1000 metrics
            mlflow.log_metrics(dict(items[start : start + 500]))
        mlflow.log_artifacts(str(folder), artifact_dir)


def _save_figure(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=_FIG_DPI)


def explain_stage(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    model_dir: Path,
    run_id: str | None,
    out_dir: Path,
) -> dict[str, Any]:
    """The ``explain`` stage: CAM grids, raw maps and ``faithfulness.json`` of the probe set.

    Writes ``out_dir`` atomically (``cam_grid_<method>.png``, ``class_<name>.png``,
    ``method_grid_*.png``, ``sanity_<method>.png``, ``cams_<method>.npz``,
    ``faithfulness.json``) and logs the folder to the train run as ``explain/`` with the
    faithfulness numbers as metrics ``explain.*``.

    Args:
        params: all params (``explain`` and ``tracking`` are used).
        prepared_dir: the prepared dataset.
        splits_dir: the split CSVs (``test.csv`` is used).
        model_dir: the exported model.
        run_id: the train run to log to; ``None`` logs nothing.
        out_dir: ``reports/explain``.

    Returns:
        The ``faithfulness.json`` document.
    """
    from facelens.data.manifest import atomic_output_dir

    test_rows, model, meta, data_version = _load(prepared_dir, splits_dir, model_dir)
    rows = select_probes(test_rows, meta.task, params.explain)
    probes = _dataset(rows, prepared_dir, meta)
    result = explain_probes(
        model,
        meta,
        probes,
        params.explain,
        context={"data_version": data_version, "run_id": run_id},
    )
    with atomic_output_dir(Path(out_dir)) as tmp:
        for name, fig in result.figures.items():
            _save_figure(fig, tmp / name)
        for name, arrays in result.arrays.items():
            np.savez_compressed(tmp / name, **arrays)
        (tmp / "faithfulness.json").write_text(
            json.dumps(result.summary, indent=2, allow_nan=False) + "\n"
        )
    if run_id is not None:
        _log_to_run(params, run_id, Path(out_dir), "explain", result.metrics())
    return result.summary


def _manifold_subset(rows: pd.DataFrame, params: ManifoldParams) -> pd.DataFrame:
    from facelens.explain.manifold import alignment_subset

    keep = set(alignment_subset(rows["id"].astype(str).tolist(), params.max_points, params.seed))
    sub = rows[rows["id"].astype(str).isin(keep)]
    return sub.sort_values("id", key=lambda s: s.astype(str), kind="mergesort").reset_index(
        drop=True
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def manifold_stage(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    model_dir: Path,
    run_id: str | None,
    out_dir: Path,
    reference_dir: Path,
) -> dict[str, Any]:
    """The ``manifold`` stage: PCA / t-SNE / UMAP layouts of the test split, their metrics.

    Embeds a seeded, fixed subset (``manifold.max_points``) of the test split, lays it out
    with every method, aligns each layout to the reference of the data version (created by
    the first run, stored as ``reference_dir/<data_version>.json`` outside DVC outputs) and
    writes ``out_dir`` atomically: ``<embedding>_<method>.png`` (coloured by expression, by
    ``manifold.colour_attribute`` and by identity), ``manifold.html`` (interactive, with
    thumbnails), ``layouts.csv`` and ``metrics.json``; then logs the folder to the train run as
    ``manifold/`` with metrics ``manifold.*``.

    Args:
        params: all params (``manifold`` and ``tracking`` are used).
        prepared_dir: the prepared dataset.
        splits_dir: the split CSVs (``test.csv`` is used).
        model_dir: the exported model.
        run_id: the train run to log to; ``None`` logs nothing.
        out_dir: ``reports/manifold``.
        reference_dir: folder of reference layouts (e.g. ``cache/manifold_reference``).

    Returns:
        The ``metrics.json`` document.
    """
    from facelens.data.manifest import atomic_output_dir
    from facelens.explain.manifold import (
        load_reference,
        run_manifold_analysis,
        save_reference,
        thumbnail_png,
    )

    mp = params.manifold
    test_rows, model, meta, data_version = _load(prepared_dir, splits_dir, model_dir)
    rows = _manifold_subset(test_rows, mp)
    ds = _dataset(rows, prepared_dir, meta)
    feats = manifold_features(model, meta, ds)
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
    shown = _hwc(ds.images)
    thumbs = [thumbnail_png(img, mp.thumbnail_size) for img in shown]

    ref_file = reference_path(reference_dir, data_version)
    reference = load_reference(ref_file) if ref_file.is_file() else None
    result = run_manifold_analysis(
        feats,
        ds.ids,
        labels if has_labels else None,
        EXPRESSIONS if has_labels else None,
        colour_by=colour_by,
        thumbnails=thumbs,
        methods=mp.methods,
        seed=mp.seed,
        reference=reference,
        anchors=mp.anchors,
        k=mp.k,
    )
    if reference is None or set(result.reference.layouts) != set(reference.layouts):
        ref_file.parent.mkdir(parents=True, exist_ok=True)
        ref = result.reference
        if reference is None:
            ref = type(ref)(
                ids=ref.ids,
                layouts=ref.layouts,
                meta={**ref.meta, "data_version": data_version, "run_id": str(run_id)},
            )
        tmp_ref = ref_file.with_name(f".{ref_file.stem}.tmp.json")
        save_reference(ref, tmp_ref)
        tmp_ref.replace(ref_file)  # atomic: a concurrent run never reads half a reference

    layouts = pd.DataFrame({"id": ds.ids})
    if has_labels:
        layouts["expression"] = [EXPRESSIONS[i] for i in labels]
    for name, values in colour_by.items():
        layouts[name] = values
    for key, lay in result.layouts.items():
        for j in range(lay.shape[1]):
            layouts[f"{key}/{j}"] = lay[:, j]
    doc = _jsonable(
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
    with atomic_output_dir(Path(out_dir)) as tmp:
        for name, fig in result.figures.items():
            _save_figure(fig, tmp / f"{name}.png")
        for name, page in result.html.items():
            (tmp / name).write_text(page, encoding="utf-8")
        layouts.to_csv(tmp / "layouts.csv", index=False)
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    if run_id is not None:
        flat = {metric_key(f"manifold.{k}"): v for k, v in result.flat_metrics().items()}
        _log_to_run(params, run_id, Path(out_dir), "manifold", flat)
    return doc
