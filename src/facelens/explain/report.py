"""The pure core of the ``explain`` stage: CAMs of every method on a fixed probe set, their
figures and faithfulness checks (:func:`explain_probes`), and the compact numbers that
``dvc metrics`` shows (:func:`faithfulness_metrics`).

File names use a slug of the method (``gradcam++`` -> ``gradcampp``) and MLflow metric names
are sanitised the same way (MLflow refuses ``+`` in metric keys): see
:func:`facelens.explain.cams.methods.method_slug` and :func:`facelens._io.flatten_metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from facelens._io import flatten_metrics, jsonable
from facelens.data.dataset import FaceDataset
from facelens.device import model_device
from facelens.errors import DataError
from facelens.explain.cams.methods import method_slug
from facelens.explain.cams.probes import probe_set
from facelens.explain.chart_images import chart_images
from facelens.explain.faithfulness.attribute_regions import attribute_localization
from facelens.explain.faithfulness.deletion import deletion_report
from facelens.explain.faithfulness.localization import localization_report
from facelens.explain.faithfulness.sanity import randomized_copy, sanity_check
from facelens.explain.faithfulness.summary import faithfulness_summary
from facelens.explain.maps import MethodMaps, method_maps, take
from facelens.explain.params import ExplainParams
from facelens.explain.plan import Plan, attribute_plan, expression_plan, randomized_layers
from facelens.explain.probe_figures import comparison_figures, method_outputs
from facelens.models.layers import resolve_cam_layer
from facelens.models.meta import ModelMeta
from facelens.models.vgg import FaceVGG
from facelens.progress import task as progress_task

__all__ = [
    "Explanations",
    "explain_probes",
    "faithfulness_metrics",
    "method_table",
    "select_probes",
]


#: Summary blocks that are not logged as metrics: context, and the per-method table that
#: repeats the checks' own numbers.
_NOT_METRICS = ("explain.meta", "explain.methods")


@dataclass
class Explanations:
    """What the ``explain`` stage writes.

    Attributes:
        figures: file name -> figure (``cam_grid_<method>.png``, ``class_<name>.png``,
            ``method_grid_<n>_<id>.png``, ``sanity_<method>.png``).
        arrays: file name -> arrays saved with ``np.savez_compressed`` (``cams_<method>.npz``).
        summary: the ``faithfulness_details.json`` document (JSON-safe: NaN -> None).
        images: MLflow image key -> (H, W, 3) uint8 composite
            (:func:`facelens.explain.chart_images.chart_images`).
    """

    figures: dict[str, Figure] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Numeric leaves of the summary as MLflow metrics, prefixed ``explain.``.

        Per-class localization, the ``meta`` block and the ``methods`` table (the same numbers
        again) stay in ``faithfulness_details.json`` only, so the run's metric list holds one
        set of numbers per method (plus ``explain.headline.*``).
        """
        return flatten_metrics(
            self.summary,
            "explain",
            sep=".",
            bools=True,
            lists=False,
            skip=lambda key: key.endswith(".per_class") or key in _NOT_METRICS,
        )


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
    x, outputs, plan = _forward_and_plan(model, meta, probes, params)
    masks = None if probes.masks is None else probes.masks.numpy()
    notes = list(plan.notes)
    if plan.explained_class is not None and masks is None:
        notes.append("no region masks in the prepared data: localization skipped.")
    random_names = randomized_layers(params)
    random_model = randomized_copy(model, random_names, params.seed)

    out = Explanations()
    checks = _Checks()
    all_maps: dict[str, MethodMaps] = {}
    with progress_task("methods", len(params.methods)) as bar:
        for k, method in enumerate(params.methods):
            bar.update(k, {"now": method})
            all_maps[method] = maps = method_maps(method, model, random_model, x, plan, params)
            checks.run(method, model, x, maps, plan, masks, names, params)
            figures, arrays = method_outputs(
                method,
                maps,
                plan,
                probes,
                outputs,
                names,
                params,
                random_names,
                checks.sanity[method]["spearman_per_image"],
            )
            out.figures.update(figures)
            out.arrays[f"cams_{method_slug(method)}.npz"] = arrays
    out.figures.update(comparison_figures(all_maps, plan, probes, params))
    out.images = chart_images(all_maps, plan, probes)
    meta_doc = {
        **_meta_doc(meta.task, params, plan, all_maps, probes, random_names, notes),
        **dict(context or {}),
    }
    out.summary = faithfulness_summary(
        localization=checks.localization or None,
        sanity=checks.sanity,
        deletion=checks.deletion,
        meta=meta_doc,
    )
    out.summary["headline"] = checks.headline(params.methods[0])
    out.summary["methods"] = method_table(out.summary)
    return out


