"""Manifest schema, pixel hashing and duplicate detection.

The manifest (``manifest.csv``) has one row per accepted image. Its columns are, in order,
:data:`MANIFEST_COLUMNS`, then the SynthFACS action-unit columns ``au_<AU>`` (when present),
then one ``attr_<name>`` column per attribute in :data:`facelens.constants.ATTRIBUTES` order
(when attribute scores exist), then any extra columns.

Hashes:

* :func:`pixel_sha256` hashes the canonical pixel array (shape and dtype prefixed), so
  re-encoding the same pixels (another PNG compression level, another container) gives the
  same hash -> exact duplicates.
* :func:`perceptual_hash` is a 64-bit DCT pHash written as 16 hex digits; a small Hamming
  distance (:func:`hamming`) means visually near-identical images (re-compressed, slightly
  brightened, resized) -> near duplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from facelens.constants import ATTRIBUTES
from facelens.errors import DataError, MissingInputError

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "MANIFEST_COLUMNS",
    "attribute_column",
    "data_version",
    "find_exact_duplicates",
    "find_near_duplicates",
    "hamming",
    "order_columns",
    "perceptual_hash",
    "phash_to_uint64",
    "pixel_sha256",
    "read_manifest",
    "write_manifest",
]

#: Fixed leading columns of every manifest and split file, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "id",
    "file",
    "sha256",
    "phash",
    "label",
    "identity",
    "source",
    "usage",
    "mask",
)

#: Attribute score columns, in :data:`facelens.constants.ATTRIBUTES` order.
ATTRIBUTE_COLUMNS: tuple[str, ...] = tuple(f"attr_{name}" for name in ATTRIBUTES)

_STRING_COLUMNS = ("id", "file", "sha256", "phash", "identity", "source", "usage", "mask")
_USAGES = frozenset({"", "train", "val", "test"})
_HASH_SIZE = 8  # 8x8 low frequencies -> 64 bits
_DCT_SIZE = 32


def attribute_column(name: str) -> str:
    """Return the manifest column name for an attribute (``attr_<name>``)."""
    return f"attr_{name}"


def pixel_sha256(img: np.ndarray) -> str:
    """SHA-256 of an image's pixels, independent of how the image was encoded.

    Args:
        img: Pixel array (any shape and dtype; prepare passes ``(H, W, 3)`` uint8).

    Returns:
        64 lowercase hex digits over ``"<shape>|<dtype>|"`` followed by the C-order bytes.
    """
    arr = np.ascontiguousarray(img)
    digest = hashlib.sha256(f"{arr.shape}|{arr.dtype.str}|".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    mat = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    return mat


_DCT = _dct_matrix(_DCT_SIZE)


def perceptual_hash(img: np.ndarray) -> str:
    """64-bit DCT perceptual hash (pHash) of an image, as 16 hex digits.

    The image is converted to luma, area-resized to 32x32, transformed with a 2-D DCT-II; the
    8x8 lowest frequencies are compared with their median (bit = coefficient > median), read
    row-major, most significant bit first. A uniform brightness change moves only the DC term,
    which is always above the median, so it leaves the hash unchanged.

    Args:
        img: ``(H, W, 3)`` or ``(H, W)`` uint8 array; not modified.

    Returns:
        16 lowercase hex digits.
    """
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    if arr.ndim != 2:
        raise ValueError(f"perceptual_hash expects (H, W, 3) or (H, W), got shape {img.shape}")
    small = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F").resize(
        (_DCT_SIZE, _DCT_SIZE), resample=Image.Resampling.BOX
    )
    pixels = np.asarray(small, dtype=np.float64)
    coeffs = _DCT @ pixels @ _DCT.T  # (32, 32) 2-D DCT-II
    low = coeffs[:_HASH_SIZE, :_HASH_SIZE].ravel()
    bits = low > np.median(low)
    return np.packbits(bits).tobytes().hex()  # MSB first


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    if len(a) != len(b):
        raise ValueError(f"hashes must have the same length, got {len(a)} and {len(b)} hex digits")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def phash_to_uint64(hashes: Iterable[str]) -> np.ndarray:
    """Convert 16-hex-digit hashes to a ``uint64`` array (for vectorised distances)."""
    values = list(hashes)
    out = np.empty(len(values), dtype=np.uint64)
    for i, text in enumerate(values):
        if not isinstance(text, str) or len(text) != 16:
            raise ValueError(f"phash must be 16 hex digits, got {text!r} at row {i}")
        out[i] = np.uint64(int(text, 16))
    return out


def find_exact_duplicates(df: pd.DataFrame) -> list[list[str]]:
    """Groups of ids whose pixels are identical (same ``sha256``).

    Args:
        df: Manifest-like frame with ``id`` and ``sha256`` columns.

    Returns:
        Groups of two or more ids, each in row order, groups ordered by first occurrence.
    """
    _require(df, ("id", "sha256"), "find_exact_duplicates")
    groups: dict[str, list[str]] = {}
    for ident, sha in zip(df["id"].astype(str), df["sha256"].astype(str), strict=True):
        groups.setdefault(sha, []).append(ident)
    return [ids for ids in groups.values() if len(ids) > 1]


def find_near_duplicates(
    df: pd.DataFrame, threshold: int, *, block: int = 512, max_pairs: int = 5_000_000
) -> list[tuple[str, str, int]]:
    """Pairs of images whose perceptual hashes differ by at most ``threshold`` bits.

    Pairs with identical pixels (same ``sha256``) are exact duplicates and are left out. The
    search XORs bit-packed hashes block by block and counts bits with ``np.bitwise_count``:
    O(n^2 / 2) work in vectorised form, about a second for 30k rows.

    Args:
        df: Manifest-like frame with ``id``, ``sha256`` and ``phash`` columns.
        threshold: Largest Hamming distance (0..64) that counts as a near duplicate.
        block: Rows compared per step (memory is about ``block * n`` bytes).
        max_pairs: Refuse to list more pairs than this (a threshold far too high, or thousands
            of near-identical images, would otherwise exhaust memory).

    Returns:
        ``(id_a, id_b, distance)`` with ``id_a`` before ``id_b`` in row order, sorted by row.

    Raises:
        ValueError: On a bad ``threshold``, a malformed ``phash`` or more than ``max_pairs``.
    """
    _require(df, ("id", "sha256", "phash"), "find_near_duplicates")
    if not 0 <= threshold <= 64:
        raise ValueError(f"threshold must be in 0..64 bits, got {threshold}")
    n = len(df)
    if n < 2:
        return []
    hashes = phash_to_uint64(df["phash"])
    ids = df["id"].astype(str).to_numpy()
    sha_codes, _ = pd.factorize(df["sha256"].astype(str))
    pairs: list[tuple[str, str, int]] = []
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)
        left = hashes[start:stop, None]  # (b, 1)
        right = hashes[start + 1 :][None, :]  # (1, n - start - 1)
        dist = np.bitwise_count(left ^ right)  # (b, n - start - 1) uint8
        rows, cols = np.nonzero(dist <= threshold)
        cols_abs = cols + start + 1
        rows_abs = rows + start
        # upper triangle only, and identical pixels are exact (not near) duplicates
        keep = (cols_abs > rows_abs) & (sha_codes[rows_abs] != sha_codes[cols_abs])
        rows_abs, cols_abs, found = rows_abs[keep], cols_abs[keep], dist[rows[keep], cols[keep]]
        if len(pairs) + len(found) > max_pairs:
            raise DataError(
                f"more than {max_pairs:,} near-duplicate pairs at threshold {threshold}; lower "
                f"near_duplicate_distance or remove the repeated images"
            )
        pairs.extend(
            (str(ids[i]), str(ids[j]), int(d))
            for i, j, d in zip(rows_abs, cols_abs, found, strict=True)
        )
    return pairs


def order_columns(columns: Sequence[str]) -> list[str]:
    """Put columns in manifest order: fixed columns, ``au_*``, ``attr_*`` (ATTRIBUTES order), rest."""
    cols = list(columns)
    fixed = [c for c in MANIFEST_COLUMNS if c in cols]
    aus = [c for c in cols if c.startswith("au_")]
    attrs = [c for c in ATTRIBUTE_COLUMNS if c in cols]
    unknown_attrs = [c for c in cols if c.startswith("attr_") and c not in ATTRIBUTE_COLUMNS]
    taken = set(fixed) | set(aus) | set(attrs)
    rest = [c for c in cols if c not in taken]
    if unknown_attrs:
        raise DataError(
            f"unknown attribute columns {unknown_attrs}; allowed attr_<name> with name in "
            f"facelens.constants.ATTRIBUTES (e.g. {ATTRIBUTE_COLUMNS[0]!r})"
        )
    return fixed + aus + attrs + rest


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Validate a manifest frame and write it as CSV (columns in manifest order).

    Args:
        df: Frame with at least :data:`MANIFEST_COLUMNS`; not modified.
        path: Destination CSV file.

    Raises:
        ValueError: On a missing column, duplicate ids, a bad ``usage`` or ``label`` value.
    """
    _validate(df, str(path))
    out = df[order_columns(df.columns)].copy()
    out["label"] = out["label"].astype("Int64")
    out.to_csv(path, index=False, na_rep="")


