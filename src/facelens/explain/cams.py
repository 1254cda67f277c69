"""Grad-CAM family explanations: methods, targets, batched computation, overlays, figures.

Everything here works with any ``nn.Module`` and one target layer (for ``FaceVGG`` pick one of
``model.gradcam_layers()``). CAMs come from the ``pytorch_grad_cam`` package; this module adds

* one name per method (:data:`METHODS`) and the targets facelens needs (predicted, true or
  named class; a signed attribute output for the regression task),
* batching, hook release even when a computation fails, and a model that is left in eval mode
  with its parameter gradients exactly as they were,
* the raw (layer-resolution, unclipped, unnormalised) maps next to the package's per-image
  min-max normalised ones, for the model-randomisation sanity check,
* a deterministic probe set and figure builders that return a ``Figure`` and never save.

A target layer should be the output of a block (e.g. a max-pool or a whole block
``nn.Sequential``) or a ReLU: the package hooks the layer's *output*, so hooking a convolution
that is followed by an in-place ReLU records the post-ReLU tensor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from torch import nn

from facelens.errors import CamError

__all__ = [
    "GRADIENT_FREE_METHODS",
    "METHODS",
    "SCORECAM_MAX_IMAGES",
    "TARGET_KINDS",
    "CamBatch",
    "CamError",
    "SignedOutputTarget",
    "attribute_grid",
    "cam_grid",
    "compute_cam_batch",
    "compute_cams",
    "denormalize",
    "make_targets",
    "method_grid",
    "overlay",
    "probe_set",
    "resolve_method",
]

#: Method name -> ``pytorch_grad_cam`` class. Names are the CLI/params spelling.
METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "scorecam": ScoreCAM,
}

#: Methods that need no backward pass (EigenCAM: first principal component of the activations;
#: ScoreCAM: one forward pass per activation channel).
GRADIENT_FREE_METHODS: frozenset[str] = frozenset({"eigencam", "scorecam"})

#: ScoreCAM runs one forward pass per channel of the target layer for every image (512 channels
#: for VGG16 block5, i.e. about 512 VGG16 forward passes per image): refuse more images than
#: this unless the caller raises the cap explicitly.
SCORECAM_MAX_IMAGES: int = 32

#: The ``kind`` values accepted by :func:`make_targets`.
TARGET_KINDS: tuple[str, ...] = ("predicted", "true", "class", "attribute")

_ALIASES: dict[str, str] = {
    "gradcampp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "gradcam_plusplus": "gradcam++",
}


@dataclass(frozen=True)
class CamBatch:
    """CAMs for a batch of images.

    Attributes:
        cams: (B, H, W) float32 in [0, 1]: the package's maps (ReLU, per-image min-max
            normalised, resized to the input size).
        raw: (B, H, W) float32: the same maps before ReLU and normalisation (the method's
            weighted activations at layer resolution), bilinearly upsampled to the input size.
            Use them where the clipping to zero would create ties (rank correlations).
        method: canonical method name.
    """

    cams: np.ndarray
    raw: np.ndarray
    method: str


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


def resolve_method(method: str) -> str:
    """Return the canonical name of a CAM method.

    Args:
        method: a key of :data:`METHODS` (case-insensitive; ``gradcampp`` is accepted for
            ``gradcam++``).

    Returns:
        The canonical key of :data:`METHODS`.

    Raises:
        ValueError: unknown method.
    """
    key = method.strip().lower().replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(
            f"Unknown CAM method {method!r}; allowed: {sorted(METHODS)}. "
            "Pick one of these in params.yaml (explain.methods)."
        )
    return key


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
    if kind not in TARGET_KINDS:
        raise ValueError(f"Unknown target kind {kind!r}; allowed: {list(TARGET_KINDS)}.")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}.")
    if softmax and (kind == "attribute" or sign != 1):
        raise ValueError(
            "softmax=True is only meaningful for positive class targets; got "
            f"kind={kind!r}, sign={sign:+d}. Use softmax=False for attributes or sign=-1."
        )
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
        indices = [int(i) for i in label_arr]
    else:
        if name not in names:
            raise ValueError(
                f"kind={kind!r} needs name= one of the output names; got {name!r}, "
                f"allowed: {names}."
            )
        if out_arr is not None:
            batch = len(out_arr)
        elif labels is not None:
            batch = len(labels)
        else:
            raise ValueError(f"kind={kind!r} needs outputs or labels to know the batch size.")
        indices = [names.index(name)] * batch

    if kind == "attribute" or sign == -1:
        return [SignedOutputTarget(i, sign) for i in indices]
    if softmax:
        return [ClassifierOutputSoftmaxTarget(i) for i in indices]
    return [ClassifierOutputTarget(i) for i in indices]


class _RawCaptureMixin:
    """Records every ``get_cam_image`` result (the unclipped, unnormalised layer map)."""

    _facelens_raw: list[np.ndarray]

    def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
        cam = super().get_cam_image(*args, **kwargs)  # type: ignore[misc]
        self._facelens_raw.append(np.asarray(cam, dtype=np.float32))
        return cam


@cache
def _capturing_class(cls: type[BaseCAM]) -> type[BaseCAM]:
    return type(f"_Raw{cls.__name__}", (_RawCaptureMixin, cls), {})


def compute_cam_batch(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    method: str = "gradcam",
    batch_size: int = 16,
    *,
    score_batch_size: int = 16,
    max_scorecam_images: int = SCORECAM_MAX_IMAGES,
) -> CamBatch:
    """Compute CAMs (normalised and raw) for a batch of images.

    Hooks are registered once, through the package's context manager, and released when the
    block exits, also on error. The model is put in eval mode (and left there); the gradients
    of its parameters are restored to what they were before the call.

    Args:
        model: any module mapping (B, 3, H, W) to (B, K).
        layer: the target layer (a submodule of ``model``).
        images: (B, 3, H, W) float tensor, already normalised for the model.
        targets: one target per image (see :func:`make_targets`); None explains the
            predicted class.
        method: a key of :data:`METHODS`.
        batch_size: images per forward/backward pass.
        score_batch_size: ScoreCAM only: masked images per forward pass.
        max_scorecam_images: ScoreCAM only: refuse larger batches (it is slow, see
            :data:`SCORECAM_MAX_IMAGES`).

    Returns:
        A :class:`CamBatch` with ``cams`` and ``raw`` of shape (B, H, W).

    Raises:
        ValueError: bad shapes, sizes or method.
        CamError: the package failed on an index error (e.g. target index >= K).
    """
    method = resolve_method(method)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}.")
    n_images, _, height, width = images.shape
    if targets is not None and len(targets) != n_images:
        raise ValueError(f"Got {len(targets)} targets for {n_images} images; pass one per image.")
    if batch_size < 1 or score_batch_size < 1:
        raise ValueError(
            f"batch_size and score_batch_size must be >= 1, got {batch_size}, {score_batch_size}."
        )
    if method == "scorecam" and n_images > max_scorecam_images:
        raise ValueError(
            f"ScoreCAM on {n_images} images exceeds max_scorecam_images={max_scorecam_images}: "
            "it needs one forward pass per layer channel per image. Use a smaller probe set or "
            "raise the cap explicitly."
        )
    if not any(m is layer for m in model.modules()):
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model; pass one of its "
            "modules (e.g. a value of FaceVGG.gradcam_layers())."
        )

    saved_grads = {name: p.grad for name, p in model.named_parameters()}
    cams: list[np.ndarray] = []
    raws: list[np.ndarray] = []
    cam_cls = _capturing_class(METHODS[method])
    source = images.detach()
    try:
        with torch.enable_grad(), cam_cls(model=model, target_layers=[layer]) as cam:
            if method == "scorecam":
                cam.batch_size = score_batch_size
            for start in range(0, n_images, batch_size):
                # A fresh leaf that requires grad: the target layer's output then carries a
                # graph even when every parameter of the model is frozen.
                chunk = source[start : start + batch_size].clone()
                chunk.requires_grad_(cam.uses_gradients)
                chunk_targets = (
                    None if targets is None else list(targets[start : start + batch_size])
                )
                cam._facelens_raw = []
                try:
                    maps = cam(input_tensor=chunk, targets=chunk_targets)
                except IndexError as exc:
                    raise CamError(
                        f"{method} failed with IndexError: {exc}. Check that target indices are "
                        "below the number of model outputs and that the layer is used in forward."
                    ) from exc
                if not cam._facelens_raw:
                    raise CamError(f"{method} produced no layer map; is the layer used in forward?")
                cams.append(np.asarray(maps, dtype=np.float32))
                raws.append(_upsample(cam._facelens_raw[0], height, width))
    finally:
        for name, p in model.named_parameters():
            p.grad = saved_grads.get(name)
    out = np.nan_to_num(np.concatenate(cams, axis=0), nan=0.0, posinf=1.0, neginf=0.0)
    return CamBatch(
        cams=np.clip(out, 0.0, 1.0).astype(np.float32),
        raw=np.concatenate(raws, axis=0),
        method=method,
    )


def compute_cams(
    model: nn.Module,
    layer: nn.Module,
    images: torch.Tensor,
    targets: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    method: str = "gradcam",
    batch_size: int = 16,
    **kwargs: Any,
) -> np.ndarray:
    """Compute normalised CAMs; see :func:`compute_cam_batch` for arguments.

    Returns:
        (B, H, W) float32 in [0, 1].
    """
    return compute_cam_batch(model, layer, images, targets, method, batch_size, **kwargs).cams


def _upsample(raw: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, h, w) -> (B, H, W) bilinear, half-pixel centres (as cv2.resize in the package)."""
    tensor = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))[:, None]
    up = torch.nn.functional.interpolate(
        tensor, size=(height, width), mode="bilinear", align_corners=False
    )
    return up[:, 0].numpy().astype(np.float32)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def denormalize(
    images: torch.Tensor,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> np.ndarray:
    """Undo input normalisation for display.

    Args:
        images: (B, 3, H, W) normalised tensor.
        mean: per-channel mean used for normalisation.
        std: per-channel std used for normalisation.

    Returns:
        (B, H, W, 3) uint8 RGB images.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}.")
    arr = images.detach().cpu().float().numpy()
    arr = arr * np.asarray(std, dtype=np.float32)[None, :, None, None]
    arr = arr + np.asarray(mean, dtype=np.float32)[None, :, None, None]
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    *,
    image_weight: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a CAM heatmap onto an image (``pytorch_grad_cam``'s ``show_cam_on_image``).

    Args:
        image: (H, W, 3) uint8 RGB (or (H, W) grey).
        cam: (H, W) float map in [0, 1] (values outside are clipped).
        image_weight: weight of the image in the blend, in [0, 1].
        colormap: an OpenCV colormap id.

    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}."
        )
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != image.shape[:2]:
        raise ValueError(
            f"cam shape {cam.shape} differs from image shape {image.shape[:2]}; compute CAMs at "
            "the displayed size or resize the image first."
        )
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}.")
    cam = np.clip(np.nan_to_num(cam, nan=0.0), 0.0, 1.0)
    return show_cam_on_image(
        image.astype(np.float32) / 255.0,
        cam,
        use_rgb=True,
        colormap=colormap,
        image_weight=image_weight,
    )


def _stable_key(seed: int, row_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def probe_set(
    rows: pd.DataFrame,
    per_class: int,
    seed: int,
    *,
    label_column: str = "label",
    id_column: str = "id",
) -> pd.DataFrame:
    """Pick a fixed, seeded probe set: ``per_class`` rows of each class.

    Selection ranks rows by a hash of ``(seed, id)``, so it depends only on the set of ids (not
    on row order) and is stable when rows are added: a class's probes change only if a new id
    hashes before them. CAM grids of runs on the same data version therefore line up.

    Args:
        rows: manifest/split rows with ``id`` and ``label`` columns (not modified).
        per_class: rows per class (fewer if a class has fewer).
        seed: selection seed.
        label_column: class column; rows with an empty label are ignored, unless no row has a
            label (attributes task): then ``per_class`` rows are taken from all rows.
        id_column: unique id column.

    Returns:
        The selected rows (all columns), sorted by label then id, with a fresh index.

    Raises:
        ValueError: missing columns, duplicate ids, or ``per_class < 1``.
    """
    missing = [c for c in (id_column, label_column) if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}; columns are {list(rows.columns)}.")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}.")
    ids = rows[id_column].astype(str)
    if ids.duplicated().any():
        dupes = sorted(set(ids[ids.duplicated()]))[:5]
        raise ValueError(f"ids must be unique; duplicated: {dupes}.")
    frame = rows.assign(_pid=ids.to_numpy()).sort_values("_pid", kind="mergesort")
    frame = frame.assign(
        _key=[_stable_key(seed, i) for i in frame["_pid"]],
        _lab=pd.to_numeric(frame[label_column], errors="coerce").to_numpy(dtype=float),
    )
    labelled = frame[np.isfinite(frame["_lab"].to_numpy())]
    pool = labelled if len(labelled) else frame.assign(_lab=-1.0)
    picked = (
        pool.sort_values(["_key", "_pid"], kind="mergesort")
        .groupby("_lab", sort=True)
        .head(per_class)
        .sort_values(["_lab", "_pid"], kind="mergesort")
    )
    return picked.drop(columns=["_pid", "_key", "_lab"]).reset_index(drop=True)


def _new_figure(n_rows: int, n_cols: int, cell: float = 2.0) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(cell * n_cols, cell * n_rows + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _name(names: Sequence[str], index: int | None) -> str:
    if index is None or not 0 <= int(index) < len(names):
        return "?"
    return names[int(index)]


def cam_grid(
    images: np.ndarray,
    cams: np.ndarray,
    labels: Sequence[int | None] | None,
    preds: Sequence[int],
    probs: Sequence[float],
    names: Sequence[str],
    title: str = "",
) -> Figure:
    """One row per image: image (true label), heatmap (prediction, probability), overlay.

    Args:
        images: (B, H, W, 3) uint8 RGB.
        cams: (B, H, W) in [0, 1].
        labels: true class per image (None entries or None for unknown).
        preds: predicted class per image.
        probs: probability of the predicted class per image.
        names: class names.
        title: figure title.

    Returns:
        A matplotlib Figure (not saved, not registered with pyplot).
    """
    images = np.asarray(images)
    cams = np.asarray(cams)
    n = len(images)
    if cams.shape[:1] != (n,) or len(preds) != n or len(probs) != n:
        raise ValueError(
            f"Need one cam, prediction and probability per image: {n} images, "
            f"{len(cams)} cams, {len(preds)} preds, {len(probs)} probs."
        )
    if labels is not None and len(labels) != n:
        raise ValueError(f"Got {len(labels)} labels for {n} images.")
    fig, axes = _new_figure(max(n, 1), 3)
    for i in range(n):
        true = "?" if labels is None else _name(names, labels[i])
        axes[i, 0].imshow(images[i], interpolation="nearest")
        axes[i, 0].set_title(f"true: {true}", fontsize=8)
        axes[i, 1].imshow(cams[i], cmap="jet", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[i, 1].set_title(f"pred: {_name(names, preds[i])} ({float(probs[i]):.2f})", fontsize=8)
        axes[i, 2].imshow(overlay(images[i], cams[i]), interpolation="nearest")
        axes[i, 2].set_title("overlay", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def method_grid(
    image: np.ndarray, cams_by_method: Mapping[str, np.ndarray], title: str = ""
) -> Figure:
    """Compare methods on one image: heatmaps on top, overlays below, the image first.

    Args:
        image: (H, W, 3) uint8 RGB.
        cams_by_method: method name -> (H, W) CAM in [0, 1].
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    if not cams_by_method:
        raise ValueError("cams_by_method is empty; pass at least one method's CAM.")
    fig, axes = _new_figure(2, 1 + len(cams_by_method))
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title("image", fontsize=8)
    axes[1, 0].axis("off")
    for j, (method, cam) in enumerate(cams_by_method.items(), start=1):
        axes[0, j].imshow(cam, cmap="jet", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[0, j].set_title(method, fontsize=8)
        axes[1, j].imshow(overlay(image, cam), interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def attribute_grid(
    images: np.ndarray,
    cams_by_attribute: Mapping[str, np.ndarray],
    values: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
) -> Figure:
    """One row per image: the image, then one overlay per attribute target.

    Args:
        images: (B, H, W, 3) uint8 RGB.
        cams_by_attribute: column label (e.g. ``"trustworthy +"``) -> (B, H, W) CAMs.
        values: optional column label -> (B,) predicted scores shown in the titles.
        title: figure title.

    Returns:
        A matplotlib Figure.
    """
    images = np.asarray(images)
    n = len(images)
    if not cams_by_attribute:
        raise ValueError("cams_by_attribute is empty; pass at least one attribute's CAMs.")
    for key, cams in cams_by_attribute.items():
        if len(cams) != n:
            raise ValueError(f"{key!r}: {len(cams)} CAMs for {n} images.")
    fig, axes = _new_figure(max(n, 1), 1 + len(cams_by_attribute))
    for i in range(n):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        for j, (key, cams) in enumerate(cams_by_attribute.items(), start=1):
            axes[i, j].imshow(overlay(images[i], np.asarray(cams)[i]), interpolation="nearest")
            label = key if values is None or key not in values else f"{key} {values[key][i]:.2f}"
            axes[i, j].set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
