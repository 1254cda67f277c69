"""A thin layer over ``mlflow models serve``'s request handler: a malformed request gets a 400
that names the field and what is allowed, and never echoes the request.

MLflow's scoring server answers a request it cannot use with a 400 whose message quotes the
input (``Failed to predict data '<the request>'``, ``Failed to enforce schema of data ...``,
``Input: <the body>`` for invalid JSON), and an exception of the model with a 400 holding its
Python traceback. :func:`install` wraps ``mlflow.pyfunc.scoring_server.invocations`` (the function
its ``/invocations`` route calls, looked up at call time) so that every ``MlflowException`` of a
request becomes a :class:`~facelens.serving.refusals.RequestRefused` whose message is made here
from the request's shape, not from MLflow's text (which is logged by the server instead):

- ``invalid_json``: the body is not JSON;
- ``invalid_input``: not exactly one of ``dataframe_records`` / ``dataframe_split`` /
  ``inputs`` / ``instances``, or a table without the ``image`` column (the columns sent are
  named);
- ``invalid_param``: ``params`` not an object, ``explain`` not a boolean, ``target`` /
  ``method`` not strings (the params are named).

MLflow ignores a column the signature does not declare (logging ``Found extra inputs ...``
from ``mlflow.models.utils._enforce_schema``); while the wrapper handles a request, a logging
filter keeps those names for :func:`extra_columns`, and ``predict`` refuses the request
(``unknown_column``). An exception of the model itself (a bug) becomes a 500 with one line;
its traceback goes to the server's log, never to the client. Installed by
``FaceLensModel.load_context`` only inside the scoring server (when MLflow imported its
module before loading the model); in-process callers are unaffected.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from facelens.serving.refusals import PARAM_NAMES, RequestRefused
from facelens.serving.requests import as_bool
from facelens.serving.schema import IMAGE_COLUMN

__all__ = ["ServingFault", "extra_columns", "install"]

_SERVER_MODULE = "mlflow.pyfunc.scoring_server"
_FORMATS = ("dataframe_records", "dataframe_split", "inputs", "instances")
_EXAMPLE = '{"dataframe_records": [{"image": "<base64>"}, ...]}'
_MLFLOW_LOGGER = "mlflow.models.utils"
_logger = logging.getLogger(__name__)
_request = threading.local()


class ServingFault(MlflowException):
    """The model failed on a request (a bug): HTTP 500 with one line, no traceback."""

    def __init__(self) -> None:
        super().__init__(
            "the model failed on this request (an internal error; the server's log has the "
            "details)",
            error_code=INTERNAL_ERROR,
        )

    def serialize_as_json(self) -> str:
        return json.dumps(
            {"error_code": self.error_code, "error": "internal_error", "message": self.message}
        )


class _ExtraColumns(logging.Filter):
    """Keeps the names of MLflow's "Found extra inputs" warning for the current request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_request, "active", False) or record.funcName != "_enforce_schema":
            return True
        if not record.getMessage().startswith("Found extra inputs"):
            return True
        names = _local_of_caller("_enforce_schema", "extra_cols")
        if not isinstance(names, list):
            return True  # MLflow changed: log as before
        _request.extra = tuple(str(name) for name in names)
        return False  # answered with a 400 instead


def _local_of_caller(function: str, name: str) -> Any:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return frame.f_locals.get(name)
        frame = frame.f_back
    return None


def extra_columns() -> tuple[str, ...]:
    """The input columns MLflow dropped from the request this thread is answering (and forget
    them); ``()`` outside the scoring server."""
    names = getattr(_request, "extra", ())
    _request.extra = ()
    return names


