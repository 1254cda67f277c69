"""The safe decoder: every rejection code, bombs refused before decoding, EXIF, mode conversion."""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from facelens.data.images import (
    ALLOWED_FORMATS,
    CODES,
    ImageRejected,
    decode_image,
    read_image_file,
    resize_square,
)

Encode = Callable[..., bytes]


def _code(data: bytes, **kw: object) -> str:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **kw)
    assert info.value.code in CODES
    return info.value.code


@pytest.mark.parametrize(
    ("fmt", "kw", "lossless"),
    [
        ("PNG", {}, True),
        ("BMP", {}, True),
        ("TIFF", {}, True),
        ("WEBP", {"lossless": True}, True),
        ("GIF", {}, False),
        ("JPEG", {"quality": 95}, False),
    ],
)
def test_allowed_formats_decode_to_rgb(
    fmt: str, kw: dict, lossless: bool, make_image: Callable, encode: Encode
) -> None:
    img = make_image(1, 30, 44)
    out = decode_image(encode(img, fmt, **kw))
    assert fmt in ALLOWED_FORMATS
    assert out.shape == (30, 44, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    if lossless:
        np.testing.assert_array_equal(out, img)
    else:
        assert np.abs(out.astype(int) - img.astype(int)).mean() < 40


def test_empty_bytes() -> None:
    assert _code(b"") == "empty"


def test_unsupported_formats_are_named(make_image: Callable, encode: Encode) -> None:
    with pytest.raises(ImageRejected) as info:
        decode_image(encode(make_image(2, 32, 32), "ICO"), name="favicon.ico")
    assert info.value.code == "unsupported_format"
    assert "'ICO'" in str(info.value) and "favicon.ico" in str(info.value)
    assert "PNG" in str(info.value)  # says what is allowed


def test_message_never_echoes_input_bytes() -> None:
    payload = b"<script>alert('SECRET-PAYLOAD')</script>" * 10
    with pytest.raises(ImageRejected) as info:
        decode_image(payload, name="upload")
    assert info.value.code == "unsupported_format"
    assert "SECRET" not in str(info.value) and "script" not in str(info.value)


def test_not_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bytes"):
        decode_image("not bytes")  # type: ignore[arg-type]


@pytest.fixture
def load_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every call to Pillow's pixel decoding entry points."""
    calls: list[str] = []
    originals = {cls: cls.load for cls in (Image.Image, ImageFile.ImageFile)}
    for cls, original in originals.items():

        def spy(self: Image.Image, _orig: Callable = original, _name: str = cls.__name__) -> object:
            calls.append(_name)
            return _orig(self)

        monkeypatch.setattr(cls, "load", spy)
    return calls


@pytest.mark.parametrize("side", [40_000, 30_000, 7_000])
def test_decompression_bomb_refused_before_decoding(
    side: int, png_bomb: Callable[[int, int], bytes], load_spy: list[str]
) -> None:
    data = png_bomb(side, side)
    assert len(data) < 200  # the whole "image" is tiny
    tracemalloc.start()
    try:
        with pytest.raises(ImageRejected) as info:
            decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "too_large"
    assert load_spy == []  # no pixel data was ever decoded
    assert peak < 5_000_000  # nowhere near side * side * 3 bytes


def test_load_spy_sees_normal_decodes(
    make_image: Callable, encode: Encode, load_spy: list[str]
) -> None:
    """Guard for the bomb test: the spy does notice decoding when it happens."""
    decode_image(encode(make_image(3, 20, 20)))
    assert load_spy


def test_max_pixels_is_configurable(make_image: Callable, encode: Encode) -> None:
    data = encode(make_image(4, 40, 40))
    assert _code(data, max_pixels=1599) == "too_large"
    assert decode_image(data, max_pixels=1600).shape == (40, 40, 3)


def test_too_small(make_image: Callable, encode: Encode) -> None:
    data = encode(make_image(5, 15, 60))
    assert _code(data) == "too_small"
    assert decode_image(data, min_size=15).shape == (15, 60, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt: str, make_image: Callable, encode: Encode) -> None:
    data = encode(make_image(6, 64, 64), fmt)
    assert _code(data[: len(data) // 2]) == "truncated"


def test_corrupt_header_is_unreadable(make_image: Callable, encode: Encode) -> None:
    data = encode(make_image(7, 32, 32))
    assert _code(data[:16] + b"\x00" * 40) == "unreadable"


def test_corrupt_pixel_data_is_unreadable(make_image: Callable, encode: Encode) -> None:
    data = bytearray(encode(make_image(8, 64, 64)))
    idat = data.index(b"IDAT") + 8
    data[idat : idat + 64] = b"\xff" * 64  # garbage inside the zlib stream, length intact
    assert _code(bytes(data)) in {"unreadable", "truncated"}


def _frames(make_image: Callable) -> list[Image.Image]:
    return [Image.fromarray(make_image(10 + i, 32, 32)) for i in range(3)]


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF", "WEBP"])
def test_multi_frame(fmt: str, make_image: Callable, encode: Encode) -> None:
    frames = _frames(make_image)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)
    assert _code(data) == "multi_frame"
    first = decode_image(data, allow_multi_frame=True)
    if fmt != "GIF":  # GIF quantises colours
        np.testing.assert_array_equal(first, np.asarray(frames[0]))


def test_exif_orientation_applied(encode: Encode) -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(pil, "PNG", exif=exif))
    assert out.shape == (40, 20, 3)
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1))
    assert tuple(out[0, 0]) == (255, 0, 0)  # the red half is now on top


