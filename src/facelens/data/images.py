"""The one safe image decoder used by data preparation, the CLI and the model server.

Every image that enters facelens goes through :func:`decode_image`, which turns untrusted
bytes into a ``(H, W, 3)`` uint8 RGB array or raises :class:`ImageRejected` with a stable
``code``. The order of the checks matters for safety:

1. zero bytes -> ``empty``;
2. the format is identified from the header only (``Image.open`` is lazy) and must be one of
   :data:`ALLOWED_FORMATS` -> ``unsupported_format``;
3. ``width * height`` is compared with ``max_pixels`` *before any pixel data is decoded*, so a
   decompression bomb (a tiny file declaring 30000x30000) is refused without allocating ->
   ``too_large`` (Pillow's own ``DecompressionBombError``/``Warning`` map to ``too_large`` too;
   Pillow's global limit, about 89 Mpx for the warning, still applies on top of ``max_pixels``);
4. the smaller side must be at least ``min_size`` -> ``too_small``;
5. more than one frame (animated GIF/PNG/WebP, multi-page TIFF) -> ``multi_frame`` unless
   ``allow_multi_frame`` (then the first frame is used). MPO files (phone JPEGs carrying extra
   preview or depth frames) are treated as plain JPEG: the primary image is used;
6. pixels are decoded (a JPEG at a reduced DCT scale when ``reduce_to`` allows it); a short
   file -> ``truncated``, any other decoder failure -> ``unreadable``;
7. with ``reduce_to``, the image is box-averaged by an integer factor while its shorter side
   stays >= ``reduce_to``, before any array is made (alpha premultiplied), so a large image
   admitted by ``max_pixels`` costs little more than Pillow's decoded buffer
   (:mod:`facelens.data.pixels`);
8. the EXIF orientation is applied, with the transposes of ``ImageOps.exif_transpose``
   (unparseable EXIF is ignored, the pixels are kept);
9. every mode is converted to 8-bit RGB: palettes and transparency are expanded, alpha is
   composited **over white** (faces cut out on a transparent background then look like the
   usual studio background instead of turning black), CMYK/YCbCr via Pillow, 16-bit
   (``I;16*``) scaled by ``/257`` (not clipped); 32-bit ``I`` is kept when its values lie in
   0..255, scaled by ``/257`` when they lie in 0..65535 and otherwise stretched linearly from
   min..max; ``F`` in 0..1 is multiplied by 255, otherwise stretched from min..max.

No Pillow or NumPy exception escapes: unexpected failures become ``unreadable``. Messages name
the image (``name``) and never echo input bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from facelens.data.pixels import draft_jpeg, orient, orientation, shrink, to_rgb
from facelens.errors import DataError

__all__ = [
    "ALLOWED_FORMATS",
    "CODES",
    "IMAGE_EXTENSIONS",
    "ImageRejected",
    "decode_image",
    "read_image_file",
    "resize_square",
]

#: Stable rejection codes (also used as quarantine reasons by ``prepare``).
CODES: frozenset[str] = frozenset(
    {
        "empty",
        "unsupported_format",
        "too_large",
        "truncated",
        "unreadable",
        "too_small",
        "multi_frame",
    }
)

#: Pillow format ids accepted by :func:`decode_image`. These cover face datasets (FER2013
#: releases are PNG/JPEG, 10k US Adult Faces is JPEG) and what browsers upload; exotic
#: formats (EPS/PDF need external programs, ICO/PSD/etc. are not photos) are refused.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")

#: File extensions that readers treat as images (lower case, with the dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Pillow reports these format ids for files it opened through an allowed plugin.
_FORMAT_ALIASES: dict[str, str] = {"MPO": "JPEG"}

# Header signatures of the allowed formats, used only to word the error for a corrupt header.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


class ImageRejected(DataError):
    """An image was refused by :func:`decode_image`.

    Attributes:
        code: One of :data:`CODES`; stable, safe to branch on and to show to clients.
        message: Human-readable explanation naming the image; never contains input bytes.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            raise ValueError(f"unknown rejection code {code!r}; allowed: {sorted(CODES)}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (multiprocessing, MLflow serving workers).
        return (type(self), (self.code, self.message))


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 40_000_000,
    min_size: int = 16,
    allow_multi_frame: bool = False,
    name: str = "<bytes>",
    reduce_to: int | None = None,
) -> np.ndarray:
    """Decode untrusted image bytes into an RGB array, refusing anything unsafe or unusable.

    Args:
        data: The encoded image (file content or upload body).
        max_pixels: Largest accepted ``width * height``; checked before decoding pixels.
        min_size: Smallest accepted length of the shorter side, in pixels.
        allow_multi_frame: Accept animations / multi-page files and use the first frame.
        name: How to call the image in error messages (a file name, ``"upload"``...).
        reduce_to: Return a smaller image whose shorter side is still at least ``reduce_to``
            (JPEG decoded at 1/2, 1/4 or 1/8 scale, then an integer box average), made before
            any array: memory stays near the decoder's own buffer (``None``: full size).

    Returns:
        A new C-contiguous ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    Raises:
        ImageRejected: With ``code`` in :data:`CODES`; see the module docstring for the rules.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image expects bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageRejected("empty", f"{name}: the image is empty (0 bytes)")
    try:
        return _decode(bytes(data), max_pixels, min_size, allow_multi_frame, name, reduce_to)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(
            "too_large",
            f"{name}: refused as a decompression bomb by Pillow ({_short(exc)}); "
            f"the limit is {max_pixels:,} pixels",
        ) from None
    except MemoryError:
        raise ImageRejected(
            "too_large", f"{name}: ran out of memory while decoding; use a smaller image"
        ) from None
    except Exception as exc:  # never let a decoder error escape (see module docstring)
        raise ImageRejected(
            "unreadable", f"{name}: the image could not be decoded ({type(exc).__name__})"
        ) from None


def read_image_file(path: Path, **kw: Any) -> np.ndarray:
    """Read and decode an image file with :func:`decode_image`.

    Args:
        path: The file to read.
        **kw: Keyword arguments of :func:`decode_image` (``max_pixels``, ``min_size``,
            ``allow_multi_frame``); ``name`` defaults to the path.

    Returns:
        The ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ImageRejected: ``unreadable`` when the file is missing or cannot be read, otherwise
            as :func:`decode_image`. Messages name the file.
    """
    path = Path(path)
    kw.setdefault("name", str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageRejected("unreadable", f"{path}: file not found") from None
    except OSError as exc:
        raise ImageRejected(
            "unreadable", f"{path}: the file could not be read ({type(exc).__name__})"
        ) from None
    return decode_image(data, **kw)


def resize_square(img: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """Center-crop an image to a square, then resize it to ``size x size``.

    Downscaling averages areas (``BOX``), upscaling is bicubic; ``nearest=True`` keeps exact
    values (use it for masks of bit flags).

    Args:
        img: ``(H, W, 3)`` or ``(H, W)`` uint8 array; not modified.
        size: Output side length in pixels (>= 1).
        nearest: Use nearest-neighbour resampling.

    Returns:
        A new ``(size, size, 3)`` or ``(size, size)`` uint8 array.

    Raises:
        ValueError: When ``img`` is not a 2-D or 3-channel uint8 array or ``size < 1``.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(
            f"resize_square expects a (H, W, 3) or (H, W) uint8 array, "
            f"got shape {img.shape} dtype {img.dtype}"
        )
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(img[top : top + side, left : left + side])
    if side == size:
        return crop.copy()
    if nearest:
        resample = Image.Resampling.NEAREST
    elif side > size:
        resample = Image.Resampling.BOX
    else:
        resample = Image.Resampling.BICUBIC
    out = Image.fromarray(crop).resize((size, size), resample=resample)
    return np.asarray(out, dtype=np.uint8).copy()


