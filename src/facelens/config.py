"""Typed, closed parameters: the only reader of ``params.yaml``.

Every section of ``params.yaml`` has one pydantic model that lives beside the code it
configures (``data/params.py``, ``models/params.py``, ``training/params.py``,
``tuning/params.py``, ``explain/params.py``, ``manifold/params.py``, ``tracking/params.py``);
:class:`Params` composes them, and each lower layer receives only its own section. Unknown
keys and wrong types fail with the key's dotted name::

    params.yaml: data.synth.n_identites: Extra inputs are not permitted
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from facelens.data.params import DataParams, SplitParams
from facelens.device import parse_device_spec
from facelens.errors import ConfigError
from facelens.explain.params import ExplainParams
from facelens.manifold.params import ManifoldParams
from facelens.models.params import ModelParams
from facelens.tracking.params import RegisterParams, TrackingParams
from facelens.training.params import DEFAULT_TASK, TASK_EPOCHS, PretrainParams, TrainParams
from facelens.tuning.params import TuneParams

__all__ = ["DEFAULT_PARAMS_FILE", "ConfigError", "Params", "load_params", "parse_params"]

DEFAULT_PARAMS_FILE = Path("params.yaml")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Params(_Closed):
    """All of ``params.yaml``."""

    task: Literal["expression", "attributes"] = DEFAULT_TASK
    #: ``auto | cpu | cuda | cuda:N | mps`` (see :mod:`facelens.device`). No stage lists it as
    #: a DVC param: moving to another machine does not re-run anything; the device used is a
    #: tag of every run instead.
    device: str = "auto"
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    tune: TuneParams = TuneParams()
    train: TrainParams = TrainParams()
    tracking: TrackingParams = TrackingParams()
    registry: RegisterParams = RegisterParams()
    explain: ExplainParams = ExplainParams()
    manifold: ManifoldParams = ManifoldParams()

    @field_validator("device")
    @classmethod
    def _device_spec(cls, value: str) -> str:
        return parse_device_spec(value)

    @model_validator(mode="before")
    @classmethod
    def _task_epochs(cls, data: Any) -> Any:
        """``train.epochs: auto`` becomes the task's epoch budget (:data:`TASK_EPOCHS`)."""
        if not isinstance(data, dict):
            return data
        train, task = data.get("train"), data.get("task", DEFAULT_TASK)
        if not (isinstance(train, dict) and train.get("epochs") == "auto"):
            return data
        if isinstance(task, str) and task in TASK_EPOCHS:
            return {**data, "train": {**train, "epochs": TASK_EPOCHS[task]}}
        return data  # a wrong task is reported by its own validation

    @model_validator(mode="after")
    def _pretrained_archs(self) -> Params:
        """``weights: pretrained`` needs a backbone for every arch training may build."""
        if self.model.weights == "pretrained":
            wanted = {self.model.arch, *self.tune.space.arch}
            missing = sorted(wanted - set(self.pretrain.archs))
            if missing:
                raise ValueError(
                    f"model.weights is 'pretrained' but pretrain.archs {self.pretrain.archs} "
                    f"lacks {missing} (model.arch / tune.space.arch); add them to "
                    "pretrain.archs or narrow tune.space.arch"
                )
        return self

    @property
    def registered_model_name(self) -> str:
        """The registry name: ``registry.model_name`` or ``facelens-<task>``."""
        return self.registry.name_for(self.task)


#: Longest ``got ...`` shown for an offending value (its repr is cut, never echoed whole).
_MAX_SHOWN = 120


def _format_error(err: ValidationError, source: str) -> str:
    """One line: ``source: key: reason (got value); key2: ...``, every offending key named."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = repr(got)
        if len(shown) > _MAX_SHOWN:
            shown = shown[: _MAX_SHOWN - 3] + "..."
        got_s = "" if isinstance(got, dict) else f" (got {shown})"
        msg = e["msg"].removeprefix("Value error, ")  # our own validators' words stand alone
        parts.append(f"{key}: {msg}{got_s}")
    return f"{source}: " + "; ".join(" ".join(part.split()) for part in parts)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a parsed mapping; raise :class:`ConfigError` naming each offending key."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``.

    Args:
        path: the YAML file.

    Returns:
        The validated, immutable parameters.

    Raises:
        ConfigError: the file is missing, is not YAML, or a key is unknown or of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the repository root)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}); params.yaml is a UTF-8 YAML file"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot be read ({err.strerror or type(err).__name__})"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_reason(err)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    return parse_params({} if raw is None else raw, str(path))


def _yaml_reason(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where it is."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(err).split())
