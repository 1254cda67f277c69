"""CAM targets: what each image is explained for (predicted, true or named class; a signed
attribute output for the regression task).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)

__all__ = ["TARGET_KINDS", "SignedOutputTarget", "make_targets"]


#: The ``kind`` values accepted by :func:`make_targets`.
TARGET_KINDS: tuple[str, ...] = ("predicted", "true", "class", "attribute")


class SignedOutputTarget:
    """A ``pytorch_grad_cam`` target returning ``sign * output[..., index]``.

    For the attributes task (one regression output per attribute), ``sign=+1`` explains what
    raises the score and ``sign=-1`` what lowers it. It also gives signed class targets.

    Args:
        index: output column.
        sign: +1 or -1.
    """

    def __init__(self, index: int, sign: int = 1) -> None:
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, got {sign!r}.")
        self.index = int(index)
        self.sign = int(sign)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        """Return the signed score of one output row (or of each row of a batch)."""
        return self.sign * model_output[..., self.index]

    def __repr__(self) -> str:
        return f"SignedOutputTarget(index={self.index}, sign={self.sign:+d})"


def make_targets(
    kind: str,
    outputs: torch.Tensor | np.ndarray | None,
    labels: Sequence[int] | np.ndarray | None,
    names: Sequence[str],
    name: str | None = None,
    sign: int = 1,
    *,
    softmax: bool = False,
) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Build one CAM target per image.

    Args:
        kind: ``"predicted"`` (argmax of ``outputs``), ``"true"`` (``labels``), ``"class"`` (the
            class ``name`` for every image) or ``"attribute"`` (regression output ``name``).
        outputs: model outputs (B, K); needed for ``"predicted"`` and to know B otherwise
            (may be None when ``labels`` is given).
        labels: true class indices (B,); needed for ``"true"``.
        names: names of the K outputs (``EXPRESSIONS`` or ``ATTRIBUTES``).
        name: output name for ``"class"`` and ``"attribute"``.
        sign: +1 explains what raises the score, -1 what lowers it.
        softmax: classification kinds only: explain the softmax probability instead of the
            logit (use it for confidence-based metrics; CAMs are usually computed on logits).

    Returns:
        A list of B callables mapping one output row to a scalar score.

    Raises:
        ValueError: unknown kind or name, missing inputs, labels out of range, bad sign.
    """
    _check_kind(kind, sign, softmax)
    names = list(names)
    out_arr = None if outputs is None else _to_numpy(outputs)
    if out_arr is not None and (out_arr.ndim != 2 or out_arr.shape[1] != len(names)):
        raise ValueError(
            f"outputs must have shape (B, {len(names)}) to match names, got {out_arr.shape}."
        )
    if kind == "predicted":
        if out_arr is None:
            raise ValueError("kind='predicted' needs the model outputs (B, K); got None.")
        indices = [int(i) for i in np.argmax(out_arr, axis=1)]
    elif kind == "true":
        indices = _true_indices(labels, out_arr, names)
    else:
        indices = _named_indices(kind, name, names, out_arr, labels)

    if kind == "attribute" or sign == -1:
        return [SignedOutputTarget(i, sign) for i in indices]
    if softmax:
        return [ClassifierOutputSoftmaxTarget(i) for i in indices]
    return [ClassifierOutputTarget(i) for i in indices]


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_kind(kind: str, sign: int, softmax: bool) -> None:
    if kind not in TARGET_KINDS:
        raise ValueError(f"Unknown target kind {kind!r}; allowed: {list(TARGET_KINDS)}.")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}.")
    if softmax and (kind == "attribute" or sign != 1):
        raise ValueError(
            "softmax=True is only meaningful for positive class targets; got "
            f"kind={kind!r}, sign={sign:+d}. Use softmax=False for attributes or sign=-1."
        )


def _true_indices(
    labels: Sequence[int] | np.ndarray | None, out_arr: np.ndarray | None, names: list[str]
) -> list[int]:
    if labels is None:
        raise ValueError("kind='true' needs labels (B,); got None.")
    label_arr = np.asarray(labels, dtype=float)
    bad = ~np.isfinite(label_arr) | (label_arr < 0) | (label_arr >= len(names))
    if label_arr.ndim != 1 or bad.any():
        raise ValueError(
            f"labels must be class indices in 0..{len(names) - 1}; got {labels!r}. "
            "Drop unlabelled rows before asking for true-class targets."
        )
    if out_arr is not None and len(label_arr) != len(out_arr):
        raise ValueError(f"{len(label_arr)} labels for {len(out_arr)} outputs.")
    return [int(i) for i in label_arr]


def _named_indices(
    kind: str,
    name: str | None,
    names: list[str],
    out_arr: np.ndarray | None,
    labels: Sequence[int] | np.ndarray | None,
) -> list[int]:
    if name not in names:
        raise ValueError(
            f"kind={kind!r} needs name= one of the output names; got {name!r}, allowed: {names}."
        )
    if out_arr is not None:
        batch = len(out_arr)
    elif labels is not None:
        batch = len(labels)
    else:
        raise ValueError(f"kind={kind!r} needs outputs or labels to know the batch size.")
    return [names.index(name)] * batch