# --------------------------------------------------------------------------- internals


def _decode(
    data: bytes,
    max_pixels: int,
    min_size: int,
    allow_multi_frame: bool,
    name: str,
    reduce_to: int | None,
) -> np.ndarray:
    with _open_allowed(data, name) as img:
        fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
        width, height = img.size
        if width * height > max_pixels:
            raise ImageRejected(
                "too_large",
                f"{name}: the image is {width}x{height} = {width * height:,} pixels, above the "
                f"limit of {max_pixels:,} (max_pixels); downscale it or raise max_pixels",
            )
        if min(width, height) < min_size:
            raise ImageRejected(
                "too_small",
                f"{name}: the image is {width}x{height}; the shorter side must be at least "
                f"{min_size} pixels (min_size)",
            )
        if fmt != "JPEG":  # MPO extra frames are previews/depth maps: use the primary image
            n_frames = int(getattr(img, "n_frames", 1))
            if n_frames > 1 and not allow_multi_frame:
                raise ImageRejected(
                    "multi_frame",
                    f"{name}: the {fmt} has {n_frames} frames; send a single still image "
                    f"(or allow multi-frame input to use the first frame)",
                )
            if n_frames > 1:
                img.seek(0)
        draft_jpeg(img, reduce_to)
        _load(img, name, fmt)
        upright = orientation(img)
        mode = img.mode
        try:
            return to_rgb(orient(shrink(img, reduce_to), upright))
        except ValueError:
            raise ImageRejected(
                "unreadable",
                f"{name}: the colour mode {mode!r} cannot be converted to RGB; "
                "save it as 8-bit RGB",
            ) from None


def _open_allowed(data: bytes, name: str) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError):
        pass
    allowed = ", ".join(ALLOWED_FORMATS)
    looks_like = next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        looks_like = "WEBP"
    if looks_like is not None:
        raise ImageRejected(
            "unreadable",
            f"{name}: the file starts like a {looks_like} but its header cannot be parsed "
            f"(corrupt or cut short); re-export the image",
        )
    other = _identify_any(data)
    what = f"the format {other!r} is not allowed" if other else "not a recognised image format"
    raise ImageRejected(
        "unsupported_format",
        f"{name}: {what}; allowed formats: {allowed}; convert it to PNG or JPEG",
    )


def _identify_any(data: bytes) -> str | None:
    """Name the format with every Pillow plugin (header only), for a helpful message."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            return other.format
    except Exception:  # only used to word a message
        return None


def _load(img: ImageFile.ImageFile, name: str, fmt: str) -> None:
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        text = str(exc).lower()
        truncated = isinstance(exc, (SyntaxError, EOFError)) or any(
            word in text for word in ("truncated", "premature", "end of file", "not enough data")
        )
        if truncated:
            raise ImageRejected(
                "truncated",
                f"{name}: the {fmt} data ends early or is cut (truncated file); re-export it",
            ) from None
        raise ImageRejected(
            "unreadable", f"{name}: the {fmt} pixel data is corrupt ({type(exc).__name__})"
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
