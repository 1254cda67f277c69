"""The shared I/O helpers: atomic files and folders, strict JSON, hashing, flattening."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from facelens._io import (
    atomic_output_dir,
    atomic_path,
    atomic_write_text,
    canonical_hash,
    flatten_metrics,
    jsonable,
    write_error_line,
    write_json,
)


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]  # no temporary left behind


def test_atomic_output_dir_keeps_previous_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError, match="midway"), atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("midway")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # no temp left behind
    with atomic_output_dir(out) as tmp:
        (tmp / "b.txt").write_text("third")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_atomic_output_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"), atomic_output_dir(tmp_path / "f"):
        pass


def test_write_json_is_strict_and_safe_for_numpy(tmp_path: Path) -> None:
    doc = {"a": np.float32(0.5), "b": [np.int64(3), float("nan")], "c": np.array([1, 2])}
    write_json(tmp_path / "d.json", doc)
    text = (tmp_path / "d.json").read_text()
    assert text.endswith("\n")
    assert json.loads(text) == {"a": 0.5, "b": [3, None], "c": [1, 2]}
    assert "NaN" not in text


def test_jsonable_does_not_mutate_its_input() -> None:
    doc = {"x": [1.0, math.inf], 2: (np.bool_(True),)}
    before = repr(doc)
    assert jsonable(doc) == {"x": [1.0, None], "2": [True]}
    assert repr(doc) == before


def test_canonical_hash_ignores_key_order_and_sees_values() -> None:
    assert canonical_hash({"a": 1, "b": 2}) == canonical_hash({"b": 2, "a": 1})
    assert canonical_hash({"a": 1, "b": 2}) != canonical_hash({"a": 1, "b": 3})
    assert len(canonical_hash({})) == 64


def test_flatten_metrics_keeps_finite_numbers_only() -> None:
    nested = {"a": {"b": 1, "c": [2, 3.5]}, "s": "text", "n": None, "t": True, "z": math.nan}
    assert flatten_metrics(nested) == {"a/b": 1.0, "a/c/0": 2.0, "a/c/1": 3.5}
    assert nested["a"]["c"] == [2, 3.5]


def test_flatten_metrics_options() -> None:
    doc = {"gradcam++": {"ok": True, "r": 0.5, "xs": [1, 2]}, "x y(z)": np.float64(2)}
    assert flatten_metrics(doc, "e", sep=".", bools=True, lists=False) == {
        "e.gradcampp.ok": 1.0,
        "e.gradcampp.r": 0.5,
        "e.x y_z_": 2.0,
    }
    assert flatten_metrics(doc, skip=lambda k: k.endswith("/xs")) == {
        "gradcampp/r": 0.5,
        "x y_z_": 2.0,
    }


def _full_disk(*_: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_write_that_hits_a_full_disk_names_the_output_not_its_temporary(
    tmp_path: Path, code: int
) -> None:
    target = tmp_path / "models" / "state_dict.pt"
    atomic_write_text(target, "previous")

    def failing(_: Path) -> None:
        raise OSError(code, os.strerror(code), str(target.parent / ".state_dict.pt.x.tmp"))

    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        failing(tmp)
    assert caught.value.errno == code and caught.value.filename == str(target)
    line = write_error_line(caught.value)
    assert line is not None and line.startswith(
        {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}.get(
            code, "read-only file system"
        )
        + f" while writing {target};"
    )
    assert "\n" not in line
    assert target.read_text() == "previous"
    assert [p.name for p in target.parent.iterdir()] == ["state_dict.pt"]


def test_torch_save_on_a_full_disk_is_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    """torch's C++ writer reports a full disk as ``RuntimeError("... unexpected pos ...")``
    without an errno: with (almost) no free space left it is reported as ENOSPC; with space
    left it stays the RuntimeError it is."""
    import shutil

    target = tmp_path / "checkpoint.pt"

    def torch_like(_: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_path(target) as tmp:
        torch_like(tmp)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=4096))
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        torch_like(tmp)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_a_full_disk_inside_an_output_folder_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "maps"
    with atomic_output_dir(out) as tmp:
        (tmp / "old.npz").write_text("kept")
    with pytest.raises(OSError) as caught, atomic_output_dir(out) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "cams_gradcam.npz"))
    assert caught.value.filename == str(out / "cams_gradcam.npz")
    with pytest.raises(OSError) as caught, atomic_output_dir(out) as tmp:
        _full_disk()  # no file named (zipfile, shutil.copyfileobj): the folder is named
    assert caught.value.filename == str(out)
    assert (out / "old.npz").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps"]
    assert write_error_line(OSError(errno.ENOENT, "No such file", "x")) is None
    assert write_error_line(ValueError("x")) is None
