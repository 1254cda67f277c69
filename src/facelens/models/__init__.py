"""VGG16 models for faces and the frozen-prefix activation cache."""

from facelens.models.cache import ActivationCache, cache_key, prefix_digest
from facelens.models.vgg import (
    DEFAULT_NORM,
    IMAGENET_NORM,
    FaceVGG,
    ModelMeta,
    ModelParams,
    WeightsUnavailable,
    apply_freeze,
    build_model,
    export_model,
    load_exported,
    norm_stats,
    resolve_weights,
    weights_file,
)

__all__ = [
    "DEFAULT_NORM",
    "IMAGENET_NORM",
    "ActivationCache",
    "FaceVGG",
    "ModelMeta",
    "ModelParams",
    "WeightsUnavailable",
    "apply_freeze",
    "build_model",
    "cache_key",
    "export_model",
    "load_exported",
    "norm_stats",
    "prefix_digest",
    "resolve_weights",
    "weights_file",
]