def test_bad_exif_keeps_pixels(make_image: Callable, encode: Encode) -> None:
    img = make_image(11, 24, 24)
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 99  # not a valid orientation
    np.testing.assert_array_equal(decode_image(encode(pil, "PNG", exif=exif)), img)


def test_gray_modes(make_image: Callable, encode: Encode) -> None:
    gray = make_image(12, 20, 20, gray=True)
    out = decode_image(encode(gray))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)
    bilevel = Image.fromarray(gray).convert("1")
    out1 = decode_image(encode(bilevel))
    assert set(np.unique(out1)) <= {0, 255}


def test_alpha_composited_over_white(encode: Encode) -> None:
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 0  # top: fully transparent
    rgba[10:, :, 3] = 255  # bottom: opaque red
    out = decode_image(encode(rgba))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[-1, 0]) == (200, 0, 0)
    half = rgba.copy()
    half[..., 3] = 128
    mid = decode_image(encode(half))[0, 0]
    np.testing.assert_allclose(mid, [228, 127, 127], atol=1)
    la = np.zeros((20, 20, 2), dtype=np.uint8)  # LA: black, transparent
    assert tuple(decode_image(encode(Image.fromarray(la, "LA")))[0, 0]) == (255, 255, 255)


def test_palette_with_transparency(encode: Encode) -> None:
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (0, 10, 20, 20))
    out = decode_image(encode(pal, "PNG", transparency=0))
    assert tuple(out[0, 0]) == (255, 255, 255)  # transparent index -> white
    assert tuple(out[-1, 0]) == (0, 255, 0)


def test_cmyk(make_image: Callable, encode: Encode) -> None:
    cmyk = Image.fromarray(make_image(13, 20, 20)).convert("CMYK")
    expected = np.asarray(cmyk.convert("RGB"))
    np.testing.assert_array_equal(decode_image(encode(cmyk, "TIFF")), expected)
    jpeg = decode_image(encode(cmyk, "JPEG", quality=95))
    assert np.abs(jpeg.astype(int) - expected.astype(int)).mean() < 20


def test_sixteen_bit_is_scaled_not_clipped(encode: Encode) -> None:
    values = np.array([[0, 257 * 100, 65535, 40000]], dtype=np.uint16).repeat(16, axis=0)
    values = np.tile(values, (1, 4))
    for fmt in ("PNG", "TIFF"):
        out = decode_image(encode(Image.fromarray(values), fmt))
        assert out[0, :4, 0].tolist() == [0, 100, 255, round(40000 / 257)]


def test_float_and_int32_modes(encode: Encode) -> None:
    unit = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    out = decode_image(encode(Image.fromarray(unit, "F"), "TIFF"))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    wide = (unit * 1e6 - 5e5).astype(np.float32)  # outside 0..1: stretched from min..max
    out = decode_image(encode(Image.fromarray(wide, "F"), "TIFF"))
    assert out.min() == 0 and out.max() == 255
    eight = (unit * 255).astype(np.int32)
    out = decode_image(encode(Image.fromarray(eight, "I"), "TIFF"))
    np.testing.assert_array_equal(out[..., 0], eight.astype(np.uint8))


def test_unexpected_errors_become_unreadable(
    monkeypatch: pytest.MonkeyPatch, make_image: Callable, encode: Encode
) -> None:
    data = encode(make_image(14, 20, 20), "TIFF")

    def boom(self: Image.Image, *a: object, **k: object) -> Image.Image:
        raise KeyError("internal")

    monkeypatch.setattr(Image.Image, "convert", boom)
    monkeypatch.setattr(Image.Image, "mode", property(lambda self: "CMYK"), raising=False)
    assert _code(data) == "unreadable"


def test_rejection_object() -> None:
    err = ImageRejected("too_small", "x.png: too small")
    assert str(err) == "x.png: too small" and err.code == "too_small"
    again = pickle.loads(pickle.dumps(err))
    assert again.code == "too_small" and str(again) == "x.png: too small"
    with pytest.raises(ValueError, match="unknown rejection code"):
        ImageRejected("nope", "msg")


