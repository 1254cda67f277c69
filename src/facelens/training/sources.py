"""Batch sources for the loops: images (transformed per batch) or cached frozen-prefix
activations, and the split of a permutation into batches."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset, default_collate

from facelens.data.transforms import ImageTransform, make_transform
from facelens.device import stage_tensor
from facelens.models.vgg import FaceVGG

__all__ = ["ActivationSource", "BatchSource", "ImageSource", "batch_chunks", "eval_view"]


class ImageSource:
    """Images of a dataset, batched through ``get_batch`` when it has one.

    On an accelerator, a dataset that can be staged (``FaceDataset.staged``) has its uint8
    images moved there once, so slicing and augmentation run on the device and only indices
    cross the bus; the CPU uses the dataset as it is.
    """

    def __init__(self, ds: Dataset, device: torch.device | None = None) -> None:
        staged = getattr(ds, "staged", None)
        self.ds = staged(device) if device is not None and callable(staged) else ds
        self.n = len(ds)  # type: ignore[arg-type]
        self.fn: Callable[[Tensor], Tensor] | None = None

    def batch(self, idx: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        get_batch = getattr(self.ds, "get_batch", None)
        if callable(get_batch):
            x, y = get_batch(idx, gen)
        else:
            x, y = default_collate([self.ds[int(i)] for i in idx])[:2]
        return x.contiguous(memory_format=torch.channels_last), y  # the layout of the model

    def forward(self, model: FaceVGG, x: Tensor) -> Tensor:
        return model(x) if self.fn is None else self.fn(x)

    def compile(self, model: FaceVGG) -> None:
        """Run the forward pass through ``torch.compile(model)`` (parameters shared)."""
        self.fn = torch.compile(model)


class ActivationSource:
    """Cached activations after block ``k`` (``TensorDataset(acts, targets)``), kept in the
    device's memory when they fit there (:func:`~facelens.device.stage_tensor`)."""

    def __init__(self, ds: TensorDataset, k: int, device: torch.device | None = None) -> None:
        acts, targets = ds.tensors
        dev = device or torch.device("cpu")
        self.acts, self.targets = stage_tensor(acts, dev), stage_tensor(targets, dev)
        self.k = k
        self.n = len(ds)
        self.fn: Callable[[Tensor], Tensor] | None = None

    def batch(self, idx: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        idx = idx.to(self.acts.device)
        x = self.acts[idx].float().contiguous(memory_format=torch.channels_last)
        return x, self.targets[idx]

    def forward(self, model: FaceVGG, x: Tensor) -> Tensor:
        return model.forward_from(x, self.k) if self.fn is None else self.fn(x)

    def compile(self, model: FaceVGG) -> None:
        """Run the forward pass through ``torch.compile`` of ``model.forward_from``."""
        self.fn = torch.compile(partial(model.forward_from, k=self.k))


BatchSource = ImageSource | ActivationSource


def batch_chunks(order: Tensor, batch_size: int) -> list[Tensor]:
    """Split ``order`` into batches; a trailing batch of one joins the previous (BatchNorm)."""
    parts = list(torch.split(order, batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2] = torch.cat([parts[-2], parts.pop()])
    return parts


def eval_view(ds: Dataset) -> Dataset:
    """The dataset without augmentation (predictions and validation must be deterministic)."""
    transform = getattr(ds, "transform", None)
    if isinstance(transform, ImageTransform) and transform.augment > 0:
        plain = make_transform(
            transform.input_size,
            train=False,
            augment=0.0,
            norm_mean=transform.norm_mean,
            norm_std=transform.norm_std,
        )
        return ds.with_transform(plain)  # type: ignore[attr-defined]
    return ds
