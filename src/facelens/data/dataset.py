"""Torch dataset over a prepared split, and the image transform presets.

Data are small, so :class:`FaceDataset` decodes every image once into a uint8 tensor
``(N, 3, S, S)`` and transforms whole batches at a time (see :meth:`FaceDataset.get_batch`),
which is much faster on CPU than a per-item ``DataLoader`` pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from facelens.constants import EXPRESSIONS
from facelens.errors import DataError, MissingInputError

__all__ = [
    "TASKS",
    "FaceDataset",
    "ImageTransform",
    "attribute_stats",
    "load_split",
    "load_splits",
    "make_transform",
    "target_columns",
]

#: The tasks a dataset can serve.
TASKS: tuple[str, ...] = ("expression", "attributes")

_REQUIRED = ("id", "file", "label")
_ATTR_PREFIX = "attr_"


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")


def load_split(split_csv: Path, prepared_dir: Path) -> pd.DataFrame:
    """Read a split (or manifest) CSV and check it against the prepared directory.

    Args:
        split_csv: ``data/splits/<split>.csv`` (same columns as the manifest).
        prepared_dir: the prepared dataset directory the rows' ``file`` paths are relative to.

    Returns:
        The rows, with ``id``/``identity``/``file``/``mask`` as strings (empty when missing)
        and ``label`` as a nullable integer column.

    Raises:
        MissingInputError: the CSV, the prepared directory or an image file is missing.
        DataError: a required column is missing or a label is not an integer in 0..6.
    """
    split_csv, prepared_dir = Path(split_csv), Path(prepared_dir)
    if not split_csv.is_file():
        raise MissingInputError(
            f"split file {split_csv} does not exist; run the `split` stage (dvc repro split)"
        )
    if not prepared_dir.is_dir():
        raise MissingInputError(
            f"prepared directory {prepared_dir} does not exist; run the `prepare` stage"
        )
    str_cols = ("id", "file", "identity", "source", "usage", "mask", "sha256", "phash")
    df = pd.read_csv(
        split_csv,
        dtype={c: str for c in str_cols},
        keep_default_na=False,
        na_values={"label": [""]},
    )
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise DataError(
            f"{split_csv} lacks required column(s) {missing}; it has {list(df.columns)}. "
            "Regenerate it with the `split` stage."
        )
    labels = pd.to_numeric(df["label"], errors="coerce")
    if (labels.isna() & df["label"].notna()).any():
        raise DataError(f"{split_csv} column 'label' holds a value that is not an integer")
    df["label"] = labels.astype("Int64")
    bad = df["label"].dropna()
    bad = bad[(bad < 0) | (bad >= len(EXPRESSIONS))]
    if len(bad):
        raise DataError(
            f"{split_csv} column 'label' has values outside 0..{len(EXPRESSIONS) - 1}: "
            f"{sorted(set(bad.tolist()))[:5]}"
        )
    absent = [f for f in df["file"] if not (prepared_dir / f).is_file()]
    if absent:
        raise MissingInputError(
            f"{len(absent)} image(s) listed in {split_csv} (column 'file') are missing under "
            f"{prepared_dir}, e.g. {absent[:3]}; re-run `prepare` and `split`."
        )
    return df


def load_splits(prepared_dir: Path, splits_dir: Path, names: Sequence[str]) -> list[pd.DataFrame]:
    """Read the split CSVs ``names`` (``train``, ``val``, ``test``) written by the ``split``
    stage, each checked by :func:`load_split`."""
    return [load_split(Path(splits_dir) / f"{n}.csv", Path(prepared_dir)) for n in names]


def target_columns(df: pd.DataFrame, task: str) -> list[str]:
    """Columns holding the targets of ``task``: ``["label"]`` or the ``attr_*`` columns.

    Raises:
        ValueError: unknown task, or no target column in ``df``.
    """
    _check_task(task)
    if task == "expression":
        if "label" not in df.columns:
            raise ValueError(f"task 'expression' needs a 'label' column; got {list(df.columns)}")
        return ["label"]
    cols = [c for c in df.columns if c.startswith(_ATTR_PREFIX)]
    if not cols:
        raise ValueError(
            "task 'attributes' needs attr_<name> columns but none were found "
            f"(columns: {list(df.columns)[:12]}...); use a source with attribute scores"
        )
    return cols


def attribute_stats(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-attribute mean and standard deviation (ddof=0, floored at 1e-6) as float32.

    Raises:
        ValueError: no ``attr_*`` columns, or missing values in them.
    """
    values = df[target_columns(df, "attributes")].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("attribute columns contain missing values; drop or impute those rows")
    mean = values.mean(axis=0)
    std = np.maximum(values.std(axis=0), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


class ImageTransform:
    """Batched uint8 -> normalised float transform with optional augmentation.

    Call with a uint8 (or float in 0..255) tensor ``(3, H, W)`` or ``(B, 3, H, W)`` and an
    optional ``torch.Generator``; returns float32 of the same rank at ``input_size``.
    Augmentation (``train=True`` and ``augment > 0``): horizontal flip (p=0.5), a random
    affine (rotation up to 12 deg, scale 1 +/- 0.15, shift up to 8 %, all times ``augment``:
    a random resized crop when it zooms in) and brightness/contrast/saturation jitter of up to
    ``0.3 * augment``.
    """

    def __init__(
        self,
        input_size: int,
        *,
        train: bool,
        augment: float,
        norm_mean: Sequence[float],
        norm_std: Sequence[float],
    ) -> None:
        if input_size < 8:
            raise ValueError(f"input_size must be >= 8; got {input_size}")
        if not 0.0 <= augment <= 1.0:
            raise ValueError(f"augment must be in [0, 1]; got {augment}")
        if len(norm_mean) != 3 or len(norm_std) != 3 or min(norm_std) <= 0:
            raise ValueError(
                f"norm_mean/norm_std need 3 values each (std > 0); got {norm_mean}, {norm_std}"
            )
        self.input_size = int(input_size)
        self.train = bool(train)
        self.augment = float(augment) if train else 0.0
        self.norm_mean = tuple(float(v) for v in norm_mean)
        self.norm_std = tuple(float(v) for v in norm_std)
        self._mean = torch.tensor(self.norm_mean).view(1, 3, 1, 1)
        self._std = torch.tensor(self.norm_std).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return (
            f"ImageTransform(input_size={self.input_size}, train={self.train}, "
            f"augment={self.augment}, norm_mean={self.norm_mean}, norm_std={self.norm_std})"
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (3, H, W) or (B, 3, H, W) images; got {tuple(x.shape)}")
        x = x.float().div_(255.0)  # (B, 3, H, W) in 0..1
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        if self.augment > 0:
            x = self._augment(x, generator)
        x = (x - self._mean) / self._std
        return x[0] if single else x

    def _augment(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        b, s = x.shape[0], self.augment

        def uniform(low: float, high: float, n: int = b) -> Tensor:
            return torch.rand(n, generator=gen) * (high - low) + low

        flip = torch.rand(b, generator=gen) < 0.5
        angle = uniform(-12.0, 12.0) * s * math.pi / 180.0
        scale = 1.0 + uniform(-0.15, 0.15) * s
        tx, ty = uniform(-0.08, 0.08) * s * 2, uniform(-0.08, 0.08) * s * 2
        # Output -> input sampling grid: rotate/scale, flip x, shift (normalised coordinates).
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        sign = torch.where(flip, -1.0, 1.0)
        theta = torch.stack(
            [torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1
        )  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        j = 0.3 * s
        bright = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        contrast = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        sat = uniform(1 - j, 1 + j).view(b, 1, 1, 1)
        x = x * bright
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(
            dim=(2, 3), keepdim=True
        )
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * sat + gray
        return x.clamp_(0.0, 1.0)


def make_transform(
    input_size: int,
    *,
    train: bool,
    augment: float,
    norm_mean: Sequence[float],
    norm_std: Sequence[float],
) -> ImageTransform:
    """Build the image transform preset.

    Args:
        input_size: output side in pixels.
        train: whether augmentation may apply.
        augment: augmentation strength in [0, 1]; 0 means none.
        norm_mean: per-channel mean for normalisation (0..1 scale).
        norm_std: per-channel standard deviation.

    Returns:
        An :class:`ImageTransform` taking ``(3, H, W)`` or ``(B, 3, H, W)`` uint8 tensors
        (and an optional ``torch.Generator``).
    """
    return ImageTransform(
        input_size, train=train, augment=augment, norm_mean=norm_mean, norm_std=norm_std
    )


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


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
    """

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
            ValueError: unknown task, missing labels for ``expression``, missing/invalid
                attribute values, or mismatched ``target_stats``.
        """
        _check_task(task)
        root = Path(root)
        self.rows = rows.reset_index(drop=True).copy()
        self.task = task
        self.input_size = int(input_size)
        self.transform = transform
        n = len(self.rows)
        self.ids: list[str] = [str(v) for v in self.rows["id"]]
        labels = pd.to_numeric(self.rows.get("label", pd.Series([None] * n)), errors="coerce")
        self.labels = labels.fillna(-1).to_numpy(dtype=np.int64)
        raw, names = _targets(self.rows, task, self.labels, self.ids)
        self.raw_targets: np.ndarray = raw
        self.target_names: list[str] = names
        self.target_stats = _check_stats(target_stats, raw, task)
        self.targets: Tensor = _standardise(raw, task, self.target_stats)
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
        _check_task(task)
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
        self.target_stats = _check_stats(target_stats, raw, task)
        self.targets = _standardise(raw, task, self.target_stats)
        return self

    def with_transform(self, transform: Callable[..., Tensor] | None) -> FaceDataset:
        """A shallow copy sharing the decoded images but applying ``transform``."""
        other = self.__class__.__new__(self.__class__)
        other.__dict__.update(self.__dict__)
        other.transform = transform
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
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._apply(self.images[idx], generator), self.targets[idx]

    def describe(self) -> dict[str, Any]:
        """Small JSON-friendly summary (size, task, input size, transform)."""
        return {
            "n": len(self),
            "task": self.task,
            "input_size": self.input_size,
            "transform": repr(self.transform),
            "num_targets": len(self.target_names),
        }


def _targets(
    rows: pd.DataFrame, task: str, labels: np.ndarray, ids: list[str]
) -> tuple[np.ndarray, list[str]]:
    if task == "expression":
        if "label" not in rows.columns:
            raise ValueError("task 'expression' needs a 'label' column in the rows")
        unknown = np.flatnonzero(labels < 0)
        if len(unknown):
            raise ValueError(
                f"task 'expression' needs a label for every row; {len(unknown)} row(s) have "
                f"none (e.g. ids {[ids[i] for i in unknown[:3]]}). Filter them out or use "
                "task 'attributes'."
            )
        if (labels >= len(EXPRESSIONS)).any():
            raise ValueError(f"labels must be in 0..{len(EXPRESSIONS) - 1}; got {labels.max()}")
        return labels.copy(), list(EXPRESSIONS)
    cols = target_columns(rows, task)
    values = rows[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    if np.isnan(values).any():
        r, c = np.argwhere(np.isnan(values))[0]
        raise ValueError(
            f"attribute column {cols[c]!r} has a missing or non-numeric value (row id "
            f"{ids[r]}); every row needs every attribute"
        )
    return values, [c.removeprefix(_ATTR_PREFIX) for c in cols]


def _check_stats(
    stats: tuple[np.ndarray, np.ndarray] | None, raw: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray] | None:
    if stats is None or task == "expression":
        return None
    mean = np.asarray(stats[0], np.float32).reshape(-1)
    std = np.asarray(stats[1], np.float32).reshape(-1)
    if mean.shape != (raw.shape[1],) or std.shape != (raw.shape[1],) or (std <= 0).any():
        raise ValueError(
            f"target_stats must be (mean, std) with {raw.shape[1]} values each and std > 0; "
            f"got shapes {mean.shape}, {std.shape}"
        )
    return mean, std


def _standardise(raw: np.ndarray, task: str, stats: tuple[np.ndarray, np.ndarray] | None) -> Tensor:
    if task == "expression":
        return torch.from_numpy(raw.astype(np.int64))
    if stats is None:
        return torch.from_numpy(raw.astype(np.float32))
    return torch.from_numpy(((raw - stats[0]) / stats[1]).astype(np.float32))