def test_read_image_file(tmp_path: Path, make_image: Callable, encode: Encode) -> None:
    path = tmp_path / "face.png"
    img = make_image(15, 24, 24)
    path.write_bytes(encode(img))
    np.testing.assert_array_equal(read_image_file(path), img)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageRejected, match=r"empty\.png") as info:
        read_image_file(tmp_path / "empty.png")
    assert info.value.code == "empty"
    with pytest.raises(ImageRejected, match=r"gone\.png") as info:
        read_image_file(tmp_path / "gone.png")
    assert info.value.code == "unreadable"


def test_resize_square_center_crops() -> None:
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, :10] = (255, 0, 0)
    img[:, 10:30] = (0, 255, 0)  # the central 20x20 square
    img[:, 30:] = (0, 0, 255)
    before = img.copy()
    out = resize_square(img, 10)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert (out == np.array([0, 255, 0], dtype=np.uint8)).all()
    np.testing.assert_array_equal(img, before)  # input untouched
    tall = np.zeros((40, 20), dtype=np.uint8)
    tall[10:30] = 7
    assert (resize_square(tall, 64, nearest=True) == 7).all()


def test_resize_square_up_and_down(make_image: Callable) -> None:
    img = make_image(16, 32, 32)
    assert resize_square(img, 64).shape == (64, 64, 3)
    same = resize_square(img, 32)
    np.testing.assert_array_equal(same, img)
    assert same is not img
    small = resize_square(img, 4)  # area averaging: each pixel is a block mean
    np.testing.assert_allclose(small[0, 0], img[:8, :8].reshape(-1, 3).mean(axis=0), atol=1)
    with pytest.raises(ValueError, match="uint8"):
        resize_square(img.astype(np.float32), 8)


# --------------------------------------------------------------------------- reduce_to


def _blocks(seed: int, h: int, w: int, channels: int = 3, cell: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // cell, w // cell, channels), dtype=np.uint8)
    mode = {3: "RGB", 4: "RGBA"}[channels]
    big = Image.fromarray(small, mode).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(big)


def test_reduce_to_box_averages_by_an_integer_factor(encode: Encode) -> None:
    img = _blocks(1, 96, 160)
    out = decode_image(encode(img, "PNG"), reduce_to=20)
    assert out.shape == (24, 40, 3)  # factor 96 // 20 = 4; the shorter side stays >= 20
    expected = np.asarray(Image.fromarray(img).reduce(4))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(decode_image(encode(img, "PNG"), reduce_to=96), img)


def test_reduce_to_keeps_exif_orientation(encode: Encode) -> None:
    upright = _blocks(2, 64, 96)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[0x0112] = 6
    out = decode_image(encode(stored, "PNG", exif=exif), reduce_to=16)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(upright).reduce(4)))


def test_reduce_to_composites_transparent_pixels_over_white(encode: Encode) -> None:
    rgba = _blocks(3, 160, 160, channels=4).copy()
    rgba[..., 3] = 0  # hidden colours under full transparency must not bleed in
    rgba[:80, :, 3] = 255
    out = decode_image(encode(rgba, "PNG"), reduce_to=20)
    assert out.shape == (20, 20, 3)  # factor 8
    assert (out[10:] == 255).all()
    np.testing.assert_array_equal(out[:10], np.asarray(Image.fromarray(rgba[:80, :, :3]).reduce(8)))


def test_reduce_to_decodes_a_large_jpeg_at_a_reduced_scale(encode: Encode) -> None:
    data = encode(_blocks(4, 512, 768, cell=64), "JPEG", quality=90)
    out = decode_image(data, reduce_to=64)
    assert out.shape == (64, 96, 3)  # DCT scale 1/8, no further box average needed
    full = decode_image(data)
    reference = np.asarray(Image.fromarray(full).reduce(8)).astype(int)
    assert np.abs(out.astype(int) - reference).mean() < 4
    assert not np.array_equal(out, reference)  # the DCT decoded 1/8 scale, not a box of full


def test_reduce_to_handles_16_bit_and_palette_images(encode: Encode) -> None:
    gray16 = np.random.default_rng(5).integers(0, 65536, (64, 64), dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(gray16), "PNG"), reduce_to=16)
    assert out.shape == (16, 16, 3)
    full = decode_image(encode(Image.fromarray(gray16), "PNG"))
    reference = np.asarray(Image.fromarray(full).reduce(4)).astype(int)
    assert np.abs(out.astype(int) - reference).max() <= 1
    pal = Image.fromarray(_blocks(6, 64, 64)).quantize(colors=8)
    out = decode_image(encode(pal, "PNG"), reduce_to=16)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB").reduce(4)))
