"""Request-level refusals of the served model: bad params are answered with HTTP 400.

A problem of the whole request -- an unknown param, ``explain`` not a boolean, a ``method`` that
is not a CAM method, a ``target`` the model does not have -- raises :class:`RequestRefused`,
whether or not ``explain`` is set. It is an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``,
which ``mlflow models serve`` answers with HTTP 400, and a
:class:`~facelens.errors.ConfigError` for in-process callers (the CLI). The body is
``{"error_code": "INVALID_PARAMETER_VALUE", "error": <code>, "message": <one line>}``: the
scoring server prepends ``Failed to predict data '<the whole request>'`` to the message of any
``MlflowException`` a model raises, so :meth:`RequestRefused.serialize_as_json` writes the
refusal's own message, which names the param and what is allowed and never holds input data.

Unknown params: ``mlflow.pyfunc`` drops the params its signature does not declare before the
model sees them, logging ``Unrecognized params [...] are ignored`` from
``mlflow.models.utils._enforce_params_schema``. :func:`install` adds a logging filter there that
reads the dropped names from that call (and the DataFrame being validated, from
``_validate_prediction_input``) into a thread-local; :func:`dropped_params` hands them to the
``predict`` call for that same DataFrame, which refuses the request. It relies on those two
MLflow functions (MLflow 3; ``tests/e2e/test_model_server.py`` checks it over HTTP) and on the
``mlflow.models.utils`` logger being enabled for warnings (MLflow's default); where it cannot
read them, the warning is logged as before and the request is answered without those params.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from facelens.errors import ConfigError

__all__ = [
    "PARAM_NAMES",
    "REFUSAL_CODES",
    "RequestRefused",
    "dropped_params",
    "install",
    "unknown_names",
]

#: The inference params of the served model (see ``schema.model_signature``).
PARAM_NAMES: tuple[str, ...] = ("explain", "target", "method")
#: The ``error`` of a refused request.
REFUSAL_CODES: frozenset[str] = frozenset(
    {
        "unknown_param",
        "invalid_param",
        "unknown_method",
        "unknown_target",
        "batch_too_large",
        "unknown_column",
        "invalid_input",
        "invalid_json",
    }
)

_MLFLOW_LOGGER = "mlflow.models.utils"
_pending = threading.local()


class RequestRefused(ConfigError, MlflowException):
    """A request the served model refuses as a whole (HTTP 400); ``code`` in
    :data:`REFUSAL_CODES`, ``str()`` the one-line reason."""

    def __init__(self, code: str, reason: str) -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r}; allowed: {sorted(REFUSAL_CODES)}")
        MlflowException.__init__(self, reason, error_code=INVALID_PARAMETER_VALUE)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.reason))

    def serialize_as_json(self) -> str:
        """The HTTP body: the refusal's own reason, whatever the server added to ``message``."""
        return json.dumps(
            {"error_code": self.error_code, "error": self.code, "message": self.reason}
        )


def unknown_names(code: str, noun: str, names: Sequence[str], allowed: str) -> RequestRefused:
    """``unknown <noun>s 'a', 'b'; <allowed>``: the refusal of unknown params or columns, each
    name cut to 40 characters and at most five named (the request is never echoed whole)."""
    shown = ", ".join(repr(str(name)[:40]) for name in names[:5])
    plural = "s" if len(names) > 1 else ""
    return RequestRefused(code, f"unknown {noun}{plural} {shown}; {allowed}")


class _DroppedParams(logging.Filter):
    """Catches MLflow's "Unrecognized params" warning and keeps the names for ``predict``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName != "_enforce_params_schema":
            return True
        if not record.getMessage().startswith("Unrecognized params"):
            return True
        keys, data = _from_callers()
        if keys is None or data is None:
            return True  # MLflow changed: log as before
        try:
            ref: weakref.ref[Any] = weakref.ref(data)
        except TypeError:
            return True
        _pending.value = (ref, tuple(sorted(str(k) for k in keys)))
        return False  # answered with a 400 instead


def _from_callers() -> tuple[Any, Any]:
    """``ignored_keys`` of MLflow's ``_enforce_params_schema`` and the ``data`` of its caller
    ``_validate_prediction_input``, read from the logging call's stack."""
    keys = data = None
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_name
        if name == "_enforce_params_schema" and keys is None:
            keys = frame.f_locals.get("ignored_keys")
        elif name == "_validate_prediction_input":
            data = frame.f_locals.get("data")
            break
        frame = frame.f_back
    return keys, data


def install() -> None:
    """Add the unknown-params filter to MLflow's schema logger (once per process).

    The filter only sees records the logger emits, so the logger is kept enabled for
    warnings even when ``mlflow`` was quieted (``logging.getLogger("mlflow").setLevel(ERROR)``,
    as the CLI does): an unknown param must be refused whatever the logging setup."""
    logger = logging.getLogger(_MLFLOW_LOGGER)
    if not any(isinstance(f, _DroppedParams) for f in logger.filters):
        logger.addFilter(_DroppedParams())
    if not logger.isEnabledFor(logging.WARNING):
        logger.setLevel(logging.WARNING)


def dropped_params(model_input: object) -> tuple[str, ...]:
    """The param names MLflow dropped while validating ``model_input`` in this thread (and
    forget them); ``()`` when none were or they belonged to another request."""
    pending = getattr(_pending, "value", None)
    _pending.value = None
    if pending is None:
        return ()
    ref, keys = pending
    return keys if ref() is model_input else ()
