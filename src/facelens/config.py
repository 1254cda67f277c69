"""Typed, closed parameters: the only reader of ``params.yaml``.

Every section of ``params.yaml`` has one pydantic model (owned by the module that uses it);
:class:`Params` composes them. Unknown keys and wrong types fail with the key's dotted name::

    params.yaml: data.synth.n_identites: Extra inputs are not permitted
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.params import DataParams, SplitParams
from facelens.models.vgg import ModelParams
from facelens.training.fit import TrainParams
from facelens.tuning.space import TuneParams

__all__ = [
    "ConfigError",
    "ExplainParams",
    "ManifoldParams",
    "Params",
    "RegisterParams",
    "TrackingParams",
    "load_params",
    "params_hash",
]

DEFAULT_PARAMS_FILE = Path("params.yaml")


class ConfigError(ValueError):
    """``params.yaml`` is missing, unreadable or invalid; the message names the key."""


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingParams(_Closed):
    """Where MLflow records runs (``MLFLOW_TRACKING_URI`` in the environment wins)."""

    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI.")
    experiment: str = Field("facelens", description="MLflow experiment name.")


class RegisterParams(_Closed):
    """Model-registry policy for the ``register`` stage."""

    model_name: str | None = Field(
        None, description="Registered model name; default facelens-<task>."
    )
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"


_CamMethod = Literal[
    "gradcam",
    "gradcam++",
    "hirescam",
    "layercam",
    "xgradcam",
    "eigencam",
    "eigengradcam",
    "scorecam",
]
_CamLayer = Literal["auto", "block1", "block2", "block3", "block4", "block5"]
_Randomize = Literal["auto", "head", "block1", "block2", "block3", "block4", "block5"]


class ExplainParams(_Closed):
    """Grad-CAM explanations and their faithfulness checks (the ``explain`` stage)."""

    methods: tuple[_CamMethod, ...] = Field(
        ("gradcam", "gradcam++", "hirescam", "layercam", "eigencam", "scorecam"),
        min_length=1,
        description="CAM methods (facelens.explain.cams.METHODS); the first is the headline.",
    )
    layer: _CamLayer = Field(
        "auto",
        description="Target layer: the last ReLU of this block; auto = block5 when its maps are "
        ">= 7x7 (input >= 112 px), else block4.",
    )
    target: str = Field(
        "predicted", description="Expression target: predicted | true | an expression name."
    )
    per_class: int = Field(3, ge=1, le=20, description="Expression probe images per class.")
    attribute_probes: int = Field(
        12, ge=1, le=64, description="Attributes task: number of fixed probe images."
    )
    attributes: tuple[str, ...] = Field(
        ("trustworthy", "aggressive", "happy", "attractive"),
        min_length=1,
        description="Attributes task: attributes explained with signed (+/-) targets.",
    )
    scorecam_images: int = Field(
        1, ge=1, le=32, description="ScoreCAM (one forward pass per channel) on this many probes."
    )
    randomize: tuple[_Randomize, ...] = Field(
        ("auto",),
        min_length=1,
        description="Sanity check: layers re-initialised; auto = head + the target block and up.",
    )
    sanity_threshold: float = Field(0.5, ge=-1.0, le=1.0)
    removal_fractions: tuple[float, ...] = Field(
        (0.2, 0.5, 0.8), min_length=1, description="ROAD: fractions of pixels removed."
    )
    road: bool = Field(True, description="ROAD deletion metrics (one sparse solve per image).")
    seed: int = 0
    batch_size: int = Field(16, ge=1)

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"methods must not repeat a method, got {list(value)}")
        return value

    @field_validator("randomize")
    @classmethod
    def _auto_alone(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "auto" in value and len(value) > 1:
            raise ValueError(f"'auto' cannot be combined with named layers, got {list(value)}")
        return value

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        allowed = ("predicted", "true", *EXPRESSIONS)
        if value not in allowed:
            raise ValueError(f"target must be one of {list(allowed)}, got {value!r}")
        return value

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [a for a in value if a not in ATTRIBUTES]
        if unknown:
            raise ValueError(
                f"unknown attribute(s) {unknown}; allowed: {list(ATTRIBUTES)} (constants.py)"
            )
        return value

    @field_validator("removal_fractions")
    @classmethod
    def _fractions_open_unit(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < f < 1.0 for f in value):
            raise ValueError(f"each removal fraction must lie in (0, 1), got {list(value)}")
        return value


class ManifoldParams(_Closed):
    """Embedding layouts of the test split (the ``manifold`` stage)."""

    methods: tuple[Literal["pca", "tsne", "umap", "umap3d"], ...] = Field(
        ("pca", "tsne", "umap", "umap3d"), min_length=1, description="umap3d = 3-D UMAP."
    )
    colour_attribute: str = Field(
        "attractive", description="Attribute pole colouring the plots (attr_<name> column)."
    )
    max_points: int = Field(600, ge=10, description="Seeded, fixed subset of the test split.")
    anchors: int = Field(300, ge=3, description="Ids aligning layouts across runs (Procrustes).")
    k: int = Field(5, ge=1, description="Neighbourhood size of trustworthiness and kNN accuracy.")
    thumbnail_size: int = Field(48, ge=8, le=256, description="Hover thumbnails (px).")
    seed: int = 0

    @field_validator("colour_attribute")
    @classmethod
    def _known_attribute(cls, value: str) -> str:
        if value not in ATTRIBUTES:
            raise ValueError(
                f"unknown attribute {value!r}; allowed: {list(ATTRIBUTES)} (constants.py)"
            )
        return value


class Params(_Closed):
    """All of ``params.yaml``."""

    task: Literal["expression", "attributes"] = "expression"
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    tune: TuneParams = TuneParams()
    train: TrainParams = TrainParams()
    tracking: TrackingParams = TrackingParams()
    registry: RegisterParams = RegisterParams()
    explain: ExplainParams = ExplainParams()
    manifold: ManifoldParams = ManifoldParams()

    @property
    def registered_model_name(self) -> str:
        """The registry name: ``registry.model_name`` or ``facelens-<task>``."""
        return self.registry.model_name or f"facelens-{self.task}"


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


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
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, str(path))


def params_hash(section: BaseModel | dict[str, Any]) -> str:
    """A stable sha256 of a params section (canonical JSON), for lineage tags and cache keys."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
