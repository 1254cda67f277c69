"""The pure core of the ``explain`` stage: CAMs of every method on a fixed probe set, their
figures and faithfulness checks (:func:`explain_probes`), and the compact numbers that
``dvc metrics`` shows (:func:`faithfulness_metrics`).

File names use a slug of the method (``gradcam++`` -> ``gradcampp``) and MLflow metric names
are sanitised the same way (MLflow refuses ``+`` in metric keys).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from facelens._io import jsonable
from facelens.data.dataset import FaceDataset
from facelens.errors import DataError
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
from facelens.explain.params import ExplainParams
from facelens.models.vgg import FaceVGG, ModelMeta, resolve_cam_layer

__all__ = [
    "Explanations",
    "explain_probes",
    "faithfulness_metrics",
    "method_slug",
    "metric_key",
    "randomized_layers",
    "select_probes",
]

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
        if params.layer == "auto":
            raise ValueError("resolve layer 'auto' first (facelens.models.vgg.resolve_cam_layer)")
        first = int(params.layer.removeprefix("block"))
        chosen = ["head", *[f"block{b}" for b in range(5, first - 1, -1)]]
    return ["classifier" if c == "head" else f"blocks.{int(c[5:]) - 1}" for c in chosen]


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
        """Numeric leaves of the summary as MLflow metrics, prefixed ``explain.``.

        Per-class localization and the ``meta`` block stay in ``faithfulness.json`` only, so
        the run's metric list holds one set of numbers per method (plus ``explain.headline.*``).
        """
        flat = summary_metrics(self.summary, prefix="explain.")
        return {
            metric_key(k): v
            for k, v in flat.items()
            if ".per_class." not in k and not k.startswith("explain.meta.")
        }


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
        raise DataError(
            "the test split has no expression labels, so there is no probe set for the "
            "expression task; train an attributes model or use a labelled source."
        )
    return probe_set(rows[labelled], params.per_class, params.seed)


_Target = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Plan:
    """What to explain on the probes: targets, their order and how to describe them."""

    targets: dict[str, list[_Target]]  # label -> one target per probe; the first is primary
    scored: list[_Target]  # deletion scores (class probabilities for the expression task)
    explained_class: np.ndarray | None  # (N,) class index per probe (expression task)
    order: list[int]  # probe indices, first probe of each class first
    n_compare: int  # method-comparison figures (one per class)
    captions: list[str]  # one per probe, for figure titles
    notes: list[str]
    values: dict[str, np.ndarray] | None = None  # target label -> (N,) predicted rating


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


def _expression_plan(
    params: ExplainParams, outputs: torch.Tensor, labels: np.ndarray, names: Sequence[str]
) -> _Plan:
    if params.target in ("predicted", "true"):
        kind, name = params.target, None
    else:
        kind, name = "class", params.target
    if params.target == "predicted":
        explained = outputs.argmax(dim=1).numpy().astype(np.int64)
    elif params.target == "true":
        explained = np.asarray(labels, dtype=np.int64)
    else:
        explained = np.full(len(outputs), list(names).index(params.target), dtype=np.int64)
    probs = torch.softmax(outputs, dim=1).numpy()
    preds = probs.argmax(axis=1)
    captions = [
        f"true {names[t] if t >= 0 else '?'}, pred {names[p]} ({probs[i, p]:.2f})"
        for i, (t, p) in enumerate(zip(labels, preds, strict=True))
    ]
    return _Plan(
        targets={params.target: make_targets(kind, outputs, labels, names, name)},
        scored=make_targets(kind, outputs, labels, names, name, softmax=True),
        explained_class=explained,
        order=_round_robin(labels),
        n_compare=len(set(labels.tolist())),
        captions=captions,
        notes=[],
    )


def _attribute_plan(
    params: ExplainParams, outputs: torch.Tensor, names: Sequence[str], meta: ModelMeta
) -> _Plan:
    targets = {
        f"{a} {'+' if sign > 0 else '-'}": make_targets("attribute", outputs, None, names, a, sign)
        for a in params.attributes
        for sign in (1, -1)
    }
    primary = next(iter(targets))
    mean = np.asarray(meta.target_mean or [0.0] * len(names), dtype=np.float64)
    std = np.asarray(meta.target_std or [1.0] * len(names), dtype=np.float64)
    scores = outputs.numpy() * std + mean  # (N, A) on the rating scale
    shown = [names.index(a) for a in params.attributes]
    captions = [
        ", ".join(f"{names[j]} {scores[i, j]:.1f}" for j in shown) for i in range(len(outputs))
    ]
    n = len(outputs)
    values = {label: scores[:, names.index(label.split(" ")[0])] for label in targets}
    return _Plan(
        targets=targets,
        values=values,
        scored=targets[primary],
        explained_class=None,
        order=list(range(n)),
        n_compare=min(4, n),
        captions=captions,
        notes=[
            f"attributes task: sanity and deletion use the target {primary!r}; localization "
            "is defined for expression classes only."
        ],
    )


@dataclass(frozen=True)
class _MethodMaps:
    """One method's maps on the probes ``idx``."""

    idx: list[int]
    cams: dict[str, np.ndarray]  # target label -> (n, H, W) in [0, 1]; first = primary
    raw: np.ndarray  # (n, H, W) primary target, unnormalised
    random_cams: np.ndarray  # (n, H, W) primary target on the randomised model
    random_raw: np.ndarray

    @property
    def primary(self) -> np.ndarray:
        return next(iter(self.cams.values()))