def _forward_and_plan(
    model: FaceVGG, meta: ModelMeta, probes: FaceDataset, params: ExplainParams
) -> tuple[torch.Tensor, torch.Tensor, Plan]:
    """The normalised probes (N, 3, S, S), the model's outputs (N, K) and the plan."""
    model.eval()
    x = meta.eval_transform()(probes.images)
    with torch.no_grad():
        outputs = model(x.to(model_device(model))).float().cpu()
    names = list(meta.output_names)
    if meta.task == "expression":
        return x, outputs, expression_plan(params, outputs, np.asarray(probes.labels), names)
    return x, outputs, attribute_plan(params, outputs, names, meta)


@dataclass
class _Checks:
    """The faithfulness reports of each method, filled by :meth:`run`."""

    localization: dict[str, Any] = field(default_factory=dict)
    sanity: dict[str, Any] = field(default_factory=dict)
    deletion: dict[str, Any] = field(default_factory=dict)

    def headline(self, method: str) -> dict[str, Any]:
        """The headline method's numbers (:func:`_headline`)."""
        return _headline(method, self.localization, self.sanity, self.deletion)

    def run(
        self,
        method: str,
        model: FaceVGG,
        x: torch.Tensor,
        maps: MethodMaps,
        plan: Plan,
        masks: np.ndarray | None,
        names: list[str],
        params: ExplainParams,
    ) -> None:
        """Sanity (raw maps vs randomised model), deletion and, with masks, localization."""
        self.sanity[method] = sanity_check(
            maps.raw, maps.random_raw, threshold=params.sanity_threshold
        )
        self.deletion[method] = deletion_report(
            model,
            x[maps.idx],
            maps.primary,
            take(plan.scored, maps.idx),
            removal_fractions=params.removal_fractions,
            seed=params.seed,
            road=params.road,
        )
        if plan.explained_class is not None and masks is not None:
            self.localization[method] = localization_report(
                maps.primary, masks[maps.idx], plan.explained_class[maps.idx], class_names=names
            )
        elif masks is not None:  # attributes: the primary attribute's driving regions
            attribute = next(iter(plan.targets)).split(" ")[0]
            self.localization[method] = attribute_localization(
                maps.primary, masks[maps.idx], attribute
            )


def _meta_doc(
    task: str,
    params: ExplainParams,
    plan: Plan,
    all_maps: Mapping[str, MethodMaps],
    probes: FaceDataset,
    random_names: list[str],
    notes: list[str],
) -> dict[str, Any]:
    """The ``meta`` block of the summary: what was explained, on what, and how."""
    return {
        "task": task,
        "layer": params.layer,
        "target": params.target if plan.explained_class is not None else list(plan.targets),
        "methods": {
            m: {"targets": list(maps.cams), "n_images": len(maps.idx)}
            for m, maps in all_maps.items()
        },
        "headline_method": params.methods[0],
        "n_probes": len(probes),
        "probe_ids": list(probes.ids),
        "randomized_layers": random_names,
        "sanity_maps": "raw (unclipped, unnormalised) layer maps",
        "localization_class": (
            "explained class"
            if plan.explained_class is not None
            else f"driving regions of {next(iter(plan.targets)).split(' ')[0]!r}"
        ),
        "seed": params.seed,
        "notes": notes,
    }


def method_table(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method: localization lift (image and in-face), randomization Spearman (and whether
    it passed), ROAD combined and the confidence drop (``faithfulness_details.json``'s
    ``methods`` block)."""
    loc, san, dele = (summary.get(k, {}) for k in ("localization", "sanity", "deletion"))
    methods = list(dict.fromkeys([*san, *loc, *dele]))
    return jsonable(
        {
            m: {
                "localization_lift": loc.get(m, {}).get("mean_lift"),
                "localization_lift_in_face": loc.get(m, {}).get("mean_lift_in_face"),
                **({"localization_passed": loc[m]["passed"]} if "passed" in loc.get(m, {}) else {}),
                "sanity_spearman": san.get(m, {}).get("spearman_mean"),
                "sanity_passed": san.get(m, {}).get("passed"),
                "road_combined": dele.get(m, {}).get("road_combined"),
                "confidence_drop": dele.get(m, {}).get("confidence_drop"),
            }
            for m in methods
        }
    )


#: ``faithfulness.json`` key -> headline key (the headline method's numbers).
HEADLINE_KEYS = {
    "lift": "localization_lift",
    "sanity_rho": "sanity_spearman",
    "road": "road_combined",
}


def faithfulness_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The headline ``faithfulness.json`` that ``dvc metrics`` shows: the headline method's
    (``explain.methods[0]``) localization lift, randomization Spearman and ROAD combined,
    under short keys (:data:`HEADLINE_KEYS`) so that ``dvc metrics show`` of all three metrics
    files fits a 120-column terminal. Absent numbers (no masks: no lift) are left out.
    Every method's numbers, per class and per image, stay in ``faithfulness_details.json``
    (``methods`` block: :func:`method_table`) and in the run."""
    headline = summary.get("headline", {})
    doc = {short: headline.get(key) for short, key in HEADLINE_KEYS.items()}
    return jsonable({k: v for k, v in doc.items() if v is not None})
