"""The MLflow ``PythonModel`` behind ``mlflow models serve``.

Request: a DataFrame (``dataframe_split`` / ``dataframe_records`` over HTTP) with an ``image``
column of base64-encoded image bytes (PNG, JPEG, ...; a ``data:image/...;base64,`` prefix is
accepted), and optional inference params (see :func:`model_signature`):

- ``explain`` (bool, default false): also return a Grad-CAM overlay per row;
- ``target`` (str, default ``""``): the class (expression) or attribute (attributes) to
  explain; ``""`` explains the predicted class, or for attributes the attribute predicted
  furthest above its training mean; a leading ``-`` explains what *lowers* the score
  (e.g. ``-trustworthy``); names are case-insensitive;
- ``method`` (str, default ``gradcam``): a key of :data:`facelens.explain.cams.METHODS`.

Every row is decoded by :func:`facelens.data.images.decode_image` (limits checked before any
pixel is decoded); a row that fails gets an ``error`` code and a ``message`` and never affects
the other rows.

Response, one row per input row, in input order:

- expression: ``label`` (class name, ``""`` on error), ``p_<class>`` per class (probability,
  null on error);
- attributes: one column per attribute (the rating on the original 1..9 scale, null on error);
- with ``explain=true`` only: ``cam_target`` (the explained output, ``-`` prefixed for a
  negative target), ``cam_method`` and ``cam_png`` (base64 PNG: the CAM blended over the
  centre-cropped input, at most 256 px), ``""`` where no CAM was made;
- always: ``error`` (``""`` when ok, else a code of :data:`ROW_CODES`) and ``message``
  (``""`` when ok; it names the row, never echoes input bytes and never holds a traceback).

Errors are always per row, never a request-level exception, because ``mlflow models serve``
answers an exception with a message that quotes the whole request (or with a stack trace):

- a row's own problem: ``missing_image``, ``invalid_base64`` or a
  :data:`facelens.data.images.CODES` code (``empty``, ``unsupported_format``, ``too_large``
  -- also for a base64 text longer than ``max_image_bytes`` allows, checked before decoding --,
  ``truncated``, ``unreadable``, ``too_small``, ``multi_frame``); the other rows are answered;
- a request problem, given to *every* row with all values null: ``batch_too_large`` (more than
  ``max_rows`` rows, default 64, or more than ``max_scorecam_rows``, default 4, with
  ``method=scorecam``: split the request), ``unknown_target`` and ``unknown_method``
  (the message lists what is allowed), ``invalid_param`` (``explain`` not a boolean);
- ``explain_failed``: the prediction is returned, the CAM could not be computed.

Numbers of failed rows are ``None`` rather than NaN so the JSON of ``mlflow models serve``
stays valid (NaN is not JSON). The model is shared by the server's worker threads: inference
and CAMs (which hook the model) run under one lock.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from PIL import Image

from facelens.data.dataset import make_transform
from facelens.data.images import CODES, ImageRejected, decode_image, resize_square
from facelens.models.export import load_exported
from facelens.models.layers import resolve_cam_layer
from facelens.models.meta import ModelMeta

__all__ = [
    "CAM_COLUMNS",
    "DEFAULT_CAM_LAYER",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MAX_SCORECAM_ROWS",
    "DEFAULT_MIN_SIZE",
    "IMAGE_COLUMN",
    "ROW_CODES",
    "FaceLensModel",
    "allowed_targets",
    "encode_image",
    "model_signature",
    "output_columns",
]

IMAGE_COLUMN = "image"
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIZE = 16
#: Rows per request; a larger request gets ``batch_too_large`` on every row.
DEFAULT_MAX_ROWS = 64
#: Rows per request with ``method=scorecam`` (about 512 forward passes per image).
DEFAULT_MAX_SCORECAM_ROWS = 4
#: Largest encoded image accepted per row (the base64 text is checked before decoding).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: The ``FaceVGG.gradcam_layers()`` key explained (model_config ``cam_layer`` overrides);
#: ``auto`` = :func:`facelens.models.vgg.default_cam_layer` of the model's input size.
DEFAULT_CAM_LAYER = "auto"
#: Columns added to the response by ``explain=true``.
CAM_COLUMNS: tuple[str, ...] = ("cam_target", "cam_method", "cam_png")
#: Every ``error`` code a response row can carry (``""`` means ok).
ROW_CODES: frozenset[str] = CODES | {
    "missing_image",
    "invalid_base64",
    "batch_too_large",
    "unknown_target",
    "unknown_method",
    "invalid_param",
    "explain_failed",
}

_DEFAULT_BATCH = 32
_CAM_DISPLAY_MAX = 256
_STRING_COLUMNS = frozenset({"label", "error", "message", *CAM_COLUMNS})
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def output_columns(meta: ModelMeta, *, explain: bool = False) -> list[str]:
    """The response columns for a model, in order (see the module docstring).

    Args:
        meta: the served model's metadata.
        explain: include the :data:`CAM_COLUMNS` (requests with ``explain=true``).
    """
    cams = list(CAM_COLUMNS) if explain else []
    if meta.task == "expression":
        values = ["label", *(f"p_{name}" for name in meta.output_names)]
    else:
        values = list(meta.output_names)
    return [*values, *cams, "error", "message"]


def model_signature(meta: ModelMeta) -> ModelSignature:
    """The MLflow signature of a :class:`FaceLensModel` serving ``meta``'s model.

    Inputs: one string column ``image`` (base64). Outputs: see :func:`output_columns`; the
    :data:`CAM_COLUMNS` are optional (present with ``explain=true``). Params: ``explain: bool =
    False``, ``target: str = ""`` (class / attribute name, ``-`` prefix for a negative target;
    empty = predicted), ``method: str = "gradcam"`` (a key of ``cams.METHODS``).
    """
    outputs = []
    for name in output_columns(meta, explain=True):
        kind = DataType.string if name in _STRING_COLUMNS else DataType.double
        outputs.append(ColSpec(kind, name, required=name not in CAM_COLUMNS))
    params = ParamSchema(
        [
            ParamSpec("explain", DataType.boolean, False),
            ParamSpec("target", DataType.string, ""),
            ParamSpec("method", DataType.string, "gradcam"),
        ]
    )
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, IMAGE_COLUMN)]),
        outputs=Schema(outputs),
        params=params,
    )


def allowed_targets(meta: ModelMeta) -> list[str]:
    """The names accepted by the ``target`` param (each also with a ``-`` prefix)."""
    return list(meta.output_names)


def encode_image(data: bytes) -> str:
    """Base64-encode image bytes for the ``image`` column (the client side of the contract)."""
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class _RowError:
    code: str
    message: str


@dataclass(frozen=True)
class _Options:
    explain: bool
    target: tuple[int, int] | None  # (output index, sign) or None = predicted / highest
    method: str


@dataclass(frozen=True)
class _Decoded:
    model_input: np.ndarray  # (S, S, 3) uint8 at the model's input size
    display: np.ndarray | None  # (D, D, 3) uint8 for the CAM overlay, only when explaining


def _b64_bytes(value: Any, row: int, max_bytes: int) -> bytes | _RowError:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _RowError("missing_image", f"row {row}: no image given")
    if isinstance(value, bytes | bytearray):
        text = bytes(value)
    elif isinstance(value, str):
        text = value.encode("ascii", errors="replace")
    else:
        return _RowError(
            "invalid_base64",
            f"row {row}: expected a base64 string in column {IMAGE_COLUMN!r}, "
            f"got {type(value).__name__}",
        )
    if text.startswith(b"data:"):  # data URL from a browser: data:image/png;base64,....
        _, _, text = text.partition(b",")
    text = b"".join(text.split())  # tolerate line-wrapped base64
    if not text:
        return _RowError("missing_image", f"row {row}: the image string is empty")
    if len(text) > 4 * (max_bytes // 3 + 1):  # refuse before allocating the decoded bytes
        return _RowError(
            "too_large",
            f"row {row}: the encoded image is over {max_bytes:,} bytes (max_image_bytes); "
            "send a smaller file",
        )
    if not set(text) <= _B64_ALPHABET:
        return _RowError("invalid_base64", f"row {row}: the image is not valid base64 text")
    try:
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _RowError("invalid_base64", f"row {row}: the image is not valid base64 text")


def _json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    # pandas stores the None of failed rows as NaN in float columns; turn those columns into
    # objects holding None so the served JSON says null. All-ok columns stay float64.
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f" and out[col].isna().any():
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class FaceLensModel(mlflow.pyfunc.PythonModel):
    """Serve an exported facelens model (``state_dict.pt`` + ``meta.json``).

    The exported directory is the ``model_dir`` artifact. Optional ``model_config`` keys:
    ``max_pixels``, ``min_size`` (decoder limits), ``max_image_bytes``, ``max_rows`` and
    ``max_scorecam_rows`` (per request), ``batch_size`` and ``cam_layer`` (a
    ``FaceVGG.gradcam_layers()`` key).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the exported model (``torch.load(weights_only=True)``) and the preprocessing."""
        model, meta = load_exported(Path(context.artifacts["model_dir"]))
        model.eval()
        config = dict(context.model_config or {})
        self._model = model
        self._meta = meta
        self._max_pixels = int(config.get("max_pixels", DEFAULT_MAX_PIXELS))
        self._min_size = int(config.get("min_size", DEFAULT_MIN_SIZE))
        self._max_image_bytes = int(config.get("max_image_bytes", DEFAULT_MAX_IMAGE_BYTES))
        self._max_rows = max(1, int(config.get("max_rows", DEFAULT_MAX_ROWS)))
        self._batch_size = max(1, int(config.get("batch_size", _DEFAULT_BATCH)))
        self._max_scorecam_rows = max(
            1, int(config.get("max_scorecam_rows", DEFAULT_MAX_SCORECAM_ROWS))
        )
        layers = model.gradcam_layers()
        layer_name = resolve_cam_layer(
            str(config.get("cam_layer", DEFAULT_CAM_LAYER)), meta.input_size
        )
        if layer_name not in layers:
            raise ValueError(
                f"model_config cam_layer={layer_name!r} is not a Grad-CAM layer of this model; "
                f"allowed: {sorted(layers)}"
            )
        self._cam_layer = layers[layer_name]
        self._lock = threading.Lock()
        self._transform = make_transform(
            meta.input_size,
            train=False,
            augment=0.0,
            norm_mean=meta.norm_mean,
            norm_std=meta.norm_std,
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Predict (and optionally explain) every row; failures become ``error``/``message``.

        Args:
            context: the MLflow context (unused; state comes from :meth:`load_context`).
            model_input: a DataFrame with an ``image`` column of base64 strings.
            params: ``explain``/``target``/``method`` (see :func:`model_signature`).

        Returns:
            One row per input row with the columns of :func:`output_columns` (with the CAM
            columns when ``explain`` is true).

        Raises:
            ValueError: there is no ``image`` column (the served signature makes MLflow refuse
                such a request before this method runs).
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if IMAGE_COLUMN not in frame.columns:
            raise ValueError(
                f"the input needs a column {IMAGE_COLUMN!r} of base64 images; "
                f"got columns {list(frame.columns)}"
            )
        values = frame[IMAGE_COLUMN].tolist()
        options = self._options(params or {})
        explain = options.explain if isinstance(options, _Options) else _wants_explain(params)
        columns = output_columns(self._meta, explain=explain)
        request_error = options if isinstance(options, _RowError) else None
        if request_error is None and len(values) > self._max_rows:
            request_error = _RowError(
                "batch_too_large",
                f"the request has {len(values)} rows; at most {self._max_rows} are allowed "
                "(max_rows); split it into smaller requests",
            )
        scorecam = isinstance(options, _Options) and options.method == "scorecam"
        if request_error is None and scorecam and len(values) > self._max_scorecam_rows:
            request_error = _RowError(
                "batch_too_large",
                f"scorecam needs one forward pass per layer channel per image; at most "
                f"{self._max_scorecam_rows} rows are allowed with it (max_scorecam_rows), got "
                f"{len(values)}; split the request or use another method",
            )
        if request_error is not None:
            records = [self._record(None, request_error, explain) for _ in values]
            return _json_safe(pd.DataFrame.from_records(records, columns=columns))
        assert isinstance(options, _Options)

        decoded: list[_Decoded | None] = []
        errors: list[_RowError | None] = []
        for row, value in enumerate(values):
            image, error = self._decode_row(value, row, options.explain)
            decoded.append(image)
            errors.append(error)
        good = [i for i, item in enumerate(decoded) if item is not None]
        inputs = [decoded[i].model_input for i in good]  # type: ignore[union-attr]
        with self._lock:
            raw = self._infer(inputs)  # (N, K) logits / standardised scores
            cams: list[dict[str, str] | _RowError | None] = [None] * len(good)
            if options.explain and good:
                displays = [decoded[i].display for i in good]  # type: ignore[union-attr]
                cams = self._explain(inputs, displays, raw, options, good)  # type: ignore[arg-type]
        outputs = self._to_outputs(raw)
        records = []
        by_row = {i: (outputs[k], cams[k]) for k, i in enumerate(good)}
        for i in range(len(values)):
            if i not in by_row:
                records.append(self._record(None, errors[i], explain))
                continue
            value, cam = by_row[i]
            records.append(
                self._record(value, cam if isinstance(cam, _RowError) else None, explain)
            )
            if isinstance(cam, dict):
                records[-1].update(cam)
        return _json_safe(pd.DataFrame.from_records(records, columns=columns))

    # ------------------------------------------------------------------ request parsing

    def _options(self, params: Mapping[str, Any]) -> _Options | _RowError:
        explain = _as_bool(params.get("explain", False))
        if explain is None:
            return _RowError(
                "invalid_param", "the 'explain' param must be true or false; send a boolean"
            )
        method_text = str(params.get("method", "gradcam") or "gradcam")
        target_text = str(params.get("target", "") or "")
        if not explain:
            return _Options(False, None, "gradcam")
        from facelens.explain.cams.methods import METHODS, resolve_method

        try:
            method = resolve_method(method_text)
        except ValueError:
            return _RowError(
                "unknown_method",
                f"the 'method' param is not a CAM method; allowed: {', '.join(sorted(METHODS))}",
            )
        target = _resolve_target(target_text, self._meta)
        if isinstance(target, _RowError):
            return target
        return _Options(True, target, method)

    def _decode_row(
        self, value: Any, row: int, explain: bool
    ) -> tuple[_Decoded | None, _RowError | None]:
        data = _b64_bytes(value, row, self._max_image_bytes)
        if isinstance(data, _RowError):
            return None, data
        try:
            img = decode_image(
                data, max_pixels=self._max_pixels, min_size=self._min_size, name=f"row {row}"
            )
        except ImageRejected as exc:
            return None, _RowError(exc.code, exc.message)
        size = self._meta.input_size
        display = None
        if explain:
            side = min(img.shape[:2])
            display = resize_square(img, max(size, min(side, _CAM_DISPLAY_MAX)))
        return _Decoded(resize_square(img, size), display), None

    # ------------------------------------------------------------------ model

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        chunk = np.stack(images)  # (B, S, S, 3)
        return self._transform(torch.from_numpy(chunk).permute(0, 3, 1, 2))  # (B, 3, S, S)

    def _infer(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(images), self._batch_size):
                x = self._batch(images[start : start + self._batch_size])
                out.append(self._model(x).float().cpu().numpy().astype(np.float64))  # (B, K)
        if not out:
            return np.zeros((0, self._meta.num_outputs), dtype=np.float64)
        return np.concatenate(out, axis=0)

    def _to_outputs(self, raw: np.ndarray) -> np.ndarray:
        if self._meta.task == "expression":
            shifted = raw - raw.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            return exp / exp.sum(axis=1, keepdims=True)
        if self._meta.target_mean is not None and self._meta.target_std is not None:
            return raw * np.asarray(self._meta.target_std) + np.asarray(self._meta.target_mean)
        return raw

    def _explain(
        self,
        images: Sequence[np.ndarray],
        displays: Sequence[np.ndarray],
        raw: np.ndarray,
        options: _Options,
        rows: Sequence[int],
    ) -> list[dict[str, str] | _RowError]:
        from facelens.explain.cams.compute import compute_cam_batch
        from facelens.explain.cams.overlays import overlay
        from facelens.explain.cams.targets import SignedOutputTarget

        names = self._meta.output_names
        if options.target is None:  # predicted class / attribute furthest above its mean
            chosen = [(int(np.argmax(r)), 1) for r in raw]
        else:
            chosen = [options.target] * len(raw)
        results: list[dict[str, str] | _RowError] = []
        for start in range(0, len(images), self._batch_size):
            stop = min(start + self._batch_size, len(images))
            x = self._batch(images[start:stop])  # outside inference_mode: CAMs need autograd
            targets = [SignedOutputTarget(i, s) for i, s in chosen[start:stop]]
            try:
                cams = compute_cam_batch(
                    self._model,
                    self._cam_layer,
                    x,
                    targets,
                    method=options.method,
                    batch_size=self._batch_size,
                    max_scorecam_images=self._batch_size,
                ).cams  # (B, S, S) in [0, 1]
            except Exception as exc:  # one failing chunk must not fail the request
                for row in rows[start:stop]:
                    results.append(
                        _RowError(
                            "explain_failed",
                            f"row {row}: the {options.method} map could not be computed "
                            f"({type(exc).__name__}); the prediction is still given",
                        )
                    )
                continue
            for k in range(stop - start):
                display = displays[start + k]
                side = display.shape[0]
                cam = torch.nn.functional.interpolate(
                    torch.from_numpy(cams[k])[None, None],
                    size=(side, side),
                    mode="bilinear",
                    align_corners=False,
                )[0, 0].numpy()
                index, sign = chosen[start + k]
                results.append(
                    {
                        "cam_target": ("-" if sign < 0 else "") + names[index],
                        "cam_method": options.method,
                        "cam_png": _png_b64(overlay(display, cam)),
                    }
                )
        return results

    # ------------------------------------------------------------------ response

    def _record(
        self, values: np.ndarray | None, error: _RowError | None, explain: bool
    ) -> dict[str, Any]:
        names = self._meta.output_names
        expression = self._meta.task == "expression"
        prefix = "p_" if expression else ""
        cams = dict.fromkeys(CAM_COLUMNS, "") if explain else {}
        if values is None:
            rec: dict[str, Any] = dict.fromkeys((f"{prefix}{n}" for n in names), None)
            if expression:
                rec["label"] = ""
            rec.update(cams)
            rec["error"] = error.code if error else "internal"
            rec["message"] = error.message if error else "no prediction was made"
            return rec
        rec = {f"{prefix}{n}": float(v) for n, v in zip(names, values, strict=True)}
        if expression:
            rec["label"] = names[int(np.argmax(values))]
        rec.update(cams)
        rec["error"] = error.code if error else ""
        rec["message"] = error.message if error else ""
        return rec


def _wants_explain(params: Mapping[str, Any] | None) -> bool:
    return bool(_as_bool((params or {}).get("explain", False)))


def _resolve_target(text: str, meta: ModelMeta) -> tuple[int, int] | _RowError | None:
    """``""`` -> None; ``name`` / ``+name`` -> (index, +1); ``-name`` -> (index, -1)."""
    text = text.strip()
    if not text:
        return None
    sign = -1 if text.startswith("-") else 1
    key = text.lstrip("+-").strip().lower()
    lookup = {name.lower(): i for i, name in enumerate(meta.output_names)}
    if key not in lookup:
        kind = "class" if meta.task == "expression" else "attribute"
        return _RowError(
            "unknown_target",
            f"the 'target' param is not a {kind} of this {meta.task} model; allowed: "
            f"{', '.join(allowed_targets(meta))} (prefix '-' to explain what lowers the score), "
            "or empty for the predicted one",
        )
    return lookup[key], sign
