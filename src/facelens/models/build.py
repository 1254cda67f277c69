"""Build a :class:`~facelens.models.vgg.FaceVGG` from the ``model`` params: weights, seed,
freeze policy."""

from __future__ import annotations

import torch

from facelens.models.params import ModelParams
from facelens.models.vgg import FaceVGG, Head, apply_freeze
from facelens.models.weights import load_weights_into, resolve_weights

__all__ = ["build_model"]


def build_model(
    params: ModelParams,
    *,
    num_outputs: int,
    head: Head = "pooled",
    dropout: float = 0.3,
    trainable_blocks: int = 5,
    seed: int | None = None,
) -> tuple[FaceVGG, str]:
    """Build a :class:`FaceVGG` with weights per ``params.weights`` and the freeze policy applied.

    Args:
        params: the ``model`` params section.
        num_outputs: output width (7 for expression, number of attributes otherwise).
        head: ``classifier`` or ``pooled``.
        dropout: dropout probability in the head.
        trainable_blocks: trailing blocks to train (0..5); the rest are frozen.
        seed: seed for the random initialisation (global RNG untouched); ``None`` uses
            the global torch RNG.

    Returns:
        ``(model, weights_source)``; see :func:`resolve_weights` for the labels.
    """
    state, source = resolve_weights(params.arch, params.weights, params.pretrained)
    if seed is None:
        model = FaceVGG(params.arch, num_outputs=num_outputs, head=head, dropout=dropout)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FaceVGG(params.arch, num_outputs=num_outputs, head=head, dropout=dropout)
    if state is not None:
        load_weights_into(model, state)
    apply_freeze(model, trainable_blocks)
    return model, source
