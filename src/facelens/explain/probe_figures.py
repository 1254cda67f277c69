"""The explain stage's figures and arrays: a grid and a sanity figure per method, per-class
grids and per-image method comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from facelens.data.dataset import FaceDataset
from facelens.explain.cams.figures import attribute_grid, cam_grid, method_grid
from facelens.explain.cams.methods import method_slug
from facelens.explain.faithfulness.sanity import sanity_figure
from facelens.explain.maps import MethodMaps, hwc, take
from facelens.explain.params import ExplainParams
from facelens.explain.plan import Plan

_MAX_SANITY_ROWS = 7


def method_outputs(
    method: str,
    maps: MethodMaps,
    plan: Plan,
    probes: FaceDataset,
    outputs: torch.Tensor,
    names: Sequence[str],
    params: ExplainParams,
    random_names: Sequence[str],
    rhos: Sequence[float],
) -> tuple[dict[str, Figure], dict[str, np.ndarray]]:
    """The grid and sanity figures and the ``cams_<method>.npz`` arrays of one method."""
    idx = maps.idx
    shown = hwc(probes.images)
    labels = np.asarray(probes.labels)
    arrays: dict[str, np.ndarray] = {
        "ids": np.asarray(take(probes.ids, idx)),
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


def comparison_figures(
    all_maps: Mapping[str, MethodMaps], plan: Plan, probes: FaceDataset, params: ExplainParams
) -> dict[str, Figure]:
    """Per-class grids (every method on a class's probes) and per-image method comparisons."""
    shown = hwc(probes.images)
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
