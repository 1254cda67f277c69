"""Manifest schema, pixel/perceptual hashing, duplicate detection, atomic output directories."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facelens.constants import ATTRIBUTES
from facelens.data.images import decode_image, resize_square
from facelens.data.manifest import (
    ATTRIBUTE_COLUMNS,
    MANIFEST_COLUMNS,
    find_exact_duplicates,
    find_near_duplicates,
    hamming,
    order_columns,
    perceptual_hash,
    phash_to_uint64,
    pixel_sha256,
    read_manifest,
    write_manifest,
)


def _frame(images: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": list(images),
            "sha256": [pixel_sha256(i) for i in images.values()],
            "phash": [perceptual_hash(i) for i in images.values()],
        }
    )


def test_sha256_depends_on_pixels_not_encoding(make_image: Callable, encode) -> None:
    img = make_image(1, 32, 32)
    fast = decode_image(encode(img, "PNG", compress_level=1))
    slow = decode_image(encode(img, "PNG", compress_level=9, optimize=True))
    tiff = decode_image(encode(img, "TIFF"))
    assert pixel_sha256(fast) == pixel_sha256(slow) == pixel_sha256(tiff) == pixel_sha256(img)
    changed = img.copy()
    changed[0, 0, 0] ^= 1
    assert pixel_sha256(changed) != pixel_sha256(img)
    # same bytes, another shape -> another hash
    assert pixel_sha256(img.reshape(16, 64, 3)) != pixel_sha256(img)
    assert len(pixel_sha256(img)) == 64


def test_perceptual_hash_format_and_purity(make_image: Callable) -> None:
    img = make_image(2, 64, 64)
    before = img.copy()
    value = perceptual_hash(img)
    assert len(value) == 16 and int(value, 16) >= 0
    assert perceptual_hash(img) == value
    np.testing.assert_array_equal(img, before)
    luma = img @ np.array([0.299, 0.587, 0.114])
    gray = np.rint(luma).astype(np.uint8)  # a (H, W) image hashes like its RGB source
    assert hamming(perceptual_hash(gray), value) <= 2


def test_near_duplicate_transforms_stay_close(make_image: Callable) -> None:
    img = make_image(3, 64, 64)
    brighter = np.clip(img.astype(int) + 25, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=60)
    jpeg = np.asarray(Image.open(buf).convert("RGB"))
    resized = resize_square(resize_square(img, 48), 64)
    h = perceptual_hash(img)
    for variant in (brighter, jpeg, resized):
        assert hamming(perceptual_hash(variant), h) <= 4
    others = [hamming(perceptual_hash(make_image(100 + i, 64, 64)), h) for i in range(20)]
    assert min(others) > 8  # unrelated images are far apart


def test_hamming() -> None:
    assert hamming("0000000000000000", "000000000000000f") == 4
    assert hamming("ffffffffffffffff", "0000000000000000") == 64
    with pytest.raises(ValueError, match="same length"):
        hamming("ff", "fff")


def test_phash_to_uint64_rejects_bad_values() -> None:
    assert phash_to_uint64(["ffffffffffffffff"])[0] == np.uint64(2**64 - 1)
    with pytest.raises(ValueError, match="16 hex digits"):
        phash_to_uint64(["abc"])


def test_exact_and_near_duplicates(make_image: Callable) -> None:
    base = make_image(4, 64, 64)
    images = {
        "a": base,
        "b": make_image(5, 64, 64),
        "a_copy": base.copy(),
        "a_bright": np.clip(base.astype(int) + 20, 0, 255).astype(np.uint8),
        "c": make_image(6, 64, 64),
        "b_copy": make_image(5, 64, 64),
    }
    df = _frame(images)
    assert find_exact_duplicates(df) == [["a", "a_copy"], ["b", "b_copy"]]
    near = find_near_duplicates(df, threshold=4)
    pairs = {(a, b) for a, b, _ in near}
    assert pairs == {("a", "a_bright"), ("a_copy", "a_bright")}  # exact pairs left out
    assert all(0 <= d <= 4 for *_, d in near)
    assert find_near_duplicates(df, threshold=0) == [(a, b, d) for a, b, d in near if d == 0]


def test_near_duplicates_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=50, dtype=np.int64).astype(np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=(150, 3)).astype(np.uint64)
    values = np.concatenate([base, base[rng.integers(0, 50, 150)] ^ flips[:, 0] ^ flips[:, 1]])
    df = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(len(values))],
            "sha256": [f"s{k}" for k in range(len(values))],
            "phash": [f"{int(v):016x}" for v in values],
        }
    )
    fast = find_near_duplicates(df, 3, block=7)
    slow = [
        (df.id[i], df.id[j], hamming(df.phash[i], df.phash[j]))
        for i in range(len(df))
        for j in range(i + 1, len(df))
        if hamming(df.phash[i], df.phash[j]) <= 3
    ]
    assert fast == slow and len(slow) > 100


def test_near_duplicates_scale_to_30k_rows() -> None:
    rng = np.random.default_rng(1)
    n = 30_000
    values = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    phash = [f"{int(v):016x}" for v in values]
    phash[10] = phash[20_000]
    df = pd.DataFrame({"id": [str(i) for i in range(n)], "sha256": phash, "phash": phash})
    df.loc[10, "sha256"] = "different pixels"
    # About 2 s on 2 CPU cores; no wall-clock assertion (it failed on a busy machine): an
    # all-pairs regression (450 million comparisons) runs into the test's timeout instead.
    pairs = find_near_duplicates(df, 4)
    assert ("10", "20000", 0) in pairs


def test_near_duplicates_refuse_pair_explosion() -> None:
    df = pd.DataFrame(
        {"id": [str(i) for i in range(100)], "sha256": [str(i) for i in range(100)]}
    ).assign(phash="0" * 16)
    with pytest.raises(ValueError, match="near_duplicate_distance"):
        find_near_duplicates(df, 4, max_pairs=10)
    with pytest.raises(ValueError, match=r"0\.\.64"):
        find_near_duplicates(df, 65)


def _manifest(n: int = 3) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "id": [f"im{i}" for i in range(n)],
            "file": [f"images/im{i}.png" for i in range(n)],
            "sha256": ["0" * 64] * n,
            "phash": ["0" * 16] * n,
            "label": pd.array([1, None, 6][:n], dtype="Int64"),
            "identity": [f"p{i}" for i in range(n)],
            "source": ["imagefolder"] * n,
            "usage": ["train", "", "test"][:n],
            "mask": [""] * n,
        }
    )
    df[f"attr_{ATTRIBUTES[1]}"] = [1.5, 2.0, 9.0][:n]
    df[f"attr_{ATTRIBUTES[0]}"] = [3.0, np.nan, 4.0][:n]
    df["au_AU1"] = [0.1, 0.2, 0.3][:n]
    return df


def test_manifest_roundtrip(tmp_path: Path) -> None:
    df = _manifest()
    before = df.copy()
    path = tmp_path / "manifest.csv"
    write_manifest(df, path)
    pd.testing.assert_frame_equal(df, before)  # input untouched
    header = path.read_text().splitlines()[0].split(",")
    assert header == [*MANIFEST_COLUMNS, "au_AU1", ATTRIBUTE_COLUMNS[0], ATTRIBUTE_COLUMNS[1]]
    back = read_manifest(path)
    assert back["label"].dtype == "Int64" and back["label"].isna().tolist() == [False, True, False]
    assert back["usage"].tolist() == ["train", "", "test"]
    assert back["mask"].tolist() == ["", "", ""]
    assert np.isnan(back[ATTRIBUTE_COLUMNS[0]].iloc[1])
    assert back["id"].tolist() == df["id"].tolist()


def test_read_manifest_names_file_and_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    _manifest().drop(columns=["identity"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"m\.csv: missing column 'identity'"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError, match="prepare"):
        read_manifest(tmp_path / "none.csv")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"usage": ["train", "holdout", "test"]}, "holdout"),
        ({"id": ["a", "a", "b"]}, "appears more than once"),
        ({"label": pd.array([1, 9, 2], dtype="Int64")}, "outside 0..6"),
    ],
)
def test_write_manifest_validates(change: dict, message: str, tmp_path: Path) -> None:
    df = _manifest().assign(**change)
    with pytest.raises(ValueError, match=message):
        write_manifest(df, tmp_path / "m.csv")


def test_order_columns_rejects_unknown_attributes() -> None:
    assert order_columns(["x", "label", "id"]) == ["id", "label", "x"]
    with pytest.raises(ValueError, match="attr_nope"):
        order_columns(["id", "attr_nope"])
