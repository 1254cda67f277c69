"""Reading a request to the served model: the ``explain`` / ``target`` / ``method`` params
and the request-level row limits (a bad one refuses the whole request:
:class:`~facelens.serving.refusals.RequestRefused`, HTTP 400), and each row's base64 image (a problem there becomes a
:class:`RowError`: an ``error`` code and a ``message`` naming the row, never an exception)."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facelens.data.images import ImageRejected, decode_image, resize_square
from facelens.models.meta import ModelMeta
from facelens.serving.refusals import PARAM_NAMES, RequestRefused, unknown_names
from facelens.serving.schema import IMAGE_COLUMN, allowed_targets

__all__ = [
    "Decoded",
    "Options",
    "RowError",
    "as_bool",
    "b64_bytes",
    "check_rows",
    "decode_row",
    "parse_options",
    "resolve_target",
]

#: Largest side of the image a CAM is drawn over (at least the model's input size).
_CAM_DISPLAY_MAX = 256
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_DEFAULT_METHOD = "gradcam"
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


@dataclass(frozen=True)
class RowError:
    """A row's ``error`` code (one of ``schema.ROW_CODES``) and its ``message``."""

    code: str
    message: str


@dataclass(frozen=True)
class Options:
    """The request's params, checked."""

    explain: bool
    target: tuple[int, int] | None  # (output index, sign) or None = predicted / highest
    method: str


@dataclass(frozen=True)
class Decoded:
    """One row's image, ready for the model (and for the CAM overlay)."""

    model_input: np.ndarray  # (S, S, 3) uint8 at the model's input size
    display: np.ndarray | None  # (D, D, 3) uint8 for the CAM overlay, only when explaining


def b64_bytes(value: Any, row: int, max_bytes: int) -> bytes | RowError:
    """The image bytes of one ``image`` cell (base64 text, a data URL, line-wrapped or
    URL-safe), or why there are none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return RowError("missing_image", f"row {row}: no image given")
    if isinstance(value, bytes | bytearray):
        text = bytes(value)
    elif isinstance(value, str):
        text = value.encode("ascii", errors="replace")
    else:
        return RowError(
            "invalid_base64",
            f"row {row}: expected a base64 string in column {IMAGE_COLUMN!r}, "
            f"got {type(value).__name__}",
        )
    if text.startswith(b"data:"):  # data URL from a browser: data:image/png;base64,....
        _, _, text = text.partition(b",")
    text = b"".join(text.split())  # tolerate line-wrapped base64
    if not text:
        return RowError("missing_image", f"row {row}: the image is empty (0 bytes)")
    if len(text) > 4 * (max_bytes // 3 + 1):  # refuse before allocating the decoded bytes
        return RowError(
            "too_large",
            f"row {row}: the encoded image is over {max_bytes:,} bytes (max_image_bytes); "
            "send a smaller file",
        )
    if not set(text) <= _B64_ALPHABET:
        return RowError("invalid_base64", f"row {row}: the image is not valid base64 text")
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return RowError("invalid_base64", f"row {row}: the image is not valid base64 text")


def as_bool(value: Any) -> bool | None:
    """A boolean param (``true``/``1``/``yes``/``on`` and their opposites), None if it is none."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def parse_options(
    params: Mapping[str, Any], meta: ModelMeta, dropped: Sequence[str] = ()
) -> Options:
    """The checked params of a request; every param is checked whether or not ``explain`` is
    set.

    Args:
        params: The request's params.
        meta: The served model's metadata (its class or attribute names).
        dropped: Param names MLflow removed before the model saw them (unknown to the
            signature; see :func:`facelens.serving.refusals.dropped_params`).

    Raises:
        RequestRefused: ``unknown_param``, ``invalid_param`` (``explain`` not a boolean),
            ``unknown_method`` or ``unknown_target``; the message names the param and lists
            what is allowed, and never repeats the value sent.
    """
    unknown = sorted({*dropped, *(str(k) for k in params if k not in PARAM_NAMES)})
    if unknown:
        raise unknown_names(
            "unknown_param", "param", unknown, f"allowed params: {', '.join(PARAM_NAMES)}"
        )
    explain = as_bool(params.get("explain", False))
    if explain is None:
        raise RequestRefused(
            "invalid_param", "the 'explain' param must be true or false; send a boolean"
        )
    method = str(params.get("method", _DEFAULT_METHOD) or _DEFAULT_METHOD)
    if method != _DEFAULT_METHOD:  # the default needs no check (nor grad-cam's imports)
        method = _checked_method(method)
    target = resolve_target(str(params.get("target", "") or ""), meta)
    return Options(explain, target, method)


