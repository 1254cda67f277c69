"""The project's errors: one base, :class:`FaceLensError`, that the stage runner and the CLI
catch and print as one line.

Raise a subclass for a problem the *user* can fix (a bad params value, a missing input, a
corrupt file, unavailable weights); its message says what was received, what is allowed and
what to do. Everything else (a bug here or in a library) is not a ``FaceLensError`` and keeps
its traceback. Each subclass also derives from the builtin it refines (``ValueError``,
``FileNotFoundError``, ``RuntimeError``) so callers that catch the builtin still work.
"""

from __future__ import annotations

__all__ = [
    "CamError",
    "ConfigError",
    "DataError",
    "FaceDetectorUnavailable",
    "FaceLensError",
    "LeakageError",
    "MissingInputError",
    "ModelFileError",
    "NoFaceFound",
    "RunNotFound",
    "RunReferenceError",
    "SourceError",
    "StageError",
    "TrainingDiverged",
    "WeightsUnavailable",
]


class FaceLensError(Exception):
    """Base of every error a user can act on; the message names the file, key or value."""


class ConfigError(FaceLensError, ValueError):
    """``params.yaml`` (or an override) is missing, unreadable or invalid; names the key."""


class DataError(FaceLensError, ValueError):
    """The data does not fit what a stage needs (no labelled rows, an empty split, a bad
    manifest, an image the safe decoder refuses, ...)."""


class SourceError(DataError):
    """A raw dataset source is unusable as a whole (wrong layout, no usable image at all)."""


class LeakageError(DataError):
    """The split would put one identity or one image in two parts."""


class MissingInputError(FaceLensError, FileNotFoundError):
    """An input file or folder a stage or command needs does not exist; says what makes it."""


class ModelFileError(FaceLensError, ValueError):
    """A model directory, weights or checkpoint file is not what facelens wrote."""


class WeightsUnavailable(FaceLensError, RuntimeError):
    """Requested pretrained weights cannot be loaded; the message says where to put them."""


class CamError(FaceLensError, RuntimeError):
    """A CAM computation failed (bad target index, incompatible layer, ...).

    ``pytorch_grad_cam``'s context manager silently swallows ``IndexError`` (it prints it and
    returns ``True`` from ``__exit__``); facelens re-raises such errors as ``CamError`` so that a
    wrong class index can never yield an empty result.
    """


class FaceDetectorUnavailable(FaceLensError, RuntimeError):
    """``--detect-face`` was asked for but OpenCV's Haar cascade is not available."""


class NoFaceFound(FaceLensError, ValueError):
    """``--detect-face`` found no face in the image."""


class StageError(FaceLensError, RuntimeError):
    """A stage cannot produce its outputs; the message says why and what to do."""


class TrainingDiverged(FaceLensError, FloatingPointError):
    """The training loss became NaN or infinite; the last epoch's checkpoint is kept and the
    message names the epoch, the batch and what to change."""


class RunReferenceError(FaceLensError, ValueError):
    """A run reference (``facelens compare``) has none of the accepted forms, or none was
    given; the message lists the forms."""


class RunNotFound(FaceLensError, LookupError):
    """A referenced MLflow run, registered model, alias or version does not exist, or the
    model version is not linked to a run."""
