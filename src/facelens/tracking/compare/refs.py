"""Run references of ``facelens compare``: a run id, ``runs:/<id>``, ``models:/<name>@<alias>``
or ``models:/<name>/<version>``, resolved to an MLflow run id."""

from __future__ import annotations

import re
from typing import Any

from facelens.errors import RunNotFound, RunReferenceError

__all__ = ["REF_FORMS", "mlflow_client", "resolve_run_ref"]

#: The accepted reference forms, quoted by every error about a reference.
REF_FORMS = (
    "an MLflow run id (32 hex chars, or runs:/<id>), "
    "models:/<name>@<alias> or models:/<name>/<version>"
)


def mlflow_client(tracking_uri: str | None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (``None``: the usual environment)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def resolve_run_ref(ref: str, *, client: Any = None, tracking_uri: str | None = None) -> str:
    """Resolve a run reference to an MLflow run id.

    Args:
        ref: ``<run_id>``, ``runs:/<run_id>[/...]``, ``models:/<name>@<alias>`` or
            ``models:/<name>/<version>``.
        client: An ``MlflowClient``; built from ``tracking_uri`` when ``None``.
        tracking_uri: Tracking URI for a new client (``None``: the usual environment).

    Returns:
        The run id.

    Raises:
        RunNotFound: The run, model, alias or version does not exist, or the model version
            is not linked to a run (a ``LookupError``).
        RunReferenceError: ``ref`` has none of the accepted forms (a ``ValueError``).
    """
    from mlflow.exceptions import MlflowException

    cl = client if client is not None else mlflow_client(tracking_uri)
    text = ref.strip()
    if text.startswith("models:/"):
        return _model_run_id(cl, ref, text[len("models:/") :])

    run_id = text[len("runs:/") :].split("/", 1)[0] if text.startswith("runs:/") else text
    if not re.fullmatch(r"[0-9A-Za-z_\-]{1,64}", run_id):
        raise RunReferenceError(f"unrecognised run reference {ref!r}; accepted: {REF_FORMS}.")
    try:
        cl.get_run(run_id)
    except MlflowException as exc:
        raise RunNotFound(
            f"run {run_id!r} (from {ref!r}) was not found at tracking URI "
            f"{cl.tracking_uri!r} ({_first_line(exc)}); point MLFLOW_TRACKING_URI (or the "
            f"tracking URI option) at the store that holds it. Accepted forms: {REF_FORMS}."
        ) from exc
    return run_id


def _model_run_id(cl: Any, ref: str, body: str) -> str:
    """The run behind ``models:/<body>`` (``<name>@<alias>`` or ``<name>/<version>``)."""
    from mlflow.exceptions import MlflowException

    try:
        if "@" in body:
            name, alias = body.rsplit("@", 1)
            if not name or not alias:
                raise RunReferenceError(
                    f"malformed model reference {ref!r}; accepted: {REF_FORMS}."
                )
            version = cl.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.rpartition("/")
            if not name or not number.isdigit():
                raise RunReferenceError(
                    f"malformed model reference {ref!r}; accepted: {REF_FORMS}."
                )
            version = cl.get_model_version(name, number)
    except MlflowException as exc:
        raise RunNotFound(
            f"model reference {ref!r} was not found in the registry ({_first_line(exc)}); "
            f"check the name and alias/version in the MLflow UI (Models). "
            f"Accepted forms: {REF_FORMS}."
        ) from exc
    run_id = getattr(version, "run_id", None)
    model_id = getattr(version, "model_id", None)
    if not run_id and model_id:
        # MLflow 3 may link a version to a LoggedModel only; that knows its source run.
        try:
            run_id = cl.get_logged_model(model_id).source_run_id
        except MlflowException:
            run_id = None
    if not run_id:
        raise RunNotFound(
            f"model reference {ref!r} resolves to version {version.version} of "
            f"{version.name!r}, which is not linked to a run; register the model from a run."
        )
    return str(run_id)


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "message", "") or exc)
    return msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