def install() -> None:
    """Wrap the scoring server's ``invocations`` (once per process) and add the filter; does
    nothing where the scoring server is not running in this process."""
    server = sys.modules.get(_SERVER_MODULE)
    if server is None or getattr(server.invocations, "facelens_guard", False):
        return
    server.invocations = _guarded(server.invocations)
    logger = logging.getLogger(_MLFLOW_LOGGER)
    if not any(isinstance(f, _ExtraColumns) for f in logger.filters):
        logger.addFilter(_ExtraColumns())


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def invocations(data: Any, content_type: Any, *args: Any, **kwargs: Any) -> Any:
        _request.active, _request.extra = True, ()
        try:
            return original(data, content_type, *args, **kwargs)
        except RequestRefused:
            raise
        except MlflowException as exc:
            trace = exc.json_kwargs.get("stack_trace")
            if trace:
                _logger.error("the model failed on a request:\n%s", trace)
                raise ServingFault() from None
            refused = refusal(data, str(content_type or ""))
            _logger.warning("refused a request (%s): %s", type(exc).__name__, refused.reason)
            raise refused from None
        finally:
            _request.active, _request.extra = False, ()

    invocations.facelens_guard = True  # type: ignore[attr-defined]
    return invocations


def refusal(data: bytes | str, content_type: str) -> RequestRefused:
    """Why a request MLflow could not use was refused, made from the request alone (never
    quoting it): ``invalid_json``, ``invalid_input`` or ``invalid_param``."""
    allowed = (
        f"send {_EXAMPLE} (or dataframe_split / inputs with the one column "
        f"{IMAGE_COLUMN!r} of base64 strings)"
    )
    if "json" not in content_type.lower():
        return RequestRefused("invalid_input", f"the request is not a table of images; {allowed}")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return RequestRefused("invalid_json", f"the request body is not valid JSON; {allowed}")
    shape = _shape_problem(body)
    if shape:
        return RequestRefused("invalid_input", f"{shape}; {allowed}")
    params = _param_problem(body.get("params", {}))
    if params:
        return RequestRefused("invalid_param", params)
    return RequestRefused("invalid_input", f"the request is not a table of images; {allowed}")


def _json_type(value: Any) -> str:
    kinds = ((bool, "boolean"), (int | float, "number"), (str, "string"), (list, "array"))
    if value is None:
        return "null"
    return next((kind for typ, kind in kinds if isinstance(value, typ)), "object")


def _names(names: Sequence[Any]) -> str:
    shown = ", ".join(repr(str(name)[:40]) for name in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _columns(value: Any) -> list[str] | None:
    """The column names of a table in any of MLflow's JSON formats; None if it is no table."""
    if isinstance(value, dict):
        cols = value.get("columns") if "columns" in value and "data" in value else list(value)
        return [str(c) for c in cols] if isinstance(cols, list) else None
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        return list(dict.fromkeys(str(k) for row in value for k in row))
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [IMAGE_COLUMN]  # a list of base64 strings is read as the one column
    return None


def _shape_problem(body: Any) -> str:
    if not isinstance(body, dict):
        return f"the request body is a JSON {_json_type(body)}, not an object"
    formats = [key for key in body if key in _FORMATS]
    if len(formats) != 1:
        sent = _names([key for key in body if key != "params"]) or "none"
        return f"the request needs exactly one of {', '.join(_FORMATS)}; got the fields {sent}"
    columns = _columns(body[formats[0]])
    if columns is None:
        kind = _json_type(body[formats[0]])
        return f"{formats[0]!r} holds a JSON {kind}, not a table with a column {IMAGE_COLUMN!r}"
    if columns != [IMAGE_COLUMN]:
        sent = f"the columns {_names(columns)}" if columns else "no column"
        return f"the table needs the one column {IMAGE_COLUMN!r}; got {sent}"
    return ""


def _param_problem(params: Any) -> str:
    if not isinstance(params, dict):
        return (
            f"'params' must be a JSON object with {', '.join(PARAM_NAMES)}; "
            f"got a JSON {_json_type(params)}"
        )
    bad = []
    if "explain" in params and as_bool(params["explain"]) is None:
        bad.append("the 'explain' param must be true or false")
    bad += [
        f"the {name!r} param must be a string"
        for name in ("target", "method")
        if name in params and not isinstance(params[name], str)
    ]
    return "; ".join(bad)
