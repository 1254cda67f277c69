"""Dataset defects the other source tests leave out: a symbolic link out of the dataset folder,
wrong file extensions, FER2013 rows without a Usage, and what "empty" is called everywhere.

(Zero-byte, corrupt, truncated, huge-dimension, non-image, animated and tiny files, unknown
classes and the CSV rows with a bad pixel count, label or Usage are covered by the
``fer_folder`` / ``fer_csv`` fixtures in ``tests/integration/test_prepare.py`` and
``tests/unit/test_sources.py``.)
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from facelens.data.images import ImageRejected, decode_image
from facelens.data.params import DataParams
from facelens.data.prepare import check_source
from facelens.data.sources.fer2013_csv import iter_fer2013_csv
from facelens.data.sources.imagefolder import iter_imagefolder


def _symlink(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
    except OSError:
        pytest.skip("symlinks not supported here")


def test_a_symlink_out_of_the_dataset_is_quarantined_and_never_read(
    tmp_path: Path, make_image: Callable, encode: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "faces", tmp_path / "elsewhere"
    (root / "happy").mkdir(parents=True)
    outside.mkdir()
    (root / "happy" / "a.png").write_bytes(encode(make_image(1)))
    (outside / "secret.png").write_bytes(encode(make_image(2)))
    (outside / "more").mkdir()
    (outside / "more" / "b.png").write_bytes(encode(make_image(3)))
    _symlink(root / "happy" / "leak.png", outside / "secret.png")  # a file link out
    _symlink(root / "happy" / "linked", outside / "more")  # a folder link out
    _symlink(root / "happy" / "inside.png", root / "happy" / "a.png")  # stays inside: fine
    _symlink(root / "stray.png", outside / "secret.png")  # out, and not in a class folder

    read: list[Path] = []
    real_read = Path.read_bytes

    def spy(self: Path) -> bytes:
        read.append(self.resolve())
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    records = {r.key: r for r in iter_imagefolder(root)}
    out = {k: r.problem for k, r in records.items() if r.problem and r.problem[0] == "outside_root"}
    assert set(out) == {"happy/leak.png", "happy/linked/b.png", "stray.png"}
    assert str(outside / "secret.png") in out["happy/leak.png"][1]
    assert records["happy/inside.png"].problem is None

    report = check_source(DataParams(source="imagefolder", path=str(root), min_size=8))
    assert report.quarantine_by_reason == {"outside_root": 3}
    assert report.n_images == 2  # a.png and the inside link (an exact duplicate of it)
    assert not [p for p in read if p.is_relative_to(outside)], "a target outside was read"


def test_wrong_extensions_are_judged_by_content(
    tmp_path: Path, make_image: Callable, encode: Callable
) -> None:
    """A PNG named .jpg or .txt inside a class folder is the image it is; text named .png is
    quarantined as unsupported_format; nothing else is lost."""
    happy = tmp_path / "faces" / "happy"
    happy.mkdir(parents=True)
    (happy / "png_named.jpg").write_bytes(encode(make_image(1)))
    (happy / "jpeg_named.png").write_bytes(encode(make_image(2), "JPEG", quality=95))
    (happy / "png_named.txt").write_bytes(encode(make_image(3)))
    (happy / "text_named.png").write_bytes(b"name,score\nalice,3\n")
    report = check_source(DataParams(source="imagefolder", path=str(tmp_path / "faces")))
    assert report.n_images == 3
    assert [(q["file"].rsplit("/", 1)[-1], q["reason"]) for q in report.quarantine] == [
        ("text_named.png", "unsupported_format")
    ]


def test_fer_rows_without_usage_are_kept_for_the_split_to_place(
    tmp_path: Path, make_image: Callable
) -> None:
    """An empty ``Usage`` cell (or a row cut before it) is not a defect: the row is kept
    without a prescribed split and ``split`` places it; an unknown Usage is quarantined."""
    pixels = " ".join(str(v) for v in make_image(5, 48, 48, gray=True).ravel())
    path = tmp_path / "fer.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(
            [
                ["emotion", "pixels", "Usage"],
                ["3", pixels, ""],
                ["3", pixels],
                ["3", pixels, "training"],
                ["3", pixels, "Validation"],
            ]
        )
    records = list(iter_fer2013_csv(path))
    assert [r.usage for r in records[:3]] == [None, None, "train"]
    assert all(r.problem is None for r in records[:3])
    assert records[3].problem is not None and records[3].problem[0] == "bad_usage"
    assert "row 4" in records[3].origin and "'Validation'" in records[3].problem[1]


def test_zero_bytes_are_called_empty_everywhere(tmp_path: Path) -> None:
    """The decoder, serving and the CLI say the same thing of a zero-byte image."""
    from facelens.cli.inputs import read_input
    from facelens.errors import DataError
    from facelens.serving.requests import b64_bytes

    with pytest.raises(ImageRejected, match=r"the image is empty \(0 bytes\)") as caught:
        decode_image(b"", name="x.png")
    assert caught.value.code == "empty"
    for cell in ("", "\n", "data:image/png;base64,"):
        row = b64_bytes(cell, 0, 1 << 20)
        assert not isinstance(row, bytes) and row.message == "row 0: the image is empty (0 bytes)"
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: the image is empty \(0 bytes\)"):
        read_input(empty, detect_face=False, margin=0.0)


def test_classes_with_0_or_1_images_are_named_by_data_check(
    tmp_path: Path, make_image: Callable, encode: Callable
) -> None:
    from typer.testing import CliRunner

    from facelens.cli.app import app
    from facelens.constants import EXPRESSIONS
    from facelens.data.prepare_report import sparse_classes

    root = tmp_path / "faces"
    for i, name in enumerate(EXPRESSIONS):
        for j in range({"happy": 3, "sad": 1, "fear": 0}.get(name, 2)):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{j}.png").write_bytes(encode(make_image(10 * i + j)))
    report = check_source(DataParams(source="imagefolder", path=str(root)))
    warning = sparse_classes(report)
    assert warning is not None and warning.startswith(
        "classes with fewer than 2 images: fear 0, sad 1;"
    )
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 0
    assert f"warning: {warning}" in " ".join(result.output.split())
    (root / "fear" / "0.png").parent.mkdir()
    for j in range(2):
        (root / "fear" / f"{j}.png").write_bytes(encode(make_image(100 + j)))
        (root / "sad" / f"x{j}.png").write_bytes(encode(make_image(200 + j)))
    assert sparse_classes(check_source(DataParams(source="imagefolder", path=str(root)))) is None
