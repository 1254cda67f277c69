"""A CAM heatmap blended onto its image."""

from __future__ import annotations

import cv2
import numpy as np
from pytorch_grad_cam.utils.image import show_cam_on_image

__all__ = ["overlay"]


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
