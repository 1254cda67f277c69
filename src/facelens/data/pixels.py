"""From a decoded Pillow image to the ``(H, W, 3)`` uint8 RGB array of
:func:`facelens.data.images.decode_image`: shrink first, then orient, then convert the mode.

Memory is bounded by working on the smallest image that still serves the caller: a JPEG is
decoded at a reduced DCT scale (:func:`draft_jpeg`) and any other image is box-averaged by an
integer factor (:func:`shrink`) while its shorter side stays at least ``reduce_to``, before any
NumPy array is made. Transparent images are averaged premultiplied (``RGBa``), so transparent
pixels do not bleed their hidden colour into the edges. The conversions themselves use 8/16/32-bit
integers (the alpha blend over white is exact in ``uint16``); only 32-bit ``I`` images outside
0..65535 and ``F`` images are stretched in float64.
"""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image

__all__ = ["draft_jpeg", "orient", "orientation", "shrink", "to_rgb"]

_HIGH_BIT_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
#: Pixels per band when a transparent image is shrunk (see :func:`shrink`).
_BAND_PIXELS = 1 << 20

#: EXIF orientation -> the transpose that makes the image upright (ImageOps.exif_transpose's).
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def has_alpha(img: Image.Image) -> bool:
    """Whether the image carries transparency (an alpha band or a transparent colour)."""
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def draft_jpeg(img: Image.Image, reduce_to: int | None) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale whose shorter side stays >= ``reduce_to``
    (call before the pixels are loaded; other formats are left alone)."""
    if reduce_to is None or img.format not in ("JPEG", "MPO"):
        return
    width, height = img.size
    short = min(width, height)
    if short < 2 * reduce_to:
        return
    wanted = (max(1, -(-width * reduce_to // short)), max(1, -(-height * reduce_to // short)))
    img.draft(None, wanted)


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of a loaded image; 1 when absent or unparseable."""
    try:
        value = int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # malformed EXIF: keep the pixels as stored rather than refuse the photo
        return 1
    return value if value in _UPRIGHT else 1


def orient(img: Image.Image, value: int) -> Image.Image:
    """``img`` turned upright for the EXIF orientation ``value`` (see :func:`orientation`)."""
    method = _UPRIGHT.get(value)
    return img if method is None else img.transpose(method)


def shrink(img: Image.Image, reduce_to: int | None) -> Image.Image:
    """Box-average ``img`` by the largest integer factor that keeps its shorter side >=
    ``reduce_to`` (``img`` itself when that factor is 1 or ``reduce_to`` is None)."""
    if reduce_to is None:
        return img
    factor = min(img.size) // max(1, reduce_to)
    if factor < 2:
        return img
    if has_alpha(img):
        return _reduce_premultiplied(img, factor)
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGB")
    if img.mode in _HIGH_BIT_MODES:  # Image.reduce does not take 16-bit modes
        size = (img.size[0] // factor, img.size[1] // factor)
        return img.resize(size, Image.Resampling.BOX)
    return img.reduce(factor)


def _reduce_premultiplied(img: Image.Image, factor: int) -> Image.Image:
    """``Image.reduce`` of the premultiplied (``RGBa``) image, band by band so that only
    about :data:`_BAND_PIXELS` pixels are converted at a time; returned as ``RGBA``."""
    width, height = img.size
    rows = factor * max(1, _BAND_PIXELS // (width * factor))
    out = Image.new("RGBA", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        rgba = band if band.mode == "RGBA" else band.convert("RGBA")
        out.paste(rgba.convert("RGBa").reduce(factor).convert("RGBA"), (0, top // factor))
    return out


def to_rgb(img: Image.Image) -> np.ndarray:
    """A new C-contiguous ``(H, W, 3)`` uint8 RGB array of ``img`` (rules: see
    :mod:`facelens.data.images`).

    Raises:
        ValueError: Pillow cannot convert the mode, or the result is not ``(H, W, 3)``.
    """
    mode = img.mode
    if mode in _HIGH_BIT_MODES:
        return _gray_to_rgb(_scale_16bit(np.asarray(img)))
    if mode == "I":
        values = np.asarray(img)
        if values.size and values.min() >= 0 and values.max() <= 255:
            return _gray_to_rgb(values)  # already 8-bit range (e.g. a 32-bit TIFF of 0..255)
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return _gray_to_rgb(_scale_16bit(values))
        return _gray_to_rgb(_stretch(values.astype(np.float64)))
    if mode == "F":
        values = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            return _gray_to_rgb(np.rint(values * 255.0))
        return _gray_to_rgb(_stretch(values))
    if has_alpha(img):
        return _over_white(np.asarray(img if mode == "RGBA" else img.convert("RGBA")))
    if mode == "1":
        img = img.convert("L")
    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"decoding gave shape {arr.shape}, expected (H, W, 3)")
    return np.ascontiguousarray(arr).copy()


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite ``(H, W, 4)`` uint8 RGBA over white: ``rint(rgb * a / 255 + 255 - a)``.

    ``rgb * a + 255 * (255 - a)`` is at most 65025, so the sum and its rounding (never an exact
    half) are exact in uint16: the result equals the float64 formula, at a quarter the memory.
    """
    alpha = rgba[..., 3:4].astype(np.uint16)
    out = rgba[..., :3].astype(np.uint16)
    out *= alpha
    out += 255 * (255 - alpha) + 127
    out //= 255
    return np.ascontiguousarray(out.astype(np.uint8))


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 as ``rint(v / 257)``, in integers (``v / 257`` is never an exact
    half, so ``(v + 128) // 257`` rounds the same)."""
    return (values.astype(np.uint32) + 128) // 257


def _stretch(values: np.ndarray) -> np.ndarray:
    """Map values linearly from their min..max to 0..255 (a constant image becomes 0)."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros_like(values)
    return np.rint((values - lo) * (255.0 / (hi - lo)))


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    g = np.clip(gray, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
