"""Thumbnails of the comparison report: small images pass unchanged, large ones shrink into
their byte budget."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facelens.tracking.compare.thumbs import MAX_REPORT_BYTES, THUMB_SIDE, image_budget, thumbnail


def _png(w: int, h: int, *, noise: bool, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    channels = len(mode)
    px = rng.integers(0, 256, (h, w, channels), dtype=np.uint8) if noise else None
    im = Image.fromarray(px, mode) if px is not None else Image.new(mode, (w, h))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_small_image_within_budget_is_kept_byte_for_byte() -> None:
    data = _png(40, 30, noise=True)
    th = thumbnail(data, "image/png", budget=len(data))
    assert (th.data, th.mime, th.width, th.height, th.shrunk) == (data, "image/png", 40, 30, False)


@pytest.mark.parametrize("budget", [200_000, 20_000, 4_000])
def test_large_image_shrinks_into_its_budget(budget: int) -> None:
    data = _png(1600, 1000, noise=True, mode="RGBA")
    assert len(data) > 10 * budget
    th = thumbnail(data, "image/png", budget)
    assert th.shrunk and th.mime == "image/jpeg" and (th.width, th.height) == (1600, 1000)
    assert len(th.data) <= budget
    with Image.open(io.BytesIO(th.data)) as im:
        assert max(im.size) <= THUMB_SIDE and im.size[0] > im.size[1]  # aspect kept


def test_oversized_side_is_shrunk_even_when_bytes_fit() -> None:
    data = _png(2000, 500, noise=False)
    th = thumbnail(data, "image/png", budget=10 * len(data))
    with Image.open(io.BytesIO(th.data)) as im:
        assert th.shrunk and im.size == (THUMB_SIDE, THUMB_SIDE // 4)


def test_unreadable_bytes_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        thumbnail(b"not a png", "image/png", budget=1000)


def test_budget_shares_what_the_page_leaves() -> None:
    one, many = image_budget(1), image_budget(100)
    assert many < one and 100 * many * 4 / 3 < MAX_REPORT_BYTES
    assert image_budget(100, page_bytes=1_000_000) < many
    assert image_budget(10**6) == 2_000  # floor: a 48 px JPEG
