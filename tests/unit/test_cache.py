"""Frozen-prefix activation cache: equivalence with the uncached forward, keys, reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facelens.data.dataset import FaceDataset
from facelens.data.transforms import make_transform
from facelens.models.cache import ActivationCache, cache_key, prefix_digest
from facelens.models.vgg import FaceVGG, apply_freeze

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _dataset(n: int = 6, augment: float = 0.0) -> FaceDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    tf = make_transform(32, train=augment > 0, augment=augment, norm_mean=NORM[0], norm_std=NORM[1])
    return FaceDataset.from_tensors(images, torch.arange(n) % 7, "expression", transform=tf)


def _model(k: int) -> FaceVGG:
    torch.manual_seed(0)
    model = FaceVGG("vgg16_bn", num_outputs=7).eval()
    apply_freeze(model, 5 - k)
    return model


def test_cache_key_is_stable_and_sensitive() -> None:
    a = cache_key(arch="vgg16", input_size=32, split="train")
    assert a == cache_key(split="train", input_size=32, arch="vgg16")
    assert a != cache_key(arch="vgg16", input_size=64, split="train")
    assert len(a) == 64


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 2e-2)])
def test_cached_forward_matches_uncached(tmp_path: Path, dtype: torch.dtype, tol: float) -> None:
    k = 4
    model, ds = _model(k), _dataset()
    cache = ActivationCache(tmp_path, dtype=dtype)
    cached = cache.get_or_compute(model, k, ds, key_fields={"split": "train"})
    acts, targets = cached.tensors
    assert acts.dtype == dtype and acts.shape == (6, 512, 2, 2)
    assert torch.equal(targets, ds.targets)
    x, _ = ds.get_batch(torch.arange(len(ds)))
    with torch.no_grad():
        direct = model(x)
        via_cache = model.forward_from(acts.float(), k)
    torch.testing.assert_close(via_cache, direct, atol=tol, rtol=tol)


def test_reuse_from_memo_and_disk(tmp_path: Path) -> None:
    model, ds = _model(3), _dataset()
    cache = ActivationCache(tmp_path)
    first = cache.get_or_compute(model, 3, ds, key_fields={"split": "val"})
    assert (cache.misses, cache.hits) == (1, 0)
    assert cache.get_or_compute(model, 3, ds, key_fields={"split": "val"}) is first
    assert cache.hits == 1
    assert len(list(tmp_path.glob("*.pt"))) == 1

    fresh = ActivationCache(tmp_path)  # another process: reads the file
    again = fresh.get_or_compute(model, 3, ds, key_fields={"split": "val"})
    assert (fresh.misses, fresh.hits) == (0, 1)
    assert torch.equal(again.tensors[0], first.tensors[0])


def test_key_changes_with_frozen_weights_k_and_fields(tmp_path: Path) -> None:
    model, ds = _model(2), _dataset()
    cache = ActivationCache(tmp_path)
    key = cache.key_for(model, 2, ds, {"split": "train"})
    assert key != cache.key_for(model, 3, ds, {"split": "train"})
    assert key != cache.key_for(model, 2, ds, {"split": "val"})
    digest = prefix_digest(model, 2)
    with torch.no_grad():
        model.blocks[1][0].weight.add_(1.0)
    changed = prefix_digest(model, 2)
    assert changed != digest
    assert cache.key_for(model, 2, ds, {"split": "train"}) != key
    with torch.no_grad():
        model.blocks[4][0].weight.add_(1.0)  # not part of the prefix
    assert prefix_digest(model, 2) == changed
    other = _dataset(n=5)
    assert cache.key_for(model, 2, other, {"split": "train"}) != cache.key_for(
        model, 2, ds, {"split": "train"}
    )


def test_key_changes_with_target_standardisation(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    raw = np.arange(8, dtype=np.float32).reshape(4, 2)
    a = FaceDataset.from_tensors(images, raw, "attributes", target_stats=(raw.mean(0), raw.std(0)))
    b = FaceDataset.from_tensors(
        images, raw, "attributes", target_stats=(raw.mean(0), 2 * raw.std(0))
    )
    cache, model = ActivationCache(tmp_path), _model(4)
    assert cache.key_for(model, 4, a, {}) != cache.key_for(model, 4, b, {})


def test_rejects_augmentation_and_bad_k(tmp_path: Path) -> None:
    cache = ActivationCache(tmp_path)
    with pytest.raises(ValueError, match="augment"):
        cache.get_or_compute(_model(4), 4, _dataset(augment=0.5), key_fields={})
    with pytest.raises(ValueError, match=r"1\.\.5"):
        cache.get_or_compute(_model(4), 0, _dataset(), key_fields={})
