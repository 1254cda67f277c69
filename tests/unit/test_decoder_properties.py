"""Property-based tests (hypothesis) of the safe decoder, ``facelens.data.images.decode_image``.

On any bytes (random, or a valid image of each allowed format with bytes overwritten, the
size fields rewritten or the tail cut off) the decoder returns a ``(H, W, 3)`` uint8 array
within its limits or raises :class:`ImageRejected` with a known code and a one-line message;
nothing else escapes. Its traced memory peak (``tracemalloc``: Python objects and NumPy arrays;
Pillow's own C buffers are not traced) stays under :data:`PEAK_MULTIPLE` times the largest
accepted image's uint8 size (``max_pixels * 3``) plus a copy of the input.

Example counts are bounded and there is no deadline, so the unit tier stays fast and steady.
"""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facelens.data.images import CODES, ImageRejected, decode_image

#: Largest accepted image in these tests: 64 x 64 pixels (small, so the bound means something).
MAX_PIXELS = 64 * 64
#: The largest accepted image's uint8 RGB size.
LARGEST_UINT8 = MAX_PIXELS * 3
#: The stated bound: traced peak <= PEAK_MULTIPLE * LARGEST_UINT8 + 2 * len(data) + SLACK.
#: Measured: 37.6x for a 64x64 RGBA / LA PNG or WEBP (the alpha composite over white runs on
#: float64 copies of the image, about 112 bytes per pixel), 8.5x for 16-bit PNG, 5.5x for
#: CMYK JPEG, under 10x for every random or mutated input. Lower it when the composite works
#: in smaller types.
PEAK_MULTIPLE = 40
#: Fixed overhead of the Python objects of one decode (the parsed header, exception objects).
SLACK = 256 * 1024

# Pillow warns (UserWarning) about the odd TIFF tags of mutated files; the decoder goes on.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples every run: a CI failure reproduces locally
    database=None,  # nothing written to .hypothesis/
    suppress_health_check=[HealthCheck.too_slow],
)


def _encoded(mode: str, size: tuple[int, int], fmt: str, **kw: object) -> bytes:
    rng = np.random.default_rng(0)
    bands = len(Image.new(mode, (1, 1)).getbands())
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        shape = (size[1], size[0], bands) if bands > 1 else size[::-1]
        img = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8).squeeze()).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("P", (24, 24), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


#: Valid images of every allowed format and the modes the decoder converts.
SEEDS: tuple[bytes, ...] = (
    _encoded("RGB", (40, 32), "PNG"),
    _encoded("RGBA", (64, 64), "PNG"),  # the largest accepted image, on the costliest path
    _encoded("I;16", (32, 20), "PNG"),
    _encoded("P", (30, 30), "PNG"),
    _encoded("LA", (24, 24), "PNG"),
    _encoded("RGB", (48, 40), "JPEG", quality=80),
    _encoded("CMYK", (24, 24), "JPEG"),
    _encoded("L", (32, 32), "BMP"),
    _encoded("RGB", (32, 24), "TIFF"),
    _encoded("RGBA", (24, 24), "WEBP"),
    _encoded("RGB", (64, 64), "GIF"),
    _animated_gif(),
)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid seed image with some bytes overwritten (the header more often), maybe cut."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        limit = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 64)
        data[draw(st.integers(0, limit))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


ANY_BYTES = st.one_of(st.binary(max_size=2048), mutated_images())


def _check(result_or_error: np.ndarray | ImageRejected) -> None:
    if isinstance(result_or_error, ImageRejected):
        assert result_or_error.code in CODES
        assert "\n" not in str(result_or_error)
        return
    out = result_or_error
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] * out.shape[1] <= MAX_PIXELS
    assert min(out.shape[:2]) >= 16


def _decode(data: bytes) -> np.ndarray | ImageRejected:
    try:
        return decode_image(data, max_pixels=MAX_PIXELS, name="upload")
    except ImageRejected as exc:  # anything else fails the test
        return exc


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_the_seeds_are_accepted(seed: int) -> None:
    """The mutations start from images the decoder accepts (else they test little)."""
    out = decode_image(SEEDS[seed], max_pixels=MAX_PIXELS, allow_multi_frame=True)
    assert out.dtype == np.uint8 and out.shape[2] == 3


@PROPERTY
@given(data=ANY_BYTES)
def test_any_bytes_give_an_image_or_image_rejected(data: bytes) -> None:
    _check(_decode(data))


@PROPERTY
@given(data=ANY_BYTES)
def test_traced_memory_peak_is_bounded(data: bytes) -> None:
    _decode(data)  # warm: plugin imports and caches are not the decode's memory
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= PEAK_MULTIPLE * LARGEST_UINT8 + 2 * len(data) + SLACK, peak
