"""What the commands read from the project: ``./params.yaml`` (or the defaults) and the MLflow
tracking URI."""

from __future__ import annotations

from pathlib import Path

from facelens.cli.console import fail

__all__ = ["load_params_or_default", "tracking_uri"]


def load_params_or_default(params_file: Path | None):  # -> Params
    """``params_file``, else ``./params.yaml`` when present, else the defaults; exit 1 with the
    first line of the reason when the file is invalid."""
    from facelens.config import ConfigError, Params, load_params

    if params_file is None:
        default = Path("params.yaml")
        if not default.is_file():
            return Params()
        params_file = default
    try:
        return load_params(params_file)
    except ConfigError as exc:
        fail(str(exc).splitlines()[0])


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri`` of ./params.yaml, else the default.

    Sets it on MLflow (the registry follows the tracking URI) and returns it.
    """
    import os

    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = load_params_or_default(None).tracking.tracking_uri
    mlflow.set_tracking_uri(uri)
    return uri
