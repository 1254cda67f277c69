"""The explanation plan of a probe set: which output each probe is explained for (per task),
in which order probes are shown, and which layers the sanity check re-initialises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facelens.explain.cams.targets import make_targets
from facelens.explain.params import ExplainParams
from facelens.models.meta import ModelMeta

__all__ = [
    "Plan",
    "Target",
    "attribute_plan",
    "expression_plan",
    "randomized_layers",
    "round_robin",
]


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
            raise ValueError(
                "resolve layer 'auto' first (facelens.models.layers.resolve_cam_layer)"
            )
        first = int(params.layer.removeprefix("block"))
        chosen = ["head", *[f"block{b}" for b in range(5, first - 1, -1)]]
    return ["classifier" if c == "head" else f"blocks.{int(c[5:]) - 1}" for c in chosen]


Target = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Plan:
    """What to explain on the probes: targets, their order and how to describe them."""

    targets: dict[str, list[Target]]  # label -> one target per probe; the first is primary
    scored: list[Target]  # deletion scores (class probabilities for the expression task)
    explained_class: np.ndarray | None  # (N,) class index per probe (expression task)
    order: list[int]  # probe indices, first probe of each class first
    n_compare: int  # method-comparison figures (one per class)
    captions: list[str]  # one per probe, for figure titles
    notes: list[str]
    values: dict[str, np.ndarray] | None = None  # target label -> (N,) predicted rating


def round_robin(labels: np.ndarray) -> list[int]:
    """Indices ordered first probe of each class, then second of each class, ..."""
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    order: list[int] = []
    depth = max((len(g) for g in groups.values()), default=0)
    for d in range(depth):
        order.extend(g[d] for _, g in sorted(groups.items()) if d < len(g))
    return order


def expression_plan(
    params: ExplainParams, outputs: torch.Tensor, labels: np.ndarray, names: Sequence[str]
) -> Plan:
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
    return Plan(
        targets={params.target: make_targets(kind, outputs, labels, names, name)},
        scored=make_targets(kind, outputs, labels, names, name, softmax=True),
        explained_class=explained,
        order=round_robin(labels),
        n_compare=len(set(labels.tolist())),
        captions=captions,
        notes=[],
    )


def attribute_plan(
    params: ExplainParams, outputs: torch.Tensor, names: Sequence[str], meta: ModelMeta
) -> Plan:
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
    return Plan(
        targets=targets,
        values=values,
        scored=targets[primary],
        explained_class=None,
        order=list(range(n)),
        n_compare=min(4, n),
        captions=captions,
        notes=[
            f"attributes task: sanity, deletion and localization use the target {primary!r}; "
            "localization scores its energy in the face regions that drive the attribute in "
            "SynthFACS (explain.faithfulness.attribute_regions; passed: lift in face > 1)."
        ],
    )
