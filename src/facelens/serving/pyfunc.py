"""The MLflow ``PythonModel`` behind ``mlflow models serve``.

Request: a DataFrame (``dataframe_split`` / ``dataframe_records`` over HTTP) with an ``image``
column of base64-encoded image bytes (PNG, JPEG, ...; a ``data:image/...;base64,`` prefix is
accepted), and optional inference params (see :func:`facelens.serving.schema.model_signature`):

- ``explain`` (bool, default false): also return a Grad-CAM overlay per row;
- ``target`` (str, default ``""``): the class (expression) or attribute (attributes) to
  explain; ``""`` explains the predicted class, or for attributes the attribute predicted
  furthest above its training mean; a leading ``-`` explains what *lowers* the score
  (e.g. ``-trustworthy``); names are case-insensitive;
- ``method`` (str, default ``gradcam``): a key of :data:`facelens.explain.cams.methods.METHODS`.

Every row is decoded by :func:`facelens.data.images.decode_image` (limits checked before any
pixel is decoded); a row that fails gets an ``error`` code and a ``message`` and never affects
the other rows.

Response, one row per input row, in input order:

- expression: ``label`` (class name, ``""`` on error), ``p_<class>`` per class (probability,
  null on error);
- attributes: one column per attribute (the rating on the original 1..9 scale, null on error);
- a model exported with an out-of-distribution detector (:mod:`facelens.models.ood`; models
  exported before it have neither column): ``ood_score`` (Mahalanobis distance of the image's
  penultimate features to the nearest training class, null on error) and ``ood`` (true when
  above the threshold calibrated on the validation split, null on error);
- with ``explain=true`` only: ``cam_target`` (the explained output, ``-`` prefixed for a
  negative target), ``cam_method`` and ``cam_png`` (base64 PNG: the CAM blended over the
  centre-cropped input, at most 256 px), ``""`` where no CAM was made;
- always: ``error`` (``""`` when ok, else a code of :data:`facelens.serving.schema.ROW_CODES`) and ``message``
  (``""`` when ok; it names the row, never echoes input bytes and never holds a traceback).

A request-level fault refuses the whole request: :class:`facelens.serving.refusals.RequestRefused`
(HTTP 400 from ``mlflow models serve``, body ``{"error_code": "INVALID_PARAMETER_VALUE",
"error": <code>, "message": ...}``; the message names the param, column or limit and what is
allowed, and never repeats the request): ``unknown_param`` (a param other than
``explain``/``target``/``method``), ``invalid_param`` (``explain`` not a boolean),
``unknown_method`` and ``unknown_target`` (whether or not ``explain`` is set),
``unknown_column`` (an input column other than ``image``) and ``batch_too_large`` (more than
``max_rows`` rows, default 64, or more than ``max_scorecam_rows``, default 4, with
``method=scorecam``: split the request). Requests MLflow cannot read (invalid JSON, no
``image`` column, a param of the wrong JSON type) are refused the same way by
:mod:`facelens.serving.http_guard`. Every other problem is answered per row, in a 200:

- a row's own problem: ``missing_image``, ``invalid_base64`` (also a cell that is not a
  string) or a :data:`facelens.data.images.CODES` code (``empty``, ``unsupported_format``,
  ``too_large`` -- also for a base64 text longer than ``max_image_bytes`` allows, checked
  before decoding --, ``truncated``, ``unreadable``, ``too_small``, ``multi_frame``); the
  other rows are answered;
- ``explain_failed``: the prediction is returned, the CAM could not be computed.

Numbers of failed rows are ``None`` rather than NaN so the JSON of ``mlflow models serve``
stays valid (NaN is not JSON). The model is shared by the server's worker threads: inference
and CAMs (which hook the model) run under one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from facelens.device import model_input, resolve_device
from facelens.errors import ConfigError, DataError
from facelens.models.export import load_exported
from facelens.models.layers import resolve_cam_layer
from facelens.models.ood import OodDetector, load_ood
from facelens.serving.explain_rows import explain_rows
from facelens.serving.http_guard import extra_columns
from facelens.serving.http_guard import install as install_http_guard
from facelens.serving.refusals import dropped_params, unknown_names
from facelens.serving.refusals import install as install_param_guard
from facelens.serving.requests import (
    Decoded,
    Options,
    RowError,
    check_rows,
    decode_row,
    parse_options,
)
from facelens.serving.responses import json_safe, row_records, to_outputs
from facelens.serving.schema import IMAGE_COLUMN, output_columns

__all__ = [
    "DEFAULT_CAM_LAYER",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MAX_SCORECAM_ROWS",
    "DEFAULT_MIN_SIZE",
    "FaceLensModel",
]

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIZE = 16
#: Rows per request; a larger request is refused (``batch_too_large``, HTTP 400).
DEFAULT_MAX_ROWS = 64
#: Rows per request with ``method=scorecam`` (about 512 forward passes per image).
DEFAULT_MAX_SCORECAM_ROWS = 4
#: Largest encoded image accepted per row (the base64 text is checked before decoding).
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: The ``FaceVGG.gradcam_layers()`` key explained (model_config ``cam_layer`` overrides);
#: ``auto`` = :func:`facelens.models.layers.default_cam_layer` of the model's input size.
DEFAULT_CAM_LAYER = "auto"

_DEFAULT_BATCH = 32


class FaceLensModel(mlflow.pyfunc.PythonModel):
    """Serve an exported facelens model (``state_dict.pt`` + ``meta.json``).

    The exported directory is the ``model_dir`` artifact. Optional ``model_config`` keys:
    ``max_pixels``, ``min_size`` (decoder limits), ``max_image_bytes``, ``max_rows`` and
    ``max_scorecam_rows`` (per request), ``batch_size``, ``cam_layer`` (a
    ``FaceVGG.gradcam_layers()`` key) and ``device`` (default ``auto``; the environment
    variable ``FACELENS_DEVICE`` overrides it, see :mod:`facelens.device`).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the exported model (``torch.load(weights_only=True)``) and the preprocessing.

        Raises:
            ConfigError: ``model_config`` names a ``cam_layer`` the model does not have, or a
                device this machine does not have.
        """
        config = dict(context.model_config or {})
        self._device = resolve_device(str(config.get("device", "auto")))
        model_dir = Path(context.artifacts["model_dir"])
        model, meta = load_exported(model_dir, self._device)
        model.eval()
        self._model = model
        self._meta = meta
        self._ood: OodDetector | None = load_ood(model_dir, meta.ood_threshold)
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
            raise ConfigError(
                f"model_config cam_layer={layer_name!r} is not a Grad-CAM layer of this model; "
                f"allowed: {sorted(layers)}"
            )
        self._cam_layer = layers[layer_name]
        self._lock = threading.Lock()
        self._transform = meta.eval_transform()
        install_param_guard()
        install_http_guard()

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
            params: ``explain``/``target``/``method`` (see
                :func:`~facelens.serving.schema.model_signature`).

        Returns:
            One row per input row with the columns of
            :func:`~facelens.serving.schema.output_columns` (with the CAM columns when
            ``explain`` is true).

        Raises:
            RequestRefused: a bad or unknown param (HTTP 400 from ``mlflow models serve``;
                see :mod:`facelens.serving.refusals`).
            DataError: there is no ``image`` column (the served signature makes MLflow refuse
                such a request before this method runs).
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if IMAGE_COLUMN not in frame.columns:
            raise DataError(
                f"the input needs a column {IMAGE_COLUMN!r} of base64 images; "
                f"got columns {list(frame.columns)}"
            )
        extra = [str(c) for c in frame.columns if c != IMAGE_COLUMN] or extra_columns()
        if extra:
            only = f"the only input column is {IMAGE_COLUMN!r} (base64 images)"
            raise unknown_names("unknown_column", "input column", extra, only)
        options = parse_options(params or {}, self._meta, dropped_params(model_input))
        values = frame[IMAGE_COLUMN].tolist()
        explain = options.explain
        columns = output_columns(self._meta, explain=explain)
        check_rows(
            options, len(values), max_rows=self._max_rows, max_scorecam_rows=self._max_scorecam_rows
        )
        records = self._answer(values, options, explain)
        return json_safe(pd.DataFrame.from_records(records, columns=columns))

    def _answer(self, values: list[Any], options: Options, explain: bool) -> list[dict[str, Any]]:
        """Decode, predict and (optionally) explain the rows of a valid request."""
        decoded: list[Decoded | None] = []
        errors: list[RowError | None] = []
        for row, value in enumerate(values):
            image, error = decode_row(
                value,
                row,
                options.explain,
                input_size=self._meta.input_size,
                max_image_bytes=self._max_image_bytes,
                max_pixels=self._max_pixels,
                min_size=self._min_size,
            )
            decoded.append(image)
            errors.append(error)
        good = [i for i, item in enumerate(decoded) if item is not None]
        inputs = [decoded[i].model_input for i in good]  # type: ignore[union-attr]
        with self._lock:
            raw, ood_scores = self._infer(inputs)  # (N, K) logits / standardised scores
            cams: list[dict[str, str] | RowError | None] = [None] * len(good)
            if options.explain and good:
                displays = [decoded[i].display for i in good]  # type: ignore[union-attr]
                cams = explain_rows(  # type: ignore[assignment]
                    self._model,
                    self._cam_layer,
                    self._batch,
                    names=self._meta.output_names,
                    batch_size=self._batch_size,
                    images=inputs,
                    displays=displays,  # type: ignore[arg-type]
                    raw=raw,
                    options=options,
                    rows=good,
                )
        outputs = to_outputs(self._meta, raw)
        return row_records(
            self._meta, len(values), good, outputs, cams, errors, explain, ood_scores
        )

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        chunk = np.stack(images)  # (B, S, S, 3)
        return self._transform(torch.from_numpy(chunk).permute(0, 3, 1, 2))  # (B, 3, S, S)

    def _infer(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw outputs ``(N, K)`` and, with a detector, OOD scores ``(N,)`` (one forward pass:
        the output layer is applied to the penultimate features the score is made from)."""
        out: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        head = self._model.classifier[-1]
        with torch.inference_mode():
            for start in range(0, len(images), self._batch_size):
                x = model_input(self._batch(images[start : start + self._batch_size]), self._device)
                embedded = self._model.embed(x)
                out.append(head(embedded).float().cpu().numpy().astype(np.float64))  # (B, K)
                feats.append(embedded.float().cpu().numpy())
        if not out:
            empty = np.zeros((0, self._meta.num_outputs), dtype=np.float64)
            return empty, None if self._ood is None else np.zeros(0)
        raw = np.concatenate(out, axis=0)
        if self._ood is None:
            return raw, None
        return raw, self._ood.scores(np.concatenate(feats, axis=0))
