"""Named Grad-CAM target layers: which block's last ReLU ``auto`` picks for an input size.

:meth:`~facelens.models.vgg.FaceVGG.gradcam_layers` keys the layers ``block1`` .. ``block5``.
"""

from __future__ import annotations

__all__ = ["default_cam_layer", "resolve_cam_layer"]

#: Smallest block-5 map side (input / 16) at which block 5 is the default Grad-CAM layer.
_MIN_BLOCK5_MAP = 7


def default_cam_layer(input_size: int) -> str:
    """The Grad-CAM layer for ``auto``: ``block5`` when its maps are at least 7 x 7 (input
    >= 112 px, as at ImageNet's 224 px), else ``block4``.

    At 64 px block 5's maps are 4 x 4: one cell covers a quarter of the face, too coarse to
    separate the mouth from the brows; block 4's are 8 x 8.
    """
    return "block5" if int(input_size) // 16 >= _MIN_BLOCK5_MAP else "block4"


def resolve_cam_layer(layer: str, input_size: int) -> str:
    """``layer`` itself, or :func:`default_cam_layer` when it is ``auto``."""
    return default_cam_layer(input_size) if layer == "auto" else layer
