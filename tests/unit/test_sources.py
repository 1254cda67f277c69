"""Readers: FER image folders, the FER2013 CSV, images + attribute tables (CSV and XLSX)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.images import ImageRejected, decode_image
from facelens.data.sources.attributes_table import iter_attributes_table, match_attribute
from facelens.data.sources.fer2013_csv import iter_fer2013_csv
from facelens.data.sources.files import read_limited
from facelens.data.sources.imagefolder import iter_imagefolder
from facelens.data.sources.records import RawRecord
from facelens.errors import MissingInputError, SourceError


def _problems(records: list[RawRecord]) -> Counter[str]:
    return Counter(r.problem[0] for r in records if r.problem)


def test_imagefolder_fer_layout(fer_folder) -> None:
    records = list(iter_imagefolder(fer_folder.path))
    good = [r for r in records if r.problem is None]
    by_class = Counter(EXPRESSIONS[r.label] for r in good if r.label is not None)
    # the bad files (empty, truncated...) are only found by the decoder, later
    decodable = [r for r in good if r.key.split("/")[-1].startswith("img")]
    assert Counter(EXPRESSIONS[r.label] for r in decodable) == fer_folder.good_per_class
    assert by_class["happy"] > fer_folder.good_per_class["happy"]
    assert {r.usage for r in good} == {"train", "test"}
    assert all(r.usage == "test" for r in good if r.key.startswith("test/"))
    assert _problems(records) == Counter({"bad_label": 1})
    bad = next(r for r in records if r.problem)
    assert "'xyz'" in bad.problem[1] and "angry" in bad.problem[1]
    assert not any(".DS_Store" in r.key for r in records)
    # lazy loading returns the file bytes, which decode
    first = decodable[0]
    assert decode_image(first.load()).shape == (48, 48, 3)
    assert first.origin.endswith(first.key.split("/")[-1])


def test_imagefolder_without_split_level(tmp_path: Path, make_image: Callable, encode) -> None:
    root = tmp_path / "flat"
    for i, cls in enumerate(["Happy", "NEUTRAL", "surprise"]):
        (root / cls).mkdir(parents=True)
        (root / cls / f"{i}.png").write_bytes(encode(make_image(i)))
    (root / "loose.png").write_bytes(encode(make_image(9)))
    (root / "README.md").write_text("notes")
    records = list(iter_imagefolder(root))
    good = {r.key: r for r in records if r.problem is None}
    assert {k: EXPRESSIONS[r.label] for k, r in good.items()} == {
        "Happy/0.png": "happy",
        "NEUTRAL/1.png": "neutral",
        "surprise/2.png": "surprise",
    }
    assert all(r.usage is None for r in good.values())
    loose = [r for r in records if r.problem]
    assert [r.key for r in loose] == ["loose.png"]  # README ignored, stray image flagged
    assert "class folder" in loose[0].problem[1]


@pytest.mark.parametrize(
    ("folder", "usage"),
    [("Training", "train"), ("valid", "val"), ("PublicTest", "val"), ("PrivateTest", "test")],
)
def test_split_folder_names(
    folder: str, usage: str, tmp_path: Path, make_image: Callable, encode
) -> None:
    (tmp_path / folder / "sad").mkdir(parents=True)
    (tmp_path / folder / "sad" / "a.png").write_bytes(encode(make_image(1)))
    (record,) = iter_imagefolder(tmp_path)
    assert record.usage == usage and record.label == EXPRESSIONS.index("sad")


def test_imagefolder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="nowhere"):
        list(iter_imagefolder(tmp_path / "nowhere"))


def test_imagefolder_is_deterministic(fer_folder) -> None:
    first = [r.key for r in iter_imagefolder(fer_folder.path)]
    assert first == [r.key for r in iter_imagefolder(fer_folder.path)]
    assert len(set(first)) == len(first)


def test_fer2013_csv(fer_csv) -> None:
    records = list(iter_fer2013_csv(fer_csv.path))
    good = [r for r in records if r.problem is None]
    assert len(good) == fer_csv.n_good
    assert _problems(records) == Counter(fer_csv.bad_reasons)
    assert Counter(r.usage for r in good) == Counter({"train": 5, "val": 2, "test": 2})
    assert [r.label for r in good] == [i % 7 for i in range(9)]
    assert records[0].key == "fer2013_row00001" and records[0].origin == "fer2013.csv:row 1"
    img = decode_image(good[0].load())
    assert img.shape == (48, 48, 3)
    assert (img[..., 0] == img[..., 1]).all()  # grayscale
    details = {r.problem[1] for r in records if r.problem}
    assert any("100 pixel values, expected 2304" in d for d in details)
    assert any("'x' is not an integer" in d for d in details)
    assert any("0..255" in d for d in details)
    assert any("Holdout" in d for d in details)


def test_fer2013_csv_pixels_roundtrip(tmp_path: Path, make_image: Callable) -> None:
    gray = make_image(5, 48, 48, gray=True)
    path = tmp_path / "one.csv"
    path.write_text("emotion,pixels\n3," + " ".join(map(str, gray.ravel())) + "\n")
    (record,) = iter_fer2013_csv(path)
    assert record.usage is None and record.label == 3  # Usage is optional
    np.testing.assert_array_equal(decode_image(record.load())[..., 0], gray)


def test_fer2013_csv_header_variants(tmp_path: Path, make_image: Callable) -> None:
    """icml_face_data.csv spells the header ``emotion, Usage, pixels``."""
    path = tmp_path / "icml.csv"
    pixels = " ".join(map(str, make_image(6, 48, 48, gray=True).ravel()))
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["emotion", " Usage", " pixels"], ["0", "Training", pixels]])
    (record,) = iter_fer2013_csv(path)
    assert record.problem is None and record.usage == "train"


@pytest.mark.parametrize("header", ["emotion,Usage", "pixels,Usage", "foo"])
def test_fer2013_csv_missing_column(header: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n1,2\n")
    missing = "pixels" if "emotion" in header else "emotion"
    with pytest.raises(SourceError, match=rf"bad\.csv: missing column '{missing}'.*emotion,pixels"):
        list(iter_fer2013_csv(path))


def test_fer2013_csv_empty_and_missing(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SourceError, match="empty"):
        list(iter_fer2013_csv(tmp_path / "empty.csv"))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.raises(SourceError, match="not a readable UTF-8 CSV"):
        list(iter_fer2013_csv(tmp_path / "binary.csv"))
    with pytest.raises(MissingInputError, match=r"gone\.csv"):
        list(iter_fer2013_csv(tmp_path / "gone.csv"))


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_attributes_table(kind: str, request: pytest.FixtureRequest) -> None:
    source = request.getfixturevalue(f"attributes_{kind}")
    records = list(iter_attributes_table(source.path, source.table))
    good = {r.key: r for r in records if r.problem is None}
    assert sorted(good) == [f"face{i:02d}.jpg" for i in range(5)]
    problems = _problems(records)
    assert problems == Counter({"bad_label": 1, "unreadable": 1, "not_in_table": 1})
    a0, a1, a2 = ATTRIBUTES[:3]
    assert good["face00.jpg"].attributes == {a0: 2.0, a1: 5.0, a2: 8.0}  # two raters averaged
    assert good["face03.jpg"].attributes == {a0: 4.0, a1: 5.0, a2: 6.0}
    assert good["face00.jpg"].identity == "p0" and good["face03.jpg"].identity == "p1"
    assert all(r.label is None and r.usage is None for r in good.values())
    bad = {r.key: r.problem for r in records if r.problem}
    assert "not a number" in bad["face05.jpg"][1]
    assert bad["missing.jpg"] == ("unreadable", "listed in table but not found")
    assert decode_image(good["face01.jpg"].load()).shape == (60, 50, 3)


def test_attributes_table_without_attribute_columns(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    table = tmp_path / "t.csv"
    table.write_text("file,height,weight\na.jpg,1,2\n")
    with pytest.raises(SourceError, match="no attribute column"):
        list(iter_attributes_table(tmp_path / "imgs", table))


def test_attributes_table_rejects_escaping_paths(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    table = tmp_path / "t.csv"
    table.write_text(f"file,{ATTRIBUTES[0]}\n../secret.jpg,3\n")
    (record,) = iter_attributes_table(tmp_path / "imgs", table)
    assert record.problem is not None and record.problem[0] == "unreadable"


def test_attributes_table_out_of_scale_and_empty(tmp_path: Path, make_image, encode) -> None:
    (tmp_path / "imgs").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "imgs" / name).write_bytes(encode(make_image(1), "JPEG"))
    table = tmp_path / "t.csv"
    table.write_text(f"file,{ATTRIBUTES[0]},{ATTRIBUTES[1]}\na.jpg,12,3\nb.jpg,,3\n")
    problems = {r.key: r.problem for r in iter_attributes_table(tmp_path / "imgs", table)}
    assert problems["a.jpg"][0] == "bad_label" and "outside 1..9" in problems["a.jpg"][1]
    assert problems["b.jpg"][0] == "bad_label" and "no score" in problems["b.jpg"][1]


def test_attributes_table_bad_suffix(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(SourceError, match=r"\.csv or \.xlsx"):
        list(iter_attributes_table(tmp_path / "imgs", tmp_path / "t.json"))


def test_match_attribute() -> None:
    assert match_attribute("Attractive") == "attractive"
    assert match_attribute("attr_emotStable") == "emotStable"
    assert match_attribute(" emot stable ") == "emotStable"
    assert match_attribute("height") is None


def test_read_limited_refuses_big_files_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\x00" * 1000)
    assert read_limited(path, max_bytes=1000) == b"\x00" * 1000
    with pytest.raises(ImageRejected, match="1,000 bytes") as info:
        read_limited(path, max_bytes=999)
    assert info.value.code == "too_large"


def test_imagefolder_survives_symlink_loops(tmp_path: Path, make_image, encode) -> None:
    happy = tmp_path / "happy"
    happy.mkdir()
    (happy / "a.png").write_bytes(encode(make_image(1)))
    try:
        (happy / "loop").symlink_to(tmp_path, target_is_directory=True)
    except OSError:
        pytest.skip("symlinks not supported here")
    keys = [r.key for r in iter_imagefolder(tmp_path)]
    assert "happy/a.png" in keys and len(keys) < 10
