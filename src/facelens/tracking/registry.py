"""The model registry: registration, the champion / challenger aliases and the promotion rule.

A logged model (:func:`facelens.serving.log_model.log_pyfunc_model`) is registered as
``facelens-expression`` or ``facelens-attributes`` (``registry.model_name``); the new version
gets the challenger alias, and :func:`promote` moves the champion alias only when
:func:`decide_promotion` (a pure function) says the new version beats the champion on the
validation metric of the same data version.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from facelens.errors import ConfigError

__all__ = ["Champion", "decide_promotion", "promote", "register"]

#: Version tags written by :func:`promote` and compared between versions.
_TAG_METRIC, _TAG_VALUE, _TAG_DATA = "metric", "metric_value", "data_version"


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
        ConfigError: ``name`` is not a plain identifier.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(
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


@dataclass(frozen=True)
class Champion:
    """The current champion version and the tags :func:`promote` wrote on it."""

    version: str
    tags: Mapping[str, str]


def decide_promotion(
    version: str,
    *,
    metric_name: str,
    metric_value: float,
    data_version: str,
    champion: Champion | None,
    higher_is_better: bool = True,
) -> tuple[bool, str, float | None]:
    """Whether a new version takes the champion alias (pure: no registry access).

    It does when there is no champion, when the champion was evaluated on another data
    version or with another metric (not comparable), when its value is missing, or when it
    is strictly worse than ``metric_value``. Ties keep the champion.

    Returns:
        ``(promote, reason, champion_metric_value)``.
    """
    if champion is None:
        return True, "no champion yet", None
    if champion.version == version:
        return False, f"v{version} is already the champion", None
    champion_value = _as_float(champion.tags.get(_TAG_VALUE))
    if champion.tags.get(_TAG_DATA) != data_version:
        old = champion.tags.get(_TAG_DATA, "unknown")
        reason = f"data version changed ({old} -> {data_version}); the champion's metric is not comparable"
        return True, reason, champion_value
    if champion.tags.get(_TAG_METRIC) != metric_name:
        old = champion.tags.get(_TAG_METRIC, "unknown")
        reason = f"metric changed ({old} -> {metric_name}); the champion's metric is not comparable"
        return True, reason, champion_value
    if champion_value is None:
        return True, "the champion has no valid metric_value tag", None
    better = metric_value > champion_value if higher_is_better else metric_value < champion_value
    word = "beats" if better else "does not beat"
    reason = (
        f"{metric_name}={metric_value:.6g} {word} champion v{champion.version} "
        f"({champion_value:.6g}) on data {data_version}"
    )
    return better, reason, champion_value


def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    metric_name: str,
    metric_value: float,
    data_version: str,
    higher_is_better: bool = True,
    challenger_alias: str = "challenger",
    champion_alias: str = "champion",
) -> dict[str, Any]:
    """Tag a new version, give it ``challenger_alias``, and ``champion_alias`` if it wins
    (:func:`decide_promotion`).

    Args:
        client: an MLflow client for the registry.
        name: registered model name.
        version: the new version.
        metric_name: the validation metric (e.g. ``val_metric``).
        metric_value: its value for the new version.
        data_version: the version of the data the metric was measured on.
        higher_is_better: direction of the metric.
        challenger_alias: ``registry.challenger_alias``.
        champion_alias: ``registry.champion_alias``.

    Returns:
        The decision: ``name``, ``version``, ``aliases`` (of the new version),
        ``champion_version``, ``previous_champion_version``, ``decision`` (``promoted`` /
        ``kept``), ``reason``, ``metric_name``, ``metric_value``, ``champion_metric_value``,
        ``data_version``, ``higher_is_better``.

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
    client.set_registered_model_alias(name, challenger_alias, version)
    current = _version_by_alias(client, name, champion_alias)
    champion = None if current is None else Champion(str(current.version), current.tags or {})
    win, reason, champion_value = decide_promotion(
        version,
        metric_name=metric_name,
        metric_value=metric_value,
        data_version=data_version,
        champion=champion,
        higher_is_better=higher_is_better,
    )
    if win:
        client.set_registered_model_alias(name, champion_alias, version)
    previous = champion.version if champion is not None else None
    return {
        "name": name,
        "version": version,
        "aliases": sorted(client.get_model_version(name, version).aliases or []),
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