def read_manifest(path: Path) -> pd.DataFrame:
    """Read and validate a manifest or split CSV.

    Returns:
        A frame with string columns (empty string for missing ``usage``/``mask``), ``label``
        as nullable ``Int64`` and float ``au_*``/``attr_*`` columns.

    Raises:
        MissingInputError: When the file does not exist.
        DataError: Naming the file and the missing column, or the bad values found.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"manifest {path} not found; run the prepare stage first")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MANIFEST_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: missing column {missing[0]!r} (all missing: {missing}); a manifest starts "
            f"with the columns {','.join(MANIFEST_COLUMNS)}"
        )
    df = raw.copy()
    for col in _STRING_COLUMNS:
        df[col] = df[col].astype(object).astype(str)
    label = df["label"].str.strip()
    bad = ~label.str.fullmatch(r"-?\d*")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: label {df['label'].iloc[row]!r} in row {row + 1} is not an integer or empty"
        )
    df["label"] = pd.array([int(v) if v else pd.NA for v in label], dtype="Int64")
    for col in df.columns:
        if col.startswith(("au_", "attr_")):
            values = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
            bad_num = values.isna() & (df[col] != "")
            if bad_num.any():
                row = int(np.flatnonzero(bad_num.to_numpy())[0])
                raise DataError(
                    f"{path}: {col} {df[col].iloc[row]!r} in row {row + 1} is not a number"
                )
            df[col] = values.astype(float)
    _validate(df, str(path))
    return df


def _require(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; got columns {list(df.columns)}")


def _validate(df: pd.DataFrame, where: str) -> None:
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{where}: missing column {missing[0]!r} (all missing: {missing}); a manifest needs "
            f"the columns {','.join(MANIFEST_COLUMNS)}"
        )
    ids = df["id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(f"{where}: id {dup.iloc[0]!r} appears more than once; ids must be unique")
    usage = df["usage"].fillna("").astype(str)
    bad_usage = sorted(set(usage) - _USAGES)
    if bad_usage:
        raise DataError(
            f"{where}: usage values {bad_usage} are not allowed; use train, val, test or empty"
        )
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad_label = labels.notna() & ~labels.between(0, 6)
    if bad_label.any():
        raise DataError(
            f"{where}: label {labels[bad_label].iloc[0]} is outside 0..6 (FER2013 expression ids)"
        )


def data_version(prepared_dir: Path) -> str:
    """The version of a prepared dataset: the first 16 hex digits of the sha256 of its
    manifest, which holds every image's pixel hash, label, identity and attribute scores.

    It names the data in MLflow (lineage tag, dataset digest), keys the activation cache and
    the manifold reference, and decides whether two registered versions are comparable.

    Raises:
        MissingInputError: ``prepared_dir`` has no ``manifest.csv``.
    """
    manifest = Path(prepared_dir) / "manifest.csv"
    if not manifest.is_file():
        raise MissingInputError(
            f"{manifest}: prepared manifest not found (run `dvc repro prepare`)"
        )
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
