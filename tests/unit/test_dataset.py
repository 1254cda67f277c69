"""Prepared split -> FaceDataset, and the batched transform presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facelens.data.dataset import FaceDataset
from facelens.data.split_csv import load_split
from facelens.data.targets import attribute_stats, target_columns
from facelens.data.transforms import make_transform
from facelens.errors import ConfigError, DataError, MissingInputError

NORM = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.1))


def _prepared(root: Path, n: int = 5, size: int = 16, labels: bool = True) -> pd.DataFrame:
    """A tiny prepared directory with images, masks and a split CSV."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[: size // 2] = 1 | 16
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
        rows.append(
            {
                "id": f"{i:03d}",
                "file": f"images/{i:03d}.png",
                "sha256": "0" * 64,
                "phash": "0" * 16,
                "label": (i % 7) if labels else None,
                "identity": f"p{i // 2}",
                "source": "synth",
                "usage": "",
                "mask": f"masks/{i:03d}.png" if i != 1 else "",
                "attr_happy": 1.0 + i,
                "attr_trustworthy": 9.0 - 2 * i,
            }
        )
    df = pd.DataFrame(rows)
    df.to_csv(root / "train.csv", index=False)
    return df


def test_load_split_and_dataset(tmp_path: Path) -> None:
    _prepared(tmp_path)
    rows = load_split(tmp_path / "train.csv", tmp_path)
    assert rows["id"].tolist() == ["000", "001", "002", "003", "004"]
    assert str(rows["label"].dtype) == "Int64"
    ds = FaceDataset(rows, tmp_path, "expression", input_size=16)
    assert ds.images.shape == (5, 3, 16, 16) and ds.images.dtype == torch.uint8
    raw = np.asarray(Image.open(tmp_path / "images" / "002.png")).transpose(2, 0, 1)
    assert np.array_equal(ds.images[2].numpy(), raw)
    assert ds.masks is not None and ds.masks.shape == (5, 16, 16)
    assert int(ds.masks[0, 0, 0]) == 17 and int(ds.masks[1].max()) == 0  # row 1 has no mask
    assert ds.labels.tolist() == [0, 1, 2, 3, 4] and ds.targets.dtype == torch.int64
    assert ds.ids == ["000", "001", "002", "003", "004"]
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and int(y) == 3
    big = FaceDataset(rows, tmp_path, "expression", input_size=32)
    assert big.images.shape == (5, 3, 32, 32) and big.masks is not None
    assert set(big.masks.unique().tolist()) <= {0, 17}  # nearest-neighbour resize keeps bits


def test_attributes_targets_are_standardised(tmp_path: Path) -> None:
    rows = _prepared(tmp_path)
    assert target_columns(rows, "attributes") == ["attr_happy", "attr_trustworthy"]
    assert target_columns(rows, "expression") == ["label"]
    mean, std = attribute_stats(rows)
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(std, [np.std([1, 2, 3, 4, 5]), np.std([9, 7, 5, 3, 1])], rtol=1e-6)
    ds = FaceDataset(rows, tmp_path, "attributes", 16, target_stats=(mean, std))
    assert ds.target_names == ["happy", "trustworthy"]
    np.testing.assert_allclose(ds.raw_targets[:, 0], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(ds.targets.mean(0).numpy(), [0, 0], atol=1e-6)
    np.testing.assert_allclose(ds.targets.std(0, unbiased=False).numpy(), [1, 1], atol=1e-5)


def test_clear_errors(tmp_path: Path) -> None:
    rows = _prepared(tmp_path, labels=False)
    with pytest.raises(DataError, match="needs a label for every row"):
        FaceDataset(load_split(tmp_path / "train.csv", tmp_path), tmp_path, "expression", 16)
    with pytest.raises(ConfigError, match="task must be one of"):
        target_columns(rows, "age")
    with pytest.raises(DataError, match="attr_<name>"):
        target_columns(rows.drop(columns=["attr_happy", "attr_trustworthy"]), "attributes")
    rows.drop(columns=["file"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv lacks required column\(s\) \['file'\]"):
        load_split(tmp_path / "bad.csv", tmp_path)
    (tmp_path / "images" / "004.png").unlink()
    with pytest.raises(MissingInputError, match=r"images/004\.png"):
        load_split(tmp_path / "train.csv", tmp_path)
    with pytest.raises(MissingInputError, match="split file"):
        load_split(tmp_path / "nope.csv", tmp_path)


def test_eval_transform_normalises_exactly_and_batches() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
    before = x.clone()
    tf = make_transform(8, train=False, augment=1.0, norm_mean=NORM[0], norm_std=NORM[1])
    out = tf(x)
    mean = torch.tensor(NORM[0]).view(1, 3, 1, 1)
    std = torch.tensor(NORM[1]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(tf(x[1]), out[1])  # per item == batched
    assert torch.equal(x, before)  # input untouched
    assert tf(x).shape == (4, 3, 8, 8)
    assert make_transform(16, train=False, augment=0, norm_mean=NORM[0], norm_std=NORM[1])(
        x
    ).shape == (4, 3, 16, 16)


def test_train_augmentation_is_seeded_and_scaled() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8)
    tf = make_transform(16, train=True, augment=0.8, norm_mean=NORM[0], norm_std=NORM[1])
    a = tf(x, torch.Generator().manual_seed(1))
    b = tf(x, torch.Generator().manual_seed(1))
    c = tf(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = make_transform(16, train=False, augment=0, norm_mean=NORM[0], norm_std=NORM[1])(x)
    assert not torch.allclose(a, plain)
    none = make_transform(16, train=True, augment=0.0, norm_mean=NORM[0], norm_std=NORM[1])
    torch.testing.assert_close(none(x, torch.Generator().manual_seed(1)), plain)
    # values stay within the normalised image range
    lo = (0 - torch.tensor(NORM[0])) / torch.tensor(NORM[1])
    hi = (1 - torch.tensor(NORM[0])) / torch.tensor(NORM[1])
    assert (a >= lo.view(1, 3, 1, 1) - 1e-5).all() and (a <= hi.view(1, 3, 1, 1) + 1e-5).all()
    with pytest.raises(ConfigError, match="augment"):
        make_transform(16, train=True, augment=1.5, norm_mean=NORM[0], norm_std=NORM[1])


def test_flip_only_is_a_mirror() -> None:
    """With a tiny strength the affine is ~identity, so a changed image must be a mirror."""
    x = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8).repeat(16, 1, 1, 1) % 255
    tf = make_transform(8, train=True, augment=1e-6, norm_mean=(0, 0, 0), norm_std=(1, 1, 1))
    out = tf(x.to(torch.uint8), torch.Generator().manual_seed(0)) * 255
    src = x / 1.0
    flipped = [not torch.allclose(o, src[0], atol=0.5) for o in out]
    assert any(flipped) and not all(flipped)
    for o, f in zip(out, flipped, strict=True):
        torch.testing.assert_close(o, src[0].flip(-1) if f else src[0], atol=0.5, rtol=0)


def test_with_transform_shares_images(tmp_path: Path) -> None:
    _prepared(tmp_path)
    ds = FaceDataset(load_split(tmp_path / "train.csv", tmp_path), tmp_path, "expression", 16)
    tf = make_transform(16, train=False, augment=0, norm_mean=NORM[0], norm_std=NORM[1])
    other = ds.with_transform(tf)
    assert other.images is ds.images and other.transform is tf and ds.transform is None
    x, y = other.get_batch([0, 2])
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 2]