def _method_maps(
    method: str,
    model: FaceVGG,
    random_model: FaceVGG,
    x: torch.Tensor,
    plan: _Plan,
    params: ExplainParams,
) -> _MethodMaps:
    """CAMs of one method for every target, plus the primary target on the randomised copy."""
    # ScoreCAM needs one forward pass per layer channel: a few probes, primary target only.
    slow = method == "scorecam"
    idx = sorted(plan.order[: params.scorecam_images]) if slow else list(range(len(x)))
    targets = dict(list(plan.targets.items())[:1]) if slow else plan.targets
    kw = {"method": method, "batch_size": params.batch_size}
    layer = model.gradcam_layers()[params.layer]
    cams: dict[str, np.ndarray] = {}
    raw = None
    for label, target_list in targets.items():
        batch = compute_cam_batch(model, layer, x[idx], _take(target_list, idx), **kw)
        cams[label] = batch.cams
        raw = batch.raw if raw is None else raw
    primary = next(iter(plan.targets.values()))
    random_layer = random_model.gradcam_layers()[params.layer]
    rand = compute_cam_batch(random_model, random_layer, x[idx], _take(primary, idx), **kw)
    assert raw is not None  # targets is never empty
    return _MethodMaps(idx=idx, cams=cams, raw=raw, random_cams=rand.cams, random_raw=rand.raw)


