"""The CAM methods by name: one ``pytorch_grad_cam`` class per name of
:data:`facelens.explain.params.CamMethod`, the single list of names params accept.
"""

from __future__ import annotations

from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM

from facelens.explain.params import CamMethod

__all__ = [
    "GRADIENT_FREE_METHODS",
    "GUIDED_METHODS",
    "METHODS",
    "SCORECAM_MAX_IMAGES",
    "method_slug",
    "resolve_method",
]


#: Method name -> ``pytorch_grad_cam`` class; the keys are exactly the names of
#: :data:`~facelens.explain.params.CamMethod` (a unit test checks), the CLI/params spelling.
#: A method of :data:`GUIDED_METHODS` is its class's CAM times guided backpropagation.
METHODS: dict[CamMethod, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "guidedgradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "xgradcam": XGradCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "scorecam": ScoreCAM,
}


#: Methods that need no backward pass (EigenCAM: first principal component of the activations;
#: ScoreCAM: one forward pass per activation channel).
GRADIENT_FREE_METHODS: frozenset[str] = frozenset({"eigencam", "scorecam"})


#: Guided Grad-CAM (Selvaraju et al. 2017, the Grad-CAM paper's high-resolution map): the
#: Grad-CAM map times the guided-backpropagation saliency
#: (:func:`facelens.explain.cams.guided.guided_saliency`).
GUIDED_METHODS: frozenset[str] = frozenset({"guidedgradcam"})


#: ScoreCAM runs one forward pass per channel of the target layer for every image (512 channels
#: for VGG16 block5, i.e. about 512 VGG16 forward passes per image): refuse more images than
#: this unless the caller raises the cap explicitly.
SCORECAM_MAX_IMAGES: int = 32


_ALIASES: dict[str, str] = {
    "gradcampp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "gradcam_plusplus": "gradcam++",
    "guided_gradcam": "guidedgradcam",
    "guidedgc": "guidedgradcam",
}


def resolve_method(method: str) -> str:
    """Return the canonical name of a CAM method.

    Args:
        method: a key of :data:`METHODS` (case-insensitive; ``gradcampp`` is accepted for
            ``gradcam++``).

    Returns:
        The canonical key of :data:`METHODS`.

    Raises:
        ValueError: unknown method.
    """
    key = method.strip().lower().replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(
            f"Unknown CAM method {method!r}; allowed: {sorted(METHODS)}. "
            "Pick one of these in params.yaml (explain.methods)."
        )
    return key


def method_slug(method: str) -> str:
    """File-name form of a CAM method: ``gradcam++`` -> ``gradcampp``."""
    return method.replace("+", "p")
