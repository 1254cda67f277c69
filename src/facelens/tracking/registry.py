"""Model logging, registration and the champion / challenger aliases.

A trained model is logged as an MLflow pyfunc (:class:`facelens.serving.pyfunc.FaceLensModel`
around the exported directory), registered as ``facelens-expression`` or
``facelens-attributes``, and :func:`promote` moves the ``champion`` alias only when the new
version beats the champion on the validation metric of the same data version.
"""

from __future__ import annotations

import base64
import io
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

import facelens

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "SERVING_REQUIREMENTS",
    "log_pytorch_pyfunc",
    "promote",
    "register",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Version tags written by :func:`promote` and compared between versions.
_TAG_METRIC, _TAG_VALUE, _TAG_DATA = "metric", "metric_value", "data_version"
#: Distributions the served model imports (facelens itself travels as code).
SERVING_REQUIREMENTS: tuple[str, ...] = (
    "mlflow",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pillow",
    "pydantic",
    "pyyaml",
)


_ENTRY_SCRIPT = """\
import mlflow

from facelens.serving.pyfunc import FaceLensModel

mlflow.models.set_model(FaceLensModel())
"""


def _pinned(packages: Sequence[str]) -> list[str]:
    out = []
    for package in packages:
        try:
            version = metadata.version(package).split("+", 1)[0]  # drop "+cpu" local tags
        except metadata.PackageNotFoundError:
            out.append(package)
        else:
            out.append(f"{package}=={version}")
    return out


def _example_frame(input_size: int) -> Any:
    import pandas as pd
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (input_size, input_size), (128, 128, 128)).save(buf, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode("ascii")]})


def log_pytorch_pyfunc(
    model_dir: Path,
    *,
    name: str = "model",
    input_example: Any = None,
    signature: Any = None,
    model_config: Mapping[str, Any] | None = None,
    extra_pip_requirements: Sequence[str] = (),
) -> ModelInfo:
    """Log an exported model directory as an MLflow pyfunc in the active run.

    The model is logged "from code" (a three-line script that builds
    :class:`~facelens.serving.pyfunc.FaceLensModel`; nothing is pickled), the facelens
    package is shipped with it (``code_paths``) and the serving dependencies are pinned to
    the installed versions, so it loads with ``mlflow.pyfunc.load_model`` and serves with
    ``mlflow models serve``.

    Args:
        model_dir: the directory written by ``export_model`` (``state_dict.pt``, ``meta.json``).
        name: the logged model's name in the run.
        input_example: a DataFrame with an ``image`` column; default: one grey PNG.
        signature: an MLflow signature; default: :func:`~facelens.serving.pyfunc.model_signature`.
        model_config: decoder limits / batch size for :class:`FaceLensModel`.
        extra_pip_requirements: more requirement specifiers to record.

    Returns:
        The :class:`mlflow.models.model.ModelInfo` (``model_uri`` is what :func:`register` takes).

    Raises:
        FileNotFoundError: ``model_dir`` is not an exported model.
    """
    from facelens.models.vgg import ModelMeta
    from facelens.serving.pyfunc import model_signature

    model_dir = Path(model_dir)
    meta_file = model_dir / "meta.json"
    if not (meta_file.is_file() and (model_dir / "state_dict.pt").is_file()):
        raise FileNotFoundError(
            f"{model_dir} is not an exported facelens model (needs meta.json and "
            "state_dict.pt); pass the directory written by the train stage"
        )
    meta = ModelMeta.from_json(meta_file.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        # "Models from code": MLflow stores this script instead of a pickled object, so
        # loading the model runs no unpickling (safer, and robust to class changes).
        entry = Path(tmp) / "facelens_model.py"
        entry.write_text(_ENTRY_SCRIPT)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(facelens.__file__).parent)],
            pip_requirements=[*_pinned(SERVING_REQUIREMENTS), *extra_pip_requirements],
            signature=signature if signature is not None else model_signature(meta),
            input_example=input_example
            if input_example is not None
            else _example_frame(meta.input_size),
            model_config=dict(model_config) if model_config else None,
        )


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def register(model_uri: str, name: str, *, tags: Mapping[str, Any] | None = None) -> ModelVersion:
    """Register a logged model as a new version of ``name``.

    Args:
        model_uri: ``ModelInfo.model_uri`` (``models:/<id>``) or ``runs:/<run>/<name>``.
        name: registered model name, e.g. ``facelens-expression``.
        tags: version tags (stringified).

    Returns:
        The new :class:`ModelVersion`.

    Raises:
        ValueError: ``name`` is not a plain identifier.
    """
    if not _NAME_RE.match(name):
        raise ValueError(
            f"registered model name {name!r} is not allowed; use letters, digits, '_', '-' "
            "and '.', e.g. 'facelens-expression'"
        )
    return mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()})


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _as_float(value: str | None) -> float | None:
    try:
        out = float(value) if value is not None else None
    except ValueError:
        return None
    return out if out is not None and math.isfinite(out) else None


