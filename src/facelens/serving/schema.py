"""The request / response contract of the served model: the ``image`` column, the response
columns, the row error codes and the MLflow signature (see :mod:`facelens.serving.pyfunc`)."""

from __future__ import annotations

import base64

from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from facelens.data.images import CODES
from facelens.models.meta import ModelMeta

__all__ = [
    "CAM_COLUMNS",
    "IMAGE_COLUMN",
    "OOD_COLUMNS",
    "ROW_CODES",
    "allowed_targets",
    "encode_image",
    "model_signature",
    "output_columns",
]

IMAGE_COLUMN = "image"
#: Columns added to the response by ``explain=true``.
CAM_COLUMNS: tuple[str, ...] = ("cam_target", "cam_method", "cam_png")
#: Columns of a model exported with an out-of-distribution detector (``meta.ood_threshold``):
#: the Mahalanobis distance of the image's features to the training classes (float) and
#: whether it is above the threshold calibrated on the validation split (bool); null on error.
OOD_COLUMNS: tuple[str, ...] = ("ood_score", "ood")
#: Every ``error`` code a response row can carry (``""`` means ok); a bad param refuses the
#: whole request instead (``facelens.serving.refusals.REFUSAL_CODES``, HTTP 400).
ROW_CODES: frozenset[str] = CODES | {
    "missing_image",
    "invalid_base64",
    "explain_failed",
}

_STRING_COLUMNS = frozenset({"label", "error", "message", *CAM_COLUMNS})


def output_columns(meta: ModelMeta, *, explain: bool = False) -> list[str]:
    """The response columns for a model, in order (see :mod:`facelens.serving.pyfunc`).

    Args:
        meta: the served model's metadata.
        explain: include the :data:`CAM_COLUMNS` (requests with ``explain=true``).
    """
    cams = list(CAM_COLUMNS) if explain else []
    if meta.task == "expression":
        values = ["label", *(f"p_{name}" for name in meta.output_names)]
    else:
        values = list(meta.output_names)
    ood = list(OOD_COLUMNS) if meta.ood_threshold is not None else []
    return [*values, *ood, *cams, "error", "message"]


def model_signature(meta: ModelMeta) -> ModelSignature:
    """The MLflow signature of a :class:`~facelens.serving.pyfunc.FaceLensModel` serving
    ``meta``'s model.

    Inputs: one string column ``image`` (base64). Outputs: see :func:`output_columns`; the
    :data:`CAM_COLUMNS` are optional (present with ``explain=true``); the
    :data:`OOD_COLUMNS` (``ood`` a boolean) are there when the model has a detector. Params: ``explain: bool =
    False``, ``target: str = ""`` (class / attribute name, ``-`` prefix for a negative target;
    empty = predicted), ``method: str = "gradcam"`` (a key of ``cams.METHODS``).
    """
    outputs = []
    for name in output_columns(meta, explain=True):
        kind = DataType.string if name in _STRING_COLUMNS else DataType.double
        if name == "ood":
            kind = DataType.boolean
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
