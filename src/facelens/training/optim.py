"""The optimizer and learning-rate schedule a :class:`~facelens.training.params.TrainParams`
names."""

from __future__ import annotations

import torch
from torch import nn

from facelens.training.params import TrainParams

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(params: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
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
            max_lr=params.lr,
            total_steps=max(total_steps, 2),
            cycle_momentum=params.optimizer != "rmsprop",
        )
    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