def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    metric_name: str,
    metric_value: float,
    data_version: str,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Tag a new version, make it ``challenger`` and ``champion`` if it wins.

    The version gets the tags ``metric``, ``metric_value`` and ``data_version`` and the alias
    ``challenger``. ``champion`` moves to it when there is no champion, when the champion was
    evaluated on another data version or with another metric (not comparable), or when its
    value is missing, or strictly worse than ``metric_value``. Ties keep the champion.

    Args:
        client: an MLflow client for the registry.
        name: registered model name.
        version: the new version.
        metric_name: the validation metric (e.g. ``val_macro_f1``, ``val_mean_r``).
        metric_value: its value for the new version.
        data_version: the dataset hash (DVC md5) the metric was measured on.
        higher_is_better: direction of the metric.

    Returns:
        The decision: ``name``, ``version``, ``aliases`` (of the new version), ``champion_version``,
        ``previous_champion_version``, ``decision`` (``promoted`` / ``kept``), ``reason``,
        ``metric_name``, ``metric_value``, ``champion_metric_value``, ``data_version``,
        ``higher_is_better``.

    Raises:
        ValueError: ``metric_value`` is not a finite number.
    """
    version = str(version)
    metric_value = float(metric_value)
    if not math.isfinite(metric_value):
        raise ValueError(
            f"metric_value must be finite to compare versions, got {metric_value} for "
            f"{name} v{version}; check the evaluation output"
        )
    for key, value in (
        (_TAG_METRIC, metric_name),
        (_TAG_VALUE, repr(metric_value)),
        (_TAG_DATA, data_version),
    ):
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)

    champion = _version_by_alias(client, name, CHAMPION)
    previous = str(champion.version) if champion is not None else None
    champion_value: float | None = None
    if champion is None:
        win, reason = True, "no champion yet"
    elif previous == version:
        win, reason = False, f"v{version} is already the champion"
    else:
        tags = champion.tags or {}
        champion_value = _as_float(tags.get(_TAG_VALUE))
        if tags.get(_TAG_DATA) != data_version:
            win = True
            reason = (
                f"data version changed ({tags.get(_TAG_DATA, 'unknown')} -> {data_version}); "
                "the champion's metric is not comparable"
            )
        elif tags.get(_TAG_METRIC) != metric_name:
            win = True
            reason = (
                f"metric changed ({tags.get(_TAG_METRIC, 'unknown')} -> {metric_name}); "
                "the champion's metric is not comparable"
            )
        elif champion_value is None:
            win, reason = True, "the champion has no valid metric_value tag"
        else:
            better = (
                metric_value > champion_value if higher_is_better else metric_value < champion_value
            )
            word = "beats" if better else "does not beat"
            win = better
            reason = (
                f"{metric_name}={metric_value:.6g} {word} champion v{champion.version} "
                f"({champion_value:.6g}) on data {data_version}"
            )
    if win:
        client.set_registered_model_alias(name, CHAMPION, version)
    current = client.get_model_version(name, version)
    return {
        "name": name,
        "version": version,
        "aliases": sorted(current.aliases or []),
        "champion_version": version if win else previous,
        "previous_champion_version": previous,
        "decision": "promoted" if win else "kept",
        "reason": reason,
        "metric_name": metric_name,
        "metric_value": metric_value,
        "champion_metric_value": champion_value,
        "data_version": data_version,
        "higher_is_better": higher_is_better,
    }
