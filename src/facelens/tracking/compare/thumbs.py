"""Thumbnails for the comparison report (pure): every image is shrunk until it fits its share
of the report's byte budget, so a report of many runs' figures stays small enough to mail or
log; the full-size figure stays in the run (linked, or named by its ``runs:/`` URI)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_REPORT_BYTES", "Thumb", "image_budget", "thumbnail"]

#: The report (without ``--embed-interactive``) stays under this many bytes.
MAX_REPORT_BYTES: int = 3_000_000
#: Bytes kept for the page's fixed parts (CSS, headings) and for each image's markup.
_PAGE_RESERVE = 100_000
_PER_IMAGE_MARKUP = 1_000
#: Longest side of a thumbnail before the budget shrinks it further.
THUMB_SIDE = 720
_MIN_SIDE = 48


@dataclass(frozen=True)
class Thumb:
    """An image ready to embed: its bytes, MIME type and the original's size."""

    data: bytes
    mime: str
    width: int
    height: int
    shrunk: bool


def image_budget(n_images: int, page_bytes: int = 0) -> int:
    """Raw bytes each of ``n_images`` may take so the page stays under :data:`MAX_REPORT_BYTES`
    (base64 costs 4/3); ``page_bytes`` is what the rest of the page already takes."""
    n = max(n_images, 1)
    free = MAX_REPORT_BYTES - _PAGE_RESERVE - max(page_bytes, 0) - n * _PER_IMAGE_MARKUP
    return max(free * 3 // 4 // n, 2_000)


def thumbnail(data: bytes, mime: str, budget: int) -> Thumb:
    """``data`` as is when it fits ``budget`` bytes and :data:`THUMB_SIDE`; else a JPEG
    thumbnail, halved in size until it fits (never below 48 px a side).

    Raises:
        ValueError: ``data`` is not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
            if len(data) <= budget and max(width, height) <= THUMB_SIDE:
                return Thumb(data, mime, width, height, shrunk=False)
            rgb = _on_white(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a readable image ({exc})") from exc
    side = min(THUMB_SIDE, max(width, height))
    while True:
        small = rgb.copy()
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=80 if side > 200 else 70, optimize=True)
        out = buf.getvalue()
        if len(out) <= budget or side <= _MIN_SIDE:
            return Thumb(out, "image/jpeg", width, height, shrunk=True)
        side = max(side // 2, _MIN_SIDE)


def _on_white(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "P"):
        rgba = im.convert("RGBA")
        base = Image.new("RGB", rgba.size, (255, 255, 255))
        base.paste(rgba, mask=rgba.getchannel("A"))
        return base
    return im.convert("RGB")
