"""Torch dataset over a prepared split (the transforms are :mod:`facelens.data.transforms`).

Data are small, so :class:`FaceDataset` decodes every image once into a uint8 tensor
``(N, 3, S, S)`` and transforms whole batches at a time (see :meth:`FaceDataset.get_batch`),
which is much faster on CPU than a per-item ``DataLoader`` pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from facelens.constants import EXPRESSIONS
from facelens.data.targets import check_stats, check_task, raw_targets, standardise
from facelens.data.transforms import ImageTransform
from facelens.device import stage_tensor, to_device

__all__ = ["FaceDataset"]


def _read_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)  # (3, S, S)


def _read_mask(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode != "L":
            im = im.convert("L")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(im, dtype=np.uint8)


class FaceDataset(Dataset):
    """Images of one split, decoded once into memory, with their targets.

    Attributes:
        rows: the split rows (a copy).
        task: ``expression`` or ``attributes``.
        images: uint8 ``(N, 3, S, S)``.
        masks: uint8 ``(N, S, S)`` region bit masks, or ``None`` when no row has a mask.
        ids: image ids.
        labels: int64 expression labels ``(N,)``, -1 where unknown.
        targets: training targets: int64 labels (expression) or float32 standardised
            attributes ``(N, A)``.
        raw_targets: targets on their original scale (numpy).
        target_names: class names or attribute names (without ``attr_``).
        target_stats: ``(mean, std)`` used to standardise attributes, or ``None``.
        transform: applied by ``__getitem__`` / ``get_batch``.
        batch_device: where ``get_batch`` transforms (see :meth:`staged`); ``None``: where
            the images are.
    """

    batch_device: torch.device | None = None

    def __init__(
        self,
        rows: pd.DataFrame,
        root: Path,
        task: str,
        input_size: int,
        transform: Callable[..., Tensor] | None = None,
        target_stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Decode the images (and masks) of ``rows``.

        Args:
            rows: split rows (``load_split`` output).
            root: the prepared directory (rows' ``file``/``mask`` are relative to it).
            task: ``expression`` or ``attributes``.
            input_size: side the images are resized to when they differ.
            transform: uint8 -> float transform (``make_transform``); ``None`` scales to 0..1.
            target_stats: ``(mean, std)`` to standardise attributes (from the training split);
                ``None`` leaves them unscaled.

        Raises:
            ConfigError: unknown task.
            DataError: missing labels for ``expression``, missing/invalid attribute values.
            ValueError: mismatched ``target_stats``.
        """
        check_task(task)
        root = Path(root)
        self.rows = rows.reset_index(drop=True).copy()
        self.task = task
        self.input_size = int(input_size)
        self.transform = transform
        n = len(self.rows)
        self.ids: list[str] = [str(v) for v in self.rows["id"]]
        labels = pd.to_numeric(self.rows.get("label", pd.Series([None] * n)), errors="coerce")
        self.labels = labels.fillna(-1).to_numpy(dtype=np.int64)
        raw, names = raw_targets(self.rows, task, self.labels, self.ids)
        self.raw_targets: np.ndarray = raw
        self.target_names: list[str] = names
        self.target_stats = check_stats(target_stats, raw, task)
        self.targets: Tensor = standardise(raw, task, self.target_stats)
        size = self.input_size
        self.images: Tensor = torch.from_numpy(
            np.stack([_read_image(root / f, size) for f in self.rows["file"]])
            if n
            else np.zeros((0, 3, size, size), np.uint8)
        )
        self.masks: Tensor | None = None
        if "mask" in self.rows.columns:
            paths = [str(m) if isinstance(m, str) else "" for m in self.rows["mask"]]
            if any(paths):
                self.masks = torch.from_numpy(
                    np.stack(
                        [
                            _read_mask(root / p, size) if p else np.zeros((size, size), np.uint8)
                            for p in paths
                        ]
                    )
                )

    @classmethod
    def from_tensors(
        cls,
        images: Tensor,
        targets: Tensor | np.ndarray,
        task: str,
        *,
        transform: Callable[..., Tensor] | None = None,
        target_names: Sequence[str] | None = None,
        target_stats: tuple[np.ndarray, np.ndarray] | None = None,
        ids: Sequence[str] | None = None,
        masks: Tensor | None = None,
    ) -> FaceDataset:
        """Build a dataset from in-memory uint8 images ``(N, 3, S, S)`` and raw targets.

        Useful for tests, serving and probes. ``targets`` are labels (expression) or
        attribute values on their original scale ``(N, A)``.
        """
        check_task(task)
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be (N, 3, S, S); got {tuple(images.shape)}")
        self = cls.__new__(cls)
        n = images.shape[0]
        raw = np.asarray(targets.numpy() if isinstance(targets, Tensor) else targets)
        if len(raw) != n:
            raise ValueError(f"{n} images but {len(raw)} targets")
        self.ids = list(ids) if ids is not None else [f"{i:06d}" for i in range(n)]
        self.rows = pd.DataFrame({"id": self.ids})
        self.task = task
        self.input_size = int(images.shape[-1])
        self.transform = transform
        self.images = images.to(torch.uint8)
        self.masks = masks
        if task == "expression":
            raw = raw.astype(np.int64).reshape(-1)
            self.labels = raw.copy()
            self.target_names = list(target_names or EXPRESSIONS)
        else:
            raw = raw.astype(np.float32).reshape(n, -1)
            self.labels = np.full(n, -1, np.int64)
            self.target_names = list(target_names or [f"a{i}" for i in range(raw.shape[1])])
        self.raw_targets = raw
        self.target_stats = check_stats(target_stats, raw, task)
        self.targets = standardise(raw, task, self.target_stats)
        return self

    def with_transform(self, transform: Callable[..., Tensor] | None) -> FaceDataset:
        """A shallow copy sharing the decoded images but applying ``transform``."""
        other = self.__class__.__new__(self.__class__)
        other.__dict__.update(self.__dict__)
        other.transform = transform
        return other

    def staged(self, device: torch.device) -> FaceDataset:
        """A shallow copy whose batches are transformed on ``device``: its uint8 images and
        targets are moved there once when they fit (:func:`~facelens.device.stage_tensor`),
        else each batch's uint8 slice is copied there before the transform (a quarter of the
        bytes of the float batch). ``self`` on the CPU."""
        if device.type == "cpu":
            return self
        other = self.with_transform(self.transform)
        other.images = stage_tensor(self.images, device)
        other.targets = stage_tensor(self.targets, device)
        other.batch_device = device
        return other

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _apply(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.transform is None:
            return x.float() / 255.0
        if isinstance(self.transform, ImageTransform):
            return self.transform(x, generator)
        return self.transform(x)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._apply(self.images[index], None), self.targets[index]

    def get_batch(
        self, indices: Tensor | Sequence[int], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Transformed images ``(B, 3, S, S)`` and targets for ``indices``, in one call."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        x, y = self.images[idx], self.targets[idx]
        if self.batch_device is not None:  # staged, but too big to live on the device
            x, y = to_device(x, self.batch_device), to_device(y, self.batch_device)
        return self._apply(x, generator), y

    def describe(self) -> dict[str, Any]:
        """Small JSON-friendly summary (size, task, input size, transform)."""
        return {
            "n": len(self),
            "task": self.task,
            "input_size": self.input_size,
            "transform": repr(self.transform),
            "num_targets": len(self.target_names),
        }