def _take(items: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    return [items[i] for i in idx]


def _hwc(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) uint8 -> (B, H, W, 3) uint8."""
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def _method_outputs(
    method: str,
    maps: _MethodMaps,
    plan: _Plan,
    probes: FaceDataset,
    outputs: torch.Tensor,
    names: Sequence[str],
    params: ExplainParams,
    random_names: Sequence[str],
    rhos: Sequence[float],
) -> tuple[dict[str, Figure], dict[str, np.ndarray]]:
    """The grid and sanity figures and the ``cams_<method>.npz`` arrays of one method."""
    idx = maps.idx
    shown = _hwc(probes.images)
    labels = np.asarray(probes.labels)
    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(_take(probes.ids, idx)),
        "targets": np.asarray(list(maps.cams)),
        "raw": maps.raw.astype(np.float32),
    }
    if plan.explained_class is not None:
        probs = torch.softmax(outputs, dim=1).numpy()[idx]
        preds = probs.argmax(axis=1)
        arrays["cams"] = maps.primary.astype(np.float16)  # (n, H, W)
        arrays["target_index"] = plan.explained_class[idx]
        arrays["target_name"] = np.asarray([names[i] for i in plan.explained_class[idx]])
        grid = cam_grid(
            shown[idx],
            maps.primary,
            [int(v) if v >= 0 else None for v in labels[idx]],
            [int(p) for p in preds],
            [float(probs[i, p]) for i, p in enumerate(preds)],
            names,
            title=f"{method} @ {params.layer}, target: {params.target}",
        )
    else:
        arrays["cams"] = np.stack(list(maps.cams.values())).astype(np.float16)  # (T, n, H, W)
        grid = attribute_grid(
            shown[idx],
            maps.cams,
            {k: v[idx].tolist() for k, v in (plan.values or {}).items() if k in maps.cams},
            title=f"{method} @ {params.layer}: signed attribute targets",
        )
    chosen = set(idx)
    rows = sorted([i for i in plan.order if i in chosen][:_MAX_SANITY_ROWS])
    pos = [idx.index(i) for i in rows]
    sanity = sanity_figure(
        shown[rows],
        maps.primary[pos],
        maps.random_cams[pos],
        [rhos[p] for p in pos],
        title=f"{method}: trained vs randomised ({', '.join(random_names)})",
    )
    slug = method_slug(method)
    return {f"cam_grid_{slug}.png": grid, f"sanity_{slug}.png": sanity}, arrays


def _comparison_figures(
    all_maps: Mapping[str, _MethodMaps], plan: _Plan, probes: FaceDataset, params: ExplainParams
) -> dict[str, Figure]:
    """Per-class grids (every method on a class's probes) and per-image method comparisons."""
    shown = _hwc(probes.images)
    labels = np.asarray(probes.labels)
    n = len(probes)
    figures: dict[str, Figure] = {}
    complete = {m: maps.primary for m, maps in all_maps.items() if len(maps.idx) == n}
    if plan.explained_class is not None and complete:
        for c in sorted({int(v) for v in labels if v >= 0}):
            sel = np.flatnonzero(labels == c)
            name = probes.target_names[c]
            figures[f"class_{name}.png"] = attribute_grid(
                shown[sel],
                {m: cams[sel] for m, cams in complete.items()},
                title=f"true class {name} — {params.layer}, target: {params.target}",
            )
    primary = next(iter(plan.targets))
    for rank, i in enumerate(plan.order[: plan.n_compare]):
        cams = {m: maps.primary[maps.idx.index(i)] for m, maps in all_maps.items() if i in maps.idx}
        figures[f"method_grid_{rank:02d}_{probes.ids[i]}.png"] = method_grid(
            shown[i],
            cams,
            title=f"{probes.ids[i]}: {plan.captions[i]} — {params.layer}, target {primary}",
        )
    return figures


def _headline(
    method: str,
    localization: Mapping[str, Any],
    sanity: Mapping[str, Any],
    deletion: Mapping[str, Any],
) -> dict[str, Any]:
    def num(x: Any) -> float | None:
        return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None

    loc = localization.get(method, {})
    return {
        "method": method,
        "localization_lift": num(loc.get("mean_lift")),
        "localization_lift_in_face": num(loc.get("mean_lift_in_face")),
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
    ``params.scorecam_images`` probes (one per class first), for the primary target only.
    The sanity check compares the raw maps of the model and of a copy with
    :func:`randomized_layers` re-initialised (Spearman per image).

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
    n = len(probes)
    if n == 0:
        raise DataError("the probe set is empty; the test split has no usable rows.")
    params = params.model_copy(update={"layer": resolve_cam_layer(params.layer, meta.input_size)})
    names = list(meta.output_names)
    model.eval()
    x = meta.eval_transform()(probes.images)  # (N, 3, S, S) normalised
    with torch.no_grad():
        outputs = model(x)  # (N, K)
    labels = np.asarray(probes.labels)
    if meta.task == "expression":
        plan = _expression_plan(params, outputs, labels, names)
    else:
        plan = _attribute_plan(params, outputs, names, meta)
    masks = None if probes.masks is None else probes.masks.numpy()
    notes = list(plan.notes)
    if plan.explained_class is not None and masks is None:
        notes.append("no region masks in the prepared data: localization skipped.")
    random_names = randomized_layers(params)
    random_model = randomized_copy(model, random_names, params.seed)

    out = Explanations()
    all_maps: dict[str, _MethodMaps] = {}
    localization: dict[str, Any] = {}
    sanity: dict[str, Any] = {}
    deletion: dict[str, Any] = {}
    for method in params.methods:
        maps = _method_maps(method, model, random_model, x, plan, params)
        all_maps[method] = maps
        sanity[method] = sanity_check(maps.raw, maps.random_raw, threshold=params.sanity_threshold)
        deletion[method] = deletion_report(
            model,
            x[maps.idx],
            maps.primary,
            _take(plan.scored, maps.idx),
            removal_fractions=params.removal_fractions,
            seed=params.seed,
            road=params.road,
        )
        if plan.explained_class is not None and masks is not None:
            localization[method] = localization_report(
                maps.primary, masks[maps.idx], plan.explained_class[maps.idx], class_names=names
            )
        figures, arrays = _method_outputs(
            method,
            maps,
            plan,
            probes,
            outputs,
            names,
            params,
            random_names,
            sanity[method]["spearman_per_image"],
        )
        out.figures.update(figures)
        out.arrays[f"cams_{method_slug(method)}.npz"] = arrays
    out.figures.update(_comparison_figures(all_maps, plan, probes, params))

    meta_doc: dict[str, Any] = {
        "task": meta.task,
        "layer": params.layer,
        "target": params.target if plan.explained_class is not None else list(plan.targets),
        "methods": {
            m: {"targets": list(maps.cams), "n_images": len(maps.idx)}
            for m, maps in all_maps.items()
        },
        "headline_method": params.methods[0],
        "n_probes": n,
        "probe_ids": list(probes.ids),
        "randomized_layers": random_names,
        "sanity_maps": "raw (unclipped, unnormalised) layer maps",
        "localization_class": "explained class" if plan.explained_class is not None else None,
        "seed": params.seed,
        "notes": notes,
        **dict(context or {}),
    }
    out.summary = faithfulness_summary(
        localization=localization or None, sanity=sanity, deletion=deletion, meta=meta_doc
    )
    out.summary["headline"] = _headline(params.methods[0], localization, sanity, deletion)
    return out


def faithfulness_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The compact ``faithfulness.json`` that ``dvc metrics`` shows: the headline, the layer
    and per method the localization lift (image and in-face), the randomization Spearman (and
    whether it passed), ROAD combined and the confidence drop. Per-class and per-image detail
    stay in ``faithfulness_details.json``."""
    loc, san, dele = (summary.get(k, {}) for k in ("localization", "sanity", "deletion"))
    methods = list(dict.fromkeys([*san, *loc, *dele]))
    return jsonable(
        {
            "layer": summary.get("meta", {}).get("layer"),
            "headline": summary.get("headline", {}),
            "methods": {
                m: {
                    "localization_lift": loc.get(m, {}).get("mean_lift"),
                    "localization_lift_in_face": loc.get(m, {}).get("mean_lift_in_face"),
                    "sanity_spearman": san.get(m, {}).get("spearman_mean"),
                    "sanity_passed": san.get(m, {}).get("passed"),
                    "road_combined": dele.get(m, {}).get("road_combined"),
                    "confidence_drop": dele.get(m, {}).get("confidence_drop"),
                }
                for m in methods
            },
        }
    )