def _checked_method(text: str) -> str:
    from facelens.explain.cams.methods import METHODS, resolve_method

    try:
        return resolve_method(text)
    except ValueError:
        raise RequestRefused(
            "unknown_method",
            f"the 'method' param is not a CAM method; allowed: {', '.join(sorted(METHODS))}",
        ) from None


def resolve_target(text: str, meta: ModelMeta) -> tuple[int, int] | None:
    """``""`` -> None; ``name`` / ``+name`` -> (index, +1); ``-name`` -> (index, -1).

    Raises:
        RequestRefused: ``unknown_target``, listing the allowed names.
    """
    text = text.strip()
    if not text:
        return None
    sign = -1 if text.startswith("-") else 1
    key = text.lstrip("+-").strip().lower()
    lookup = {name.lower(): i for i, name in enumerate(meta.output_names)}
    if key not in lookup:
        kind = "class" if meta.task == "expression" else "attribute"
        raise RequestRefused(
            "unknown_target",
            f"the 'target' param is not a {kind} of this {meta.task} model; allowed: "
            f"{', '.join(allowed_targets(meta))} (prefix '-' to explain what lowers the score), "
            "or empty for the predicted one",
        )
    return lookup[key], sign


def check_rows(options: Options, n_rows: int, *, max_rows: int, max_scorecam_rows: int) -> None:
    """Refuse a request with too many rows (checked before any image is decoded).

    Raises:
        RequestRefused: ``batch_too_large`` (HTTP 400), naming the limit.
    """
    if n_rows > max_rows:
        raise RequestRefused(
            "batch_too_large",
            f"the request has {n_rows} rows; at most {max_rows} are allowed "
            "(max_rows); split it into smaller requests",
        )
    if options.method == "scorecam" and n_rows > max_scorecam_rows:
        raise RequestRefused(
            "batch_too_large",
            f"scorecam needs one forward pass per layer channel per image; at most "
            f"{max_scorecam_rows} rows are allowed with it (max_scorecam_rows), got "
            f"{n_rows}; split the request or use another method",
        )


def decode_row(
    value: Any,
    row: int,
    explain: bool,
    *,
    input_size: int,
    max_image_bytes: int,
    max_pixels: int,
    min_size: int,
) -> tuple[Decoded | None, RowError | None]:
    """Decode one row's image (limits checked before any pixel is decoded) at the model's
    input size, and at display size when explaining.

    The decoder shrinks a large image (shorter side kept >= max(input size, 256)) before any
    array is made, so one image admitted by ``max_pixels`` costs about Pillow's decoded
    buffer, not several float64 copies of it."""
    data = b64_bytes(value, row, max_image_bytes)
    if isinstance(data, RowError):
        return None, data
    try:
        img = decode_image(
            data,
            max_pixels=max_pixels,
            min_size=min_size,
            name=f"row {row}",
            reduce_to=max(input_size, _CAM_DISPLAY_MAX),
        )
    except ImageRejected as exc:
        return None, RowError(exc.code, exc.message)
    display = None
    if explain:
        side = min(img.shape[:2])
        display = resize_square(img, max(input_size, min(side, _CAM_DISPLAY_MAX)))
    return Decoded(resize_square(img, input_size), display), None
