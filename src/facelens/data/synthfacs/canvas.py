"""The SynthFACS drawing canvas: a supersampled colour image and part-label map that share one
face-frame -> pixel transform (rotation, scale, shift).

Everything is drawn as anti-aliased polygons (OpenCV, 1/16 px fixed point). Every part is
rasterised twice with the same points: once in colour, once into the part-label map, so masks
are aligned with the drawn pixels by construction.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facelens.data.synthfacs.colours import Colour
from facelens.data.synthfacs.nuisance import Nuisance

__all__ = ["Canvas"]

_FACE_TO_IMAGE_SCALE = 1.08  # face-frame unit -> image-frame unit before the pose jitter
_FIXED_POINT_BITS = 4  # fixed-point bits of polygon vertices (1/16 px)
_MIN_VISIBLE_ALPHA = 0.004  # blends fainter than this are skipped


class Canvas:
    """A supersampled colour canvas and part-label map sharing one face->pixel transform."""

    def __init__(self, size: int, nuisance: Nuisance) -> None:
        self.size = size
        self.img = np.empty((size, size, 3), np.uint8)
        self.img[:] = np.rint(np.asarray(nuisance.background)).astype(np.uint8)
        self.label = np.zeros((size, size), np.uint8)
        half = size / 2.0
        theta = math.radians(nuisance.rotation)
        ca, sa = math.cos(theta), math.sin(theta)
        k = nuisance.scale * _FACE_TO_IMAGE_SCALE * half
        # face frame -> pixels: p = half * (scale * R q + shift) + (size - 1) / 2
        self.face_a = np.array([[k * ca, -k * sa], [k * sa, k * ca]])
        off = (size - 1) / 2.0
        self.face_b = np.array([half * nuisance.shift[0] + off, half * nuisance.shift[1] + off])
        self.img_a = np.array([[half, 0.0], [0.0, half]])
        self.img_b = np.array([off, off])

    def _px(self, pts: np.ndarray, frame: str) -> np.ndarray:
        if frame == "face":
            return pts @ self.face_a.T + self.face_b
        return pts @ self.img_a.T + self.img_b

    @staticmethod
    def _fixed(px: np.ndarray) -> np.ndarray:
        return np.rint(px * (1 << _FIXED_POINT_BITS)).astype(np.int32).reshape(-1, 1, 2)

    def fill(
        self,
        polys: list[np.ndarray],
        colour: Colour,
        label: int | None = None,
        frame: str = "face",
    ) -> None:
        """Fill polygons (even-odd over the list) opaquely; optionally stamp ``label``."""
        if not polys:
            return
        fixed = [self._fixed(self._px(p, frame)) for p in polys]
        cv2.fillPoly(self.img, fixed, colour, lineType=cv2.LINE_AA, shift=_FIXED_POINT_BITS)
        if label is not None:
            cv2.fillPoly(self.label, fixed, label, lineType=cv2.LINE_8, shift=_FIXED_POINT_BITS)

    def blend(
        self, polys: list[np.ndarray], colour: Colour, alpha: float, frame: str = "face"
    ) -> None:
        """Alpha-blend filled polygons over the canvas (labels unchanged)."""
        if alpha <= _MIN_VISIBLE_ALPHA or not polys:
            return
        px = [self._px(p, frame) for p in polys]
        allp = np.concatenate(px)
        x0 = max(math.floor(allp[:, 0].min()) - 1, 0)
        y0 = max(math.floor(allp[:, 1].min()) - 1, 0)
        x1 = min(math.ceil(allp[:, 0].max()) + 2, self.size)
        y1 = min(math.ceil(allp[:, 1].max()) + 2, self.size)
        if x1 <= x0 or y1 <= y0:
            return
        cover = np.zeros((y1 - y0, x1 - x0), np.uint8)
        origin = np.array([x0, y0], dtype=np.float64)
        fixed = [self._fixed(p - origin) for p in px]
        cv2.fillPoly(cover, fixed, 255, lineType=cv2.LINE_AA, shift=_FIXED_POINT_BITS)
        crop = self.img[y0:y1, x0:x1].astype(np.float32)
        w = cover.astype(np.float32)[..., None] * np.float32(alpha / 255.0)
        crop += (np.asarray(colour, np.float32) - crop) * w
        self.img[y0:y1, x0:x1] = np.rint(crop).astype(np.uint8)
