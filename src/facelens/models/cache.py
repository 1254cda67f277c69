"""Frozen-prefix activation cache shared by trials and epochs.

When the first ``k`` blocks of a :class:`~facelens.models.vgg.FaceVGG` are frozen and the
images are not augmented, their activations are a pure function of (frozen weights, images,
transform). They are computed once and stored under ``root/<key>.pt`` (float16 activations
plus targets) and memoised in-process, keyed by the sha256 of the caller's fields (arch,
weights source, input size, data version, split...) plus ``k``, a hash of the frozen blocks'
tensors, the dataset size/ids and the transform — so a stale entry cannot be reused by
mistake.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from facelens._io import atomic_path, atomic_write_text, canonical_hash
from facelens.device import model_device
from facelens.interrupts import raise_if_requested
from facelens.models.vgg import FaceVGG

__all__ = ["ActivationCache", "cache_key", "prefix_digest"]

_FORMAT = 1


def cache_key(**fields: Any) -> str:
    """Stable sha256 hex digest of keyword fields (:func:`~facelens._io.canonical_hash`)."""
    return canonical_hash(fields)


def prefix_digest(model: FaceVGG, k: int) -> str:
    """sha256 (first 16 hex) of the parameters and buffers of the first ``k`` blocks."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.blocks[:k].state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _dataset_fields(data: Any) -> dict[str, Any]:
    ds = getattr(data, "dataset", data)  # a DataLoader's dataset
    out: dict[str, Any] = {"n": len(ds)}
    ids = getattr(ds, "ids", None)
    if ids is not None:
        out["ids"] = hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]
    targets = getattr(ds, "targets", None)
    if isinstance(targets, Tensor):  # e.g. attributes standardised with other statistics
        out["targets"] = hashlib.sha256(targets.contiguous().numpy().tobytes()).hexdigest()[:16]
    transform = getattr(ds, "transform", None)
    if transform is not None:
        out["transform"] = repr(transform)
    return out


def _batches(
    data: Dataset | DataLoader | Iterable, batch_size: int
) -> Iterable[tuple[Tensor, ...]]:
    if isinstance(data, DataLoader):
        yield from data
        return
    get_batch = getattr(data, "get_batch", None)
    if callable(get_batch):
        n = len(data)  # type: ignore[arg-type]
        for start in range(0, n, batch_size):
            yield get_batch(torch.arange(start, min(start + batch_size, n)))
        return
    yield from DataLoader(data, batch_size=batch_size, shuffle=False)  # type: ignore[arg-type]


class ActivationCache:
    """Disk + in-process cache of frozen-prefix activations.

    Args:
        root: directory for ``<key>.pt`` files (created on first write).
        dtype: storage dtype of activations on disk and in memory (float16 halves the size;
            float32 makes cached training bit-identical to uncached).
        memo_size: how many entries the in-process memo keeps (least recently used evicted).
        batch_size: batch size used to compute activations.
    """

    def __init__(
        self,
        root: Path,
        *,
        dtype: torch.dtype = torch.float16,
        memo_size: int = 4,
        batch_size: int = 128,
    ) -> None:
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"dtype must be float16, bfloat16 or float32; got {dtype}")
        self.root = Path(root)
        self.dtype = dtype
        self.memo_size = int(memo_size)
        self.batch_size = int(batch_size)
        self._memo: OrderedDict[str, TensorDataset] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key_for(self, model: FaceVGG, k: int, data: Any, key_fields: Mapping[str, Any]) -> str:
        """The cache key of (``key_fields``, ``k``, frozen weights, dataset, storage dtype)."""
        return cache_key(
            **dict(key_fields),
            _k=k,
            _prefix=prefix_digest(model, k),
            _data=_dataset_fields(data),
            _dtype=str(self.dtype),
            _format=_FORMAT,
        )

    def get_or_compute(
        self,
        model: FaceVGG,
        k: int,
        loader_or_dataset: Dataset | DataLoader,
        *,
        key_fields: Mapping[str, Any],
    ) -> TensorDataset:
        """Activations after block ``k`` for every item, with their targets.

        Args:
            model: the model whose first ``k`` blocks are frozen.
            k: number of frozen blocks (1..5).
            loader_or_dataset: a dataset yielding ``(image, target)`` (a ``FaceDataset`` is
                batched through ``get_batch``) or a non-shuffling ``DataLoader``; it must not
                augment.
            key_fields: identity of the data and backbone (arch, weights source, input size,
                data version, split...).

        Returns:
            ``TensorDataset(acts, targets)`` with ``acts`` ``(N, C, h, w)`` in the cache dtype.

        Raises:
            ValueError: ``k`` outside 1..5, or an augmenting dataset.
        """
        if not 1 <= k <= 5:
            raise ValueError(f"k must be in 1..5 (number of frozen blocks); got {k}")
        transform = getattr(
            getattr(loader_or_dataset, "dataset", loader_or_dataset), "transform", None
        )
        if getattr(transform, "augment", 0.0):
            raise ValueError(
                "cannot cache activations of an augmenting dataset (transform.augment > 0); "
                "use augment=0 or train without the cache"
            )
        key = self.key_for(model, k, loader_or_dataset, key_fields)
        if key in self._memo:
            self._memo.move_to_end(key)
            self.hits += 1
            return self._memo[key]
        path = self.root / f"{key}.pt"
        result: TensorDataset | None = None
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                result = TensorDataset(blob["acts"], blob["targets"])
                self.hits += 1
            except Exception:  # partial or corrupt file: recompute and overwrite
                result = None
        if result is None:
            self.misses += 1
            result = self._compute(model, k, loader_or_dataset)
            self._write(path, result, dict(key_fields), k)
        self._memo[key] = result
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)
        return result

    def _compute(self, model: FaceVGG, k: int, data: Any) -> TensorDataset:
        was_training = model.training
        model.eval()
        device = model_device(model)
        acts: list[Tensor] = []
        targets: list[Tensor] = []
        try:
            with torch.no_grad():  # not inference_mode: the acts feed autograd later
                for batch in _batches(data, self.batch_size):
                    raise_if_requested()
                    x, y = batch[0], batch[1]
                    x = x.to(device).contiguous(memory_format=torch.channels_last)
                    a = model.forward_prefix(x, k)
                    acts.append(a.to(self.dtype).contiguous().cpu())
                    targets.append(torch.as_tensor(y))
        finally:
            model.train(was_training)
        # The caller may compute inside a bf16 autocast region, where the CPU's autocast
        # refuses to concatenate the float16 pieces ("Unexpected floating ScalarType").
        with torch.autocast("cpu", enabled=False):
            return TensorDataset(torch.cat(acts), torch.cat(targets))

    def _write(self, path: Path, ds: TensorDataset, fields: dict[str, Any], k: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        acts, targets = ds.tensors
        blob = {"acts": acts, "targets": targets, "k": torch.tensor(k)}
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
        sidecar = path.with_suffix(".json")
        atomic_write_text(sidecar, json.dumps({"k": k, **fields}, sort_keys=True, default=repr))

    def clear_memo(self) -> None:
        """Forget the in-process memo (disk entries stay)."""
        self._memo.clear()
