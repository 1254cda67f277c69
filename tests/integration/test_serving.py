"""The served pyfunc model: predictions, Grad-CAM overlays, hostile rows, odd image modes."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.images import CODES, decode_image
from facelens.models.build import build_model
from facelens.models.export import export_model
from facelens.models.meta import ModelMeta
from facelens.models.params import ModelParams
from facelens.serving.pyfunc import FaceLensModel
from facelens.serving.refusals import RequestRefused
from facelens.serving.requests import decode_row
from facelens.serving.schema import CAM_COLUMNS, ROW_CODES, model_signature, output_columns

ATTRS = ATTRIBUTES[:4]


def _export(root: Path, task: str) -> tuple[Path, ModelMeta]:
    names = EXPRESSIONS if task == "expression" else ATTRS
    model, source = build_model(
        ModelParams(arch="vgg16", weights="none", input_size=32),
        num_outputs=len(names),
        dropout=0.0,
        seed=0,
    )
    stats = None
    if task == "attributes":
        stats = ((5.0, 4.0, 6.0, 3.0), (1.0, 2.0, 0.5, 1.5))
    meta = ModelMeta.for_model(
        model,
        task=task,
        output_names=names,
        input_size=32,
        weights_source=source,
        target_stats=stats,
    )
    export_model(model, meta, root / task)
    return root / task, meta


def _served(model_dir: Path, **config: object) -> FaceLensModel:
    served = FaceLensModel()
    served.load_context(mlflow.pyfunc.PythonModelContext({"model_dir": str(model_dir)}, config))
    return served


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ModelMeta]]:
    root = tmp_path_factory.mktemp("exported")
    return {task: _export(root, task) for task in ("expression", "attributes")}


@pytest.fixture(scope="module")
def expr(exported) -> FaceLensModel:
    return _served(exported["expression"][0])


@pytest.fixture(scope="module")
def attrs(exported) -> FaceLensModel:
    return _served(exported["attributes"][0])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _enc(img: np.ndarray | Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _face(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(blocks).resize((w, h), Image.Resampling.BILINEAR))


def _frame(*values: object) -> pd.DataFrame:
    return pd.DataFrame({"image": list(values)})


def _predict(model: FaceLensModel, frame: pd.DataFrame, **params: object) -> pd.DataFrame:
    return model.predict(None, frame, params=params or None)


def _probs(out: pd.DataFrame, row: int = 0) -> np.ndarray:
    return out.loc[row, [f"p_{n}" for n in EXPRESSIONS]].astype(float).to_numpy()


def _cam(out: pd.DataFrame, row: int = 0) -> np.ndarray:
    data = base64.b64decode(out.loc[row, "cam_png"])
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------------------------------------ predictions


def test_expression_rows_have_probabilities_and_label(expr, exported):
    meta = exported["expression"][1]
    out = _predict(expr, _frame(_b64(_enc(_face(1))), _b64(_enc(_face(2), "JPEG"))))
    assert list(out.columns) == output_columns(meta)
    assert not set(CAM_COLUMNS) & set(out.columns)
    for row in range(2):
        probs = _probs(out, row)
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
        assert out.loc[row, "label"] == EXPRESSIONS[int(np.argmax(probs))]
        assert out.loc[row, "error"] == out.loc[row, "message"] == ""
    assert not np.allclose(_probs(out, 0), _probs(out, 1), atol=1e-7)


def test_attribute_rows_are_destandardised(attrs, exported):
    meta = exported["attributes"][1]
    model, _ = build_model(
        ModelParams(arch="vgg16", weights="none", input_size=32), num_outputs=4, dropout=0.0, seed=0
    )
    model.eval()
    img = _face(3, 32, 32)
    x = (torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        raw = model(x)[0].double().numpy()
    out = _predict(attrs, _frame(_b64(_enc(img))))
    assert list(out.columns) == output_columns(meta)
    expected = raw * np.array(meta.target_std) + np.array(meta.target_mean)
    np.testing.assert_allclose(out.loc[0, list(ATTRS)].astype(float), expected, rtol=1e-4)


def test_signature_declares_params_and_optional_cam_columns(exported):
    meta = exported["expression"][1]
    sig = model_signature(meta)
    assert {p.name: p.default for p in sig.params.params} == {
        "explain": False,
        "target": "",
        "method": "gradcam",
    }
    optional = {c.name for c in sig.outputs.inputs if not c.required}
    assert optional == set(CAM_COLUMNS)
    assert sig.inputs.input_names() == ["image"]


# ------------------------------------------------------------------------------ explanations


def test_explain_returns_overlay_for_predicted_class(expr):
    img = _face(4, 40, 52)
    out = _predict(expr, _frame(_b64(_enc(img))), explain=True)
    assert list(out.columns)[-5:] == [*CAM_COLUMNS, "error", "message"]
    assert out.loc[0, "error"] == ""
    assert out.loc[0, "cam_target"] == out.loc[0, "label"]
    assert out.loc[0, "cam_method"] == "gradcam"
    cam = _cam(out)
    assert cam.shape == (40, 40, 3)  # centre crop of the 40x52 input, shown at its own size
    plain = np.asarray(Image.fromarray(img[:, 6:46]))
    assert np.abs(cam.astype(int) - plain.astype(int)).mean() > 5  # a heatmap was blended in
    # The prediction is the same with and without explain.
    alone = _predict(expr, _frame(_b64(_enc(img))))
    np.testing.assert_allclose(_probs(out), _probs(alone), rtol=1e-6)


def test_explain_named_and_negative_targets(expr):
    frame = _frame(_b64(_enc(_face(5))))
    pos = _predict(expr, frame, explain=True, target="Happy")
    neg = _predict(expr, frame, explain=True, target="-happy")
    other = _predict(expr, frame, explain=True, target="surprise")
    assert pos.loc[0, "cam_target"] == "happy"
    assert neg.loc[0, "cam_target"] == "-happy"
    assert other.loc[0, "cam_target"] == "surprise"
    assert not np.array_equal(_cam(pos), _cam(neg))
    assert not np.array_equal(_cam(pos), _cam(other))


def test_explain_leaves_no_hooks_and_no_grads(expr):
    _predict(expr, _frame(_b64(_enc(_face(6)))), explain=True)
    hooked = [
        m
        for m in expr._model.modules()
        if m._forward_hooks or m._backward_hooks or m._forward_pre_hooks
    ]
    assert hooked == []
    assert all(p.grad is None for p in expr._model.parameters())
    assert not expr._model.training


@pytest.mark.parametrize(
    "method", ["gradcam++", "guidedgradcam", "hirescam", "layercam", "xgradcam", "eigencam"]
)
def test_explain_methods_are_selectable(expr, method):
    out = _predict(expr, _frame(_b64(_enc(_face(7)))), explain=True, method=method)
    assert out.loc[0, "error"] == "", out.loc[0, "message"]
    assert out.loc[0, "cam_method"] == method
    assert _cam(out).shape == (40, 40, 3)


def test_attribute_explain_default_and_named_target(attrs):
    frame = _frame(_b64(_enc(_face(8, 32, 32))))
    plain = _predict(attrs, frame)
    out = _predict(attrs, frame, explain=True)
    z = (plain.loc[0, list(ATTRS)].astype(float).to_numpy() - [5.0, 4.0, 6.0, 3.0]) / [
        1.0,
        2.0,
        0.5,
        1.5,
    ]
    assert out.loc[0, "cam_target"] == ATTRS[int(np.argmax(z))]
    named = _predict(attrs, frame, explain=True, target=f"-{ATTRS[2]}")
    assert named.loc[0, "cam_target"] == f"-{ATTRS[2]}"
    assert named.loc[0, "error"] == ""


def _refusal(model: FaceLensModel, frame: pd.DataFrame, **params: object) -> RequestRefused:
    with pytest.raises(RequestRefused) as info:
        _predict(model, frame, **params)
    refusal = info.value
    assert refusal.get_http_status_code() == 400
    body = json.loads(refusal.serialize_as_json())
    assert body == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "error": refusal.code,
        "message": str(refusal),
    }
    assert "\n" not in str(refusal) and "Traceback" not in str(refusal)
    for value in frame["image"]:
        assert str(value)[:12] not in str(refusal)  # the input is never echoed back
    return refusal


@pytest.mark.parametrize("explain", [False, True])
def test_bad_params_refuse_the_request_naming_the_param_and_what_is_allowed(expr, attrs, explain):
    frame = _frame(_b64(_enc(_face(9))), _b64(_enc(_face(10))))
    refusal = _refusal(expr, frame, explain=explain, method="bogus")
    assert refusal.code == "unknown_method" and "'method'" in str(refusal)
    assert "gradcam++" in str(refusal) and "scorecam" in str(refusal)
    assert "bogus" not in str(refusal)
    refusal = _refusal(expr, frame, explain=explain, target="smug")
    assert refusal.code == "unknown_target" and "'target'" in str(refusal)
    assert all(name in str(refusal) for name in EXPRESSIONS)
    assert "smug" not in str(refusal)
    refusal = _refusal(attrs, frame, explain=explain, target="happy")  # a class, not an attribute
    assert refusal.code == "unknown_target" and ATTRS[0] in str(refusal)
    refusal = _refusal(expr, frame, explain=explain, colour="red", size=3)
    assert refusal.code == "unknown_param"
    assert "'colour'" in str(refusal) and "'size'" in str(refusal)
    assert "explain, target, method" in str(refusal)
    refusal = _refusal(expr, frame, explain="maybe")
    assert refusal.code == "invalid_param" and "'explain'" in str(refusal)
    # Valid params are still answered, per row.
    out = _predict(expr, frame, explain=explain, method="gradcam++", target="-sad")
    assert list(out["error"]) == ["", ""]


def test_refusals_are_facelens_errors_and_pickle():
    from facelens.errors import ConfigError

    refusal = RequestRefused("unknown_param", "unknown param 'x'; allowed params: explain")
    assert isinstance(refusal, ConfigError)
    copy = pickle.loads(pickle.dumps(refusal))
    assert (copy.code, str(copy)) == ("unknown_param", str(refusal))
    refusal.message = "Failed to predict data 'SECRET'. Error: ..."  # what the server does
    assert "SECRET" not in refusal.serialize_as_json()
    with pytest.raises(ValueError, match="unknown refusal code"):
        RequestRefused("nope", "x")


def test_explain_failure_keeps_the_prediction(expr, monkeypatch):
    import facelens.explain.cams.compute as cams
    from facelens.errors import CamError

    def broken(*args, **kwargs):
        raise CamError("boom")

    monkeypatch.setattr(cams, "compute_cam_batch", broken)
    out = _predict(expr, _frame(_b64(_enc(_face(11)))), explain=True)
    assert out.loc[0, "error"] == "explain_failed"
    assert "CamError" in out.loc[0, "message"] and "boom" not in out.loc[0, "message"]
    assert out.loc[0, "label"] in EXPRESSIONS and out.loc[0, "cam_png"] == ""
    np.testing.assert_allclose(_probs(out).sum(), 1.0, rtol=1e-6)


def test_concurrent_requests_do_not_mix_hooks(expr):
    frames = [_frame(_b64(_enc(_face(20 + i)))) for i in range(4)]
    expected = [_cam(_predict(expr, f, explain=True)) for f in frames]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = _cam(_predict(expr, frames[i], explain=True))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(got[i], expected[i])


# ------------------------------------------------------------------------------ hostile rows


def _hostile_rows(png_bomb: Callable[[int, int], bytes]) -> list[tuple[object, str]]:
    good = _enc(_face(30))
    frames = [Image.fromarray(_face(31 + i)) for i in range(3)]
    gif = _enc(frames[0], "GIF", save_all=True, append_images=frames[1:])
    ico = _enc(Image.fromarray(_face(34, 32, 32)), "ICO")
    return [
        ("this is not base64!", "invalid_base64"),
        ("QUJD$$==", "invalid_base64"),
        (None, "missing_image"),
        ("", "missing_image"),
        (12345, "invalid_base64"),
        (_b64(b"hello, I am a text file and not an image"), "unsupported_format"),
        (_b64(ico), "unsupported_format"),
        (_b64(good[: len(good) // 2]), "truncated"),
        (_b64(good[:20]), "unreadable"),
        (_b64(png_bomb(30_000, 30_000)), "too_large"),
        (_b64(_enc(_face(35, 8, 8))), "too_small"),
        (_b64(gif), "multi_frame"),
        (_b64(b""), "missing_image"),
    ]


def test_every_hostile_row_gets_a_stable_code_and_good_rows_are_answered(expr, png_bomb):
    hostile = _hostile_rows(png_bomb)
    good = _b64(_enc(_face(40)))
    values = [good, *(v for v, _ in hostile), good]
    out = _predict(expr, _frame(*values), explain=True)
    assert len(out) == len(values)
    expected = ["", *(code for _, code in hostile), ""]
    assert list(out["error"]) == expected
    assert set(out["error"]) - {""} <= ROW_CODES
    assert {"truncated", "too_large", "multi_frame"} <= CODES  # decoder codes pass through
    for row in range(1, len(values) - 1):
        message = out.loc[row, "message"]
        assert message.startswith(f"row {row}: ") or out.loc[row, "error"] == "missing_image"
        assert "Traceback" not in message and 'File "' not in message
        value = values[row]
        if isinstance(value, str) and len(value) > 4:
            assert value[:12] not in message  # the input is never echoed back
        assert out.loc[row, "label"] == "" and out.loc[row, "p_sad"] is None
        assert out.loc[row, "cam_png"] == ""
    alone = _predict(expr, _frame(good), explain=True)
    for row in (0, len(values) - 1):
        np.testing.assert_allclose(_probs(out, row), _probs(alone), rtol=1e-6)
        np.testing.assert_array_equal(_cam(out, row), _cam(alone))


def test_oversized_encoded_image_is_refused_before_decoding(exported):
    small = _served(exported["expression"][0], max_image_bytes=1000)
    big = _b64(_enc(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    ok = _b64(_enc(_face(41, 20, 20)))
    out = _predict(small, _frame(big, ok))
    assert list(out["error"]) == ["too_large", ""]
    assert "max_image_bytes" in out.loc[0, "message"]


def test_too_many_rows_refuse_the_request_naming_the_limit(expr, exported):
    tiny = _b64(_enc(_face(42, 16, 16)))
    full = _predict(expr, _frame(*[tiny] * 64))
    assert (full["error"] == "").all()
    refusal = _refusal(expr, _frame(*[tiny] * 65))
    assert refusal.code == "batch_too_large"
    assert "at most 64" in str(refusal) and "max_rows" in str(refusal)
    refusal = _refusal(expr, _frame(*[tiny] * 5), explain=True, method="scorecam")
    assert refusal.code == "batch_too_large"
    assert "scorecam" in str(refusal) and "max_scorecam_rows" in str(refusal)
    few = _served(exported["expression"][0], max_rows=2)
    assert _refusal(few, _frame(tiny, tiny, tiny)).code == "batch_too_large"
    assert list(_predict(few, _frame(tiny, tiny))["error"]) == ["", ""]


def test_an_extra_input_column_refuses_the_request(expr):
    tiny = _b64(_enc(_face(44, 16, 16)))
    frame = pd.DataFrame({"image": [tiny], "colour": ["red"]})
    refusal = _refusal(expr, frame)
    assert refusal.code == "unknown_column"
    assert "'colour'" in str(refusal) and "'image'" in str(refusal)


def test_data_url_and_urlsafe_base64_are_accepted(expr):
    data = _enc(_face(43))
    reference = _predict(expr, _frame(_b64(data)))
    url = "data:image/png;base64," + _b64(data)
    safe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(_b64(data)[i : i + 76] for i in range(0, len(_b64(data)), 76))
    out = _predict(expr, _frame(url, safe, wrapped))
    assert list(out["error"]) == ["", "", ""]
    for row in range(3):
        np.testing.assert_allclose(_probs(out, row), _probs(reference), rtol=1e-6)


_BIG_SIDE = 6000


def _big_rgba_pair() -> tuple[bytes, bytes]:
    """A ~150 KB 6000x6000 RGBA PNG (24x24 blocks, some fully transparent over hidden colours,
    some half transparent) and the same picture composited over white as an RGB PNG."""
    rng = np.random.default_rng(90)
    blocks = rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    blocks[..., 3] = rng.choice(np.array([0, 128, 255], dtype=np.uint8), (24, 24))
    a = blocks[..., 3:4].astype(np.float64) / 255.0
    over_white = np.rint(blocks[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    nearest = Image.Resampling.NEAREST
    rgba = Image.fromarray(blocks, "RGBA").resize((_BIG_SIDE, _BIG_SIDE), nearest)
    rgb = Image.fromarray(over_white).resize((_BIG_SIDE, _BIG_SIDE), nearest)
    return _enc(rgba, optimize=True), _enc(rgb, optimize=True)


def _exif_rotated() -> tuple[bytes, np.ndarray]:
    """A JPEG stored on its side with EXIF orientation 6, and its pixels turned upright."""
    stored = Image.fromarray(_face(91, 40, 56)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _enc(stored, "JPEG", quality=95, exif=exif)
    with Image.open(io.BytesIO(data)) as im:
        as_stored = im.convert("RGB")
    upright = np.asarray(as_stored.transpose(Image.Transpose.ROTATE_270))
    assert upright.shape == (40, 56, 3)
    return data, upright


@pytest.fixture(scope="module")
def hostile_images() -> dict[str, tuple[object, str, bytes | None]]:
    """Issue 14's hostile images: id -> (image cell, expected code, reference image bytes); a
    callable cell is made from the ``png_bomb`` fixture.

    ``""`` as the code means the image must be answered like its reference (the same face as
    plain 8-bit RGB, upright); the rest must get that error code on their row only.
    """
    good = _enc(_face(92), "JPEG", quality=90)
    frames = [Image.fromarray(_face(93 + i)) for i in range(3)]
    gif = _enc(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)
    rgb = _face(96, 48, 40)
    cmyk = _enc(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(cmyk)) as im:
        assert im.mode == "CMYK"
        cmyk_rgb = np.asarray(im.convert("RGB"))
    gray16 = np.random.default_rng(97).integers(0, 65536, (40, 40), dtype=np.uint16)
    gray8 = ((gray16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    rgba = np.dstack([rgb, np.linspace(0, 255, 40 * 48).reshape(48, 40).astype(np.uint8)])
    alpha = rgba[..., 3:4] / 255.0
    rgba_white = np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    rotated, upright = _exif_rotated()
    big_rgba, big_rgb = _big_rgba_pair()
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    return {
        "invalid_base64": ("%%% not base64 %%%", "invalid_base64", None),
        "text": (_b64(b"Dear server, this is a letter, not a face."), "unsupported_format", None),
        "pdf": (_b64(pdf), "unsupported_format", None),
        "truncated_jpeg": (_b64(good[: len(good) * 2 // 3]), "truncated", None),
        "png_bomb_30000": (lambda bomb: _b64(bomb(30_000, 30_000)), "too_large", None),
        "tiny_8x8": (_b64(_enc(_face(98, 8, 8))), "too_small", None),
        "animated_gif": (_b64(gif), "multi_frame", None),
        "cmyk_jpeg": (_b64(cmyk), "", _enc(cmyk_rgb)),
        "png_16bit": (_b64(_enc(Image.fromarray(gray16))), "", _enc(np.dstack([gray8] * 3))),
        "rgba": (_b64(_enc(Image.fromarray(rgba, "RGBA"))), "", _enc(rgba_white)),
        "exif_rotated": (_b64(rotated), "", _enc(upright)),
        "rgba_6000x6000": (_b64(big_rgba), "", big_rgb),
    }


_HOSTILE_IDS = [
    "invalid_base64",
    "text",
    "pdf",
    "truncated_jpeg",
    "png_bomb_30000",
    "tiny_8x8",
    "animated_gif",
    "cmyk_jpeg",
    "png_16bit",
    "rgba",
    "exif_rotated",
    "rgba_6000x6000",
]


@pytest.mark.parametrize("case", _HOSTILE_IDS)
def test_hostile_image_gets_its_row_code_or_the_answer_of_its_plain_twin(
    expr, hostile_images, png_bomb, case
):
    value, code, reference = hostile_images[case]
    if callable(value):
        value = value(png_bomb)
    good = _b64(_enc(_face(99)))
    out = _predict(expr, _frame(good, value, good), explain=True)
    assert list(out["error"]) == ["", code, ""], out.loc[1, "message"]
    alone = _predict(expr, _frame(good), explain=True)
    for row in (0, 2):  # the other rows of the request are answered as if alone
        np.testing.assert_allclose(_probs(out, row), _probs(alone), rtol=1e-6)
        np.testing.assert_array_equal(_cam(out, row), _cam(alone))
    if code:
        message = out.loc[1, "message"]
        assert message.startswith("row 1: ") and "Traceback" not in message
        assert str(value)[:12] not in message
        assert out.loc[1, "label"] == "" and out.loc[1, "p_happy"] is None
        assert out.loc[1, "cam_png"] == ""
        return
    assert reference is not None
    twin = _predict(expr, _frame(_b64(reference)), explain=True)
    if case == "rgba_6000x6000":
        # Shrunk then composited (premultiplied) vs composited then shrunk: +-1 level.
        kw = {"input_size": 32, "max_image_bytes": 20 << 20, "max_pixels": 40_000_000}
        mine, _ = decode_row(value, 0, False, min_size=16, **kw)
        theirs, _ = decode_row(_b64(reference), 0, False, min_size=16, **kw)
        assert mine is not None and theirs is not None
        diff = np.abs(mine.model_input.astype(int) - theirs.model_input.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.1
        atol = 1e-5
    else:
        np.testing.assert_array_equal(
            decode_image(base64.b64decode(value)), decode_image(reference)
        )
        atol = 1e-7
    np.testing.assert_allclose(_probs(out, 1), _probs(twin), rtol=0, atol=atol)
    assert out.loc[1, "label"] == twin.loc[0, "label"]


_PEAK_CHILD = """
import base64, sys
from facelens.serving.requests import decode_row

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith(("VmHWM:", "VmRSS:")):
            yield line.split()[0], int(line.split()[1]) / 1024.0

text = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
small = base64.b64encode(open(sys.argv[2], "rb").read()).decode()
kw = dict(input_size=32, max_image_bytes=20 << 20, max_pixels=40_000_000, min_size=16)
decode_row(small, 0, True, **kw)
idle = dict(hwm_mb())["VmRSS:"]
image, error = decode_row(text, 0, True, **kw)
assert error is None and image.model_input.shape == (32, 32, 3), error
print(dict(hwm_mb())["VmHWM:"] - idle)
"""


def test_a_6000px_rgba_png_costs_a_bounded_amount_of_memory(hostile_images, tmp_path):
    # Before the fix the alpha blend ran in float64 at full size: +4.1 GB for this image.
    big, _, _ = hostile_images["rgba_6000x6000"]
    (tmp_path / "big.png").write_bytes(base64.b64decode(big))  # type: ignore[arg-type]
    (tmp_path / "small.png").write_bytes(_enc(_face(100)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, str(tmp_path / "big.png"), str(tmp_path / "small.png")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    above_idle_mb = float(proc.stdout.split()[-1])
    # Pillow's own decoded buffer is 6000 * 6000 * 4 bytes = 137 MiB; allow that plus 150 MiB.
    assert above_idle_mb < 137 + 150, above_idle_mb


# ------------------------------------------------------------------------------ odd modes


def _odd_modes() -> list[tuple[str, bytes, np.ndarray]]:
    rgb = _face(50, 36, 36)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    gray3 = np.repeat(gray[..., None], 3, axis=2)
    alpha = np.full(gray.shape, 255, dtype=np.uint8)
    alpha[:, :18] = 0  # left half transparent -> white
    rgba = np.dstack([rgb, alpha])
    white_left = rgb.copy()
    white_left[:, :18] = 255
    pal = Image.fromarray(rgb).quantize(colors=16)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    wide = Image.fromarray(gray.astype(np.uint16) * 257)  # mode I;16
    la = Image.fromarray(np.dstack([gray, np.full_like(gray, 255)]))  # mode LA
    bits = Image.fromarray(gray > 127)
    return [
        ("L", _enc(Image.fromarray(gray)), gray3),
        ("P", _enc(pal), np.asarray(pal.convert("RGB"))),
        ("RGBA", _enc(Image.fromarray(rgba)), white_left),
        ("CMYK", _enc(cmyk, "TIFF"), np.asarray(cmyk.convert("RGB"))),
        ("I;16", _enc(wide), gray3),
        ("LA", _enc(la), gray3),
        (
            "1",
            _enc(bits),
            np.repeat(np.where(gray > 127, 255, 0)[..., None], 3, 2).astype(np.uint8),
        ),
    ]


@pytest.mark.parametrize("case", _odd_modes(), ids=lambda c: c[0])
def test_odd_modes_decode_and_predict_like_their_rgb(expr, case):
    mode, data, expected_rgb = case
    np.testing.assert_array_equal(decode_image(data), expected_rgb)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == mode  # the file really has the odd mode
    out = _predict(expr, _frame(_b64(data), _b64(_enc(expected_rgb))), explain=True)
    assert list(out["error"]) == ["", ""], list(out["message"])
    np.testing.assert_allclose(_probs(out, 0), _probs(out, 1), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(_cam(out, 0), _cam(out, 1))


# ------------------------------------------------------------------------------ via MLflow


def test_logged_pyfunc_serves_explanations(exported, tmp_path, monkeypatch, request):
    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.runs import configure, tracked_run

    # MLflow quieted to errors (as the CLI does, or a user's logging setup) must not let an
    # unknown param through: the model keeps MLflow's schema logger enabled for warnings.
    quiet, schema = logging.getLogger("mlflow"), logging.getLogger("mlflow.models.utils")
    levels = quiet.level, schema.level
    request.addfinalizer(lambda: (quiet.setLevel(levels[0]), schema.setLevel(levels[1])))
    quiet.setLevel(logging.ERROR)
    schema.setLevel(logging.NOTSET)  # as in a fresh process, before any model was loaded

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    configure(None, "serving-test", artifact_location=str(tmp_path / "artifacts"))
    with tracked_run("train"):
        info = log_pyfunc_model(exported["expression"][0])
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    frame = _frame(_b64(_enc(_face(60))), "not base64 !")
    out = loaded.predict(frame, params={"explain": True, "target": "sad", "method": "layercam"})
    assert list(out["error"]) == ["", "invalid_base64"]
    assert out.loc[0, "cam_target"] == "sad" and out.loc[0, "cam_method"] == "layercam"
    assert _cam(out).shape == (40, 40, 3)
    plain = loaded.predict(frame)
    assert not set(CAM_COLUMNS) & set(plain.columns)
    # MLflow drops params its signature lacks before predict; they still refuse the request.
    for params in ({"colour": "red"}, {"explain": True, "colour": "red", "size": 2}):
        with pytest.raises(RequestRefused, match=r"unknown params? 'colour'"):
            loaded.predict(frame, params=params)
    with pytest.raises(RequestRefused, match="'method'"):
        loaded.predict(frame, params={"method": "bogus"})
    assert list(loaded.predict(frame, params={"explain": False})["error"]) == ["", "invalid_base64"]


# ------------------------------------------------------------------------------ face crops


def test_crop_face_adds_margin_and_stays_inside():
    from facelens.serving.faces import FaceBox, crop_face

    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    np.testing.assert_array_equal(crop_face(img, FaceBox(40, 30, 20, 20), 0.5), img[20:60, 30:70])
    np.testing.assert_array_equal(crop_face(img, FaceBox(40, 30, 20, 20), 0.0), img[30:50, 40:60])
    # At a corner the square is shifted inside the image, not shrunk.
    assert crop_face(img, FaceBox(0, 0, 20, 20), 0.5).shape == (40, 40, 3)
    np.testing.assert_array_equal(crop_face(img, FaceBox(0, 0, 20, 20), 0.5), img[0:40, 0:40])
    np.testing.assert_array_equal(
        crop_face(img, FaceBox(100, 80, 20, 20), 0.5), img[60:100, 80:120]
    )
    # Larger than the image: cut to the image's shorter side.
    assert crop_face(img, FaceBox(10, 10, 80, 80), 1.0).shape == (100, 100, 3)
    with pytest.raises(ValueError, match="margin"):
        crop_face(img, FaceBox(0, 0, 5, 5), 3.0)
    with pytest.raises(ValueError, match="outside"):
        crop_face(img, FaceBox(130, 0, 5, 5), 0.1)


def test_detect_faces_orders_clips_and_picks_the_largest():
    import cv2

    from facelens.serving.faces import (
        FaceBox,
        NoFaceFound,
        crop_largest_face,
        detect_faces,
        largest_face,
    )

    img = _face(70, 60, 80)
    seen: list[np.ndarray] = []

    def fake(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        seen.append(gray)
        return [(10, 10, 10, 10), (70, 50, 30, 30), (200, 200, 5, 5), (20, 5, 25, 25)]

    boxes = detect_faces(img, fake)
    # Largest first; equal areas top-most first; the box past the border is clipped/dropped.
    assert boxes == [FaceBox(20, 5, 25, 25), FaceBox(10, 10, 10, 10), FaceBox(70, 50, 10, 10)]
    reference = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert np.abs(seen[0].astype(int) - reference.astype(int)).max() <= 1
    assert largest_face(boxes) == FaceBox(20, 5, 25, 25)
    crop, box = crop_largest_face(img, margin=0.0, detector=fake)
    assert box == FaceBox(20, 5, 25, 25)
    np.testing.assert_array_equal(crop, img[5:30, 20:45])
    with pytest.raises(NoFaceFound):
        crop_largest_face(img, detector=lambda gray: [])
    with pytest.raises(ValueError, match="uint8"):
        detect_faces(img.astype(np.float32), fake)


def test_haar_cascade_finds_the_bundled_photo_or_says_what_to_install():
    from matplotlib import cbook

    from facelens.serving.faces import FaceDetectorUnavailable, detect_faces, haar_available

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    photo = decode_image(Path(path).read_bytes())
    if not haar_available():
        with pytest.raises(FaceDetectorUnavailable, match="opencv-python-headless"):
            detect_faces(photo)
        return
    boxes = detect_faces(photo)
    assert len(boxes) >= 1
    face = boxes[0]
    # The portrait's face: about 220 px wide, centred around (265, 215) in the 512x600 photo.
    assert 150 <= face.w <= 300 and abs(face.x + face.w / 2 - 265) < 40
    assert abs(face.y + face.h / 2 - 215) < 50


def test_device_comes_from_model_config_and_the_environment(exported, monkeypatch):
    """``FACELENS_DEVICE`` beats ``model_config['device']``; a device this machine lacks is
    one clear error naming where it came from."""
    from facelens.device import DEVICE_ENV
    from facelens.errors import ConfigError

    model_dir = exported["expression"][0]
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    served = _served(model_dir, device="cpu")
    assert served._device == torch.device("cpu")
    assert next(served._model.parameters()).device.type == "cpu"
    frame = _frame(_b64(_enc(_face(3))))
    reference = _probs(_predict(served, frame))
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the missing-device error cannot be shown")
    with pytest.raises(ConfigError, match=r"^device: got 'cuda' but this machine has no CUDA"):
        _served(model_dir, device="cuda")
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    with pytest.raises(ConfigError, match=rf"^{DEVICE_ENV}: got 'cuda:1'"):
        _served(model_dir, device="cpu")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    np.testing.assert_array_equal(
        _probs(_predict(_served(model_dir, device="cuda"), frame)), reference
    )


def test_a_model_saved_on_a_gpu_serves_and_explains_on_the_cpu(
    exported, tmp_path, monkeypatch, save_as_if_from_cuda
):
    """Weights written from CUDA tensors (channels_last, as training leaves them) load on a
    CPU-only machine: same answers as the CPU copy, explanations included."""
    import shutil

    from facelens.device import DEVICE_ENV

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    src = exported["expression"][0]
    gpu_dir = tmp_path / "from-gpu"
    shutil.copytree(src, gpu_dir)
    state = torch.load(src / "state_dict.pt", weights_only=True)
    state = {
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
        for k, v in state.items()
    }
    save_as_if_from_cuda(state, gpu_dir / "state_dict.pt")
    if not torch.cuda.is_available():  # the file really names a device this machine lacks
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu_dir / "state_dict.pt", weights_only=True)
    frame = _frame(_b64(_enc(_face(5))))
    cpu_model, gpu_model = _served(src, device="cpu"), _served(gpu_dir, device="auto")
    assert next(gpu_model._model.parameters()).device == gpu_model._device
    want = _predict(cpu_model, frame, explain=True)
    got = _predict(gpu_model, frame, explain=True)
    np.testing.assert_allclose(_probs(got), _probs(want), atol=1e-5)
    assert got.loc[0, "label"] == want.loc[0, "label"]
    assert np.abs(_cam(got).astype(int) - _cam(want).astype(int)).max() <= 1
