"""The explain path of the served model: one CAM per good row, blended over its display image
and sent as a base64 PNG; a chunk whose CAM fails gets ``explain_failed`` and keeps its
prediction."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from facelens.serving.requests import Options, RowError

__all__ = ["explain_rows", "png_b64"]


def png_b64(image: np.ndarray) -> str:
    """Base64 of ``image`` (RGB uint8) encoded as PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def explain_rows(
    model: torch.nn.Module,
    cam_layer: torch.nn.Module,
    to_batch: Callable[[Sequence[np.ndarray]], torch.Tensor],
    *,
    names: Sequence[str],
    batch_size: int,
    images: Sequence[np.ndarray],
    displays: Sequence[np.ndarray],
    raw: np.ndarray,
    options: Options,
    rows: Sequence[int],
) -> list[dict[str, str] | RowError]:
    """The CAM columns (or an ``explain_failed`` error) of every image, in order.

    Args:
        model: the served model; cam_layer: its layer explained.
        to_batch: images at the model's input size -> the normalised input tensor.
        names: the model's output names; batch_size: images per CAM call.
        images: the model inputs; displays: the images the CAMs are drawn over.
        raw: the model's raw outputs for ``images`` (picks the predicted target).
        options: the request's checked params; rows: the request row of each image.
    """
    from facelens.explain.cams.compute import compute_cam_batch
    from facelens.explain.cams.targets import SignedOutputTarget

    if options.target is None:  # predicted class / attribute furthest above its mean
        chosen = [(int(np.argmax(r)), 1) for r in raw]
    else:
        chosen = [options.target] * len(raw)
    results: list[dict[str, str] | RowError] = []
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        x = to_batch(images[start:stop])  # outside inference_mode: CAMs need autograd
        targets = [SignedOutputTarget(i, s) for i, s in chosen[start:stop]]
        try:
            cams = compute_cam_batch(
                model,
                cam_layer,
                x,
                targets,
                method=options.method,
                batch_size=batch_size,
                max_scorecam_images=batch_size,
            ).cams  # (B, S, S) in [0, 1]
        except Exception as exc:  # one failing chunk must not fail the request
            for row in rows[start:stop]:
                results.append(
                    RowError(
                        "explain_failed",
                        f"row {row}: the {options.method} map could not be computed "
                        f"({type(exc).__name__}); the prediction is still given",
                    )
                )
            continue
        for k in range(stop - start):
            index, sign = chosen[start + k]
            results.append(
                _cam_columns(cams[k], displays[start + k], names[index], sign, options.method)
            )
    return results


def _cam_columns(
    cam: np.ndarray, display: np.ndarray, name: str, sign: int, method: str
) -> dict[str, str]:
    """The CAM resized to the display image and blended over it."""
    from facelens.explain.cams.overlays import overlay

    side = display.shape[0]
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(cam)[None, None],
        size=(side, side),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    return {
        "cam_target": ("-" if sign < 0 else "") + name,
        "cam_method": method,
        "cam_png": png_b64(overlay(display, resized)),
    }
