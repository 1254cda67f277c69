"""The optimizer and learning-rate schedule a :class:`~facelens.training.params.TrainParams`
names."""

from __future__ import annotations

import torch
from torch import nn

from facelens.training.params import TrainParams

__all__ = ["make_optimizer", "make_scheduler"]


def _groups(params: TrainParams, model: nn.Module) -> list[dict]:
    """One parameter group, or two when the backbone learns at ``backbone_lr_mult`` x the
    head's rate (the convolutional blocks first, the head second)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params.backbone_lr_mult == 1.0:
        return [{"params": [p for _, p in named], "lr": params.lr}]
    backbone = [p for n, p in named if n.startswith("blocks.")]
    head = [p for n, p in named if not n.startswith("blocks.")]
    groups = [{"params": backbone, "lr": params.lr * params.backbone_lr_mult}] if backbone else []
    return [*groups, {"params": head, "lr": params.lr}]


def make_optimizer(params: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``params`` over ``model``'s trainable parameters (see :func:`_groups`)."""
    trainable = _groups(params, model)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            trainable, lr=params.lr, momentum=0.9, nesterov=True, weight_decay=params.weight_decay
        )
    return torch.optim.RMSprop(trainable, lr=params.lr, weight_decay=params.weight_decay)


def make_scheduler(
    params: TrainParams, opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if params.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=[group["lr"] for group in opt.param_groups],
            total_steps=max(total_steps, 2),
            cycle_momentum=params.optimizer != "rmsprop",
        )
    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
