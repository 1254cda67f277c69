"""The served model from the command line: the ``--model`` / ``--task`` / ``--detect-face`` /
``--margin`` options, the model URI they name, loading it and sending it images.

predict and explain share one code path with ``mlflow models serve``: the pyfunc model.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

import typer

from facelens.cli.console import err, fail
from facelens.cli.defaults import load_params_or_default, tracking_uri

__all__ = [
    "ROWS_PER_CALL",
    "TASKS",
    "DetectOption",
    "DeviceOption",
    "MarginOption",
    "ModelOption",
    "TaskOption",
    "load_model",
    "model_uri",
    "run_model",
]

TASKS = ("expression", "attributes")
#: Rows sent to the pyfunc per call (its per-request limit, ``facelens.serving.pyfunc.DEFAULT_MAX_ROWS``).
ROWS_PER_CALL = 64
#: Download folders of the models loaded by this process (each removed at exit).
_DOWNLOADS: list = []

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="MLflow model URI (models:/name@alias, models:/name/3, runs:/<id>/model, a local "
        "model folder) or a run id; default models:/<registry.model_name>@<registry.champion_alias> "
        "of ./params.yaml (models:/facelens-<task>@champion).",
    ),
]
TaskOption = Annotated[
    str, typer.Option("--task", help="expression | attributes: picks the default model.")
]
DetectOption = Annotated[
    bool,
    typer.Option(
        "--detect-face",
        help="Crop the largest face (OpenCV Haar cascade) with a margin before predicting.",
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto | cpu | cuda | cuda:N | mps (default: $FACELENS_DEVICE, else auto). "
        "Explanations always run in fp32.",
    ),
]
MarginOption = Annotated[
    float,
    typer.Option(
        "--margin", min=0.0, max=2.0, help="Context kept around a detected face (x face size)."
    ),
]


def model_uri(model: str | None, task: str) -> str:
    """Turn ``--model`` into an MLflow model URI (a bare run id -> ``runs:/<id>/model``)."""
    if task not in TASKS:
        raise typer.BadParameter(f"got {task!r}; allowed: {', '.join(TASKS)}", param_hint="--task")
    if model is None or not model.strip():
        return load_params_or_default(None).registry.champion_uri(task)
    text = model.strip()
    if ":" in text or "/" in text or Path(text).is_dir():
        return text
    if re.fullmatch(r"[A-Za-z0-9_\-]+", text):
        return f"runs:/{text}/model"
    raise typer.BadParameter(
        f"got {text!r}; give models:/<name>@<alias>, models:/<name>/<version>, "
        "runs:/<run_id>/model, a local model folder or a run id",
        param_hint="--model",
    )


def load_model(uri: str, device: str | None = None):  # -> mlflow.pyfunc.PyFuncModel
    """Load a pyfunc model (onto ``device`` when given: it sets ``FACELENS_DEVICE``, which the
    served model reads when it loads), exit 1 with a one-line reason when that fails.

    ``models:/<name>@<alias>`` is resolved through the MLflow registry on every call. MLflow's
    check of the model's pip requirements against this environment is skipped: it only logs
    warnings (silenced here) and scans every installed distribution (about a second).

    A model that is not a local folder is downloaded into a ``facelens-model-*`` folder of the
    system's temporary directory that is removed when the process exits (MLflow's own default
    is a ``mkdtemp`` folder that is never removed: about 60 MB left behind per call).
    """
    import logging
    import os
    import tempfile

    import mlflow.pyfunc

    if device is not None:
        from facelens.device import DEVICE_ENV, parse_device_spec
        from facelens.errors import ConfigError

        try:
            os.environ[DEVICE_ENV] = parse_device_spec(device, "--device")
        except ConfigError as exc:
            raise typer.BadParameter(
                str(exc).removeprefix("--device: "), param_hint="--device"
            ) from None

    tracking_uri()
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # keep stderr to our one-liners
    try:
        with err.status(f"loading {uri}"):
            dst = None
            if not Path(uri).is_dir():
                # kept alive with the process: the model's logged code may import lazily from it
                downloads = tempfile.TemporaryDirectory(prefix="facelens-model-")
                _DOWNLOADS.append(downloads)
                dst = downloads.name
            return mlflow.pyfunc.load_model(uri, suppress_warnings=True, dst_path=dst)
    except Exception as exc:  # MLflow raises many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"{uri}: could not load the model ({reason[:300]})")


def run_model(model, images: list[str], params: dict, progress=None) -> list[dict]:
    """Predict base64 images through the pyfunc in chunks; one dict per image, in order."""
    import pandas as pd

    rows: list[dict] = []
    for start in range(0, len(images), ROWS_PER_CALL):
        chunk = images[start : start + ROWS_PER_CALL]
        frame = model.predict(pd.DataFrame({"image": chunk}), params=params)
        for record in frame.to_dict(orient="records"):
            rows.append(
                {
                    k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in record.items()
                }
            )
        if progress is not None:
            progress(min(start + ROWS_PER_CALL, len(images)), len(images))
    return rows
