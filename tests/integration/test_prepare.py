"""prepare / check on every source kind: outputs, quarantine reasons, duplicates, atomicity."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import facelens.data.prepare_rows as prepare_rows_module
from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.manifest import MANIFEST_COLUMNS, pixel_sha256, read_manifest
from facelens.data.params import DataParams, SplitParams
from facelens.data.prepare import check_source, prepare_dataset, source_params_for_path
from facelens.data.split import split_prepared
from facelens.data.synthfacs.action_units import AUS
from facelens.data.synthfacs.params import SynthParams
from facelens.errors import MissingInputError, SourceError


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _check_images(out: Path, manifest: pd.DataFrame, size: int) -> None:
    for row in manifest.itertuples():
        img = np.asarray(Image.open(out / row.file))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert pixel_sha256(img) == row.sha256


def test_prepare_fer_folder(fer_folder, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    calls: list[tuple[int, int]] = []
    params = DataParams(source="imagefolder", path=str(fer_folder.path), image_size=32)
    report = prepare_dataset(params, out, progress=lambda d, t: calls.append((d, t)))
    assert report.n_images == fer_folder.n_good
    assert report.quarantine_by_reason == fer_folder.bad_reasons  # every reason, once
    assert {k: v for k, v in report.counts_per_class.items() if v} == fer_folder.good_per_class
    assert report.counts_per_usage == {"train": 9, "test": 4}
    assert calls[-1][0] == calls[-1][1] == report.n_images + report.n_quarantined
    assert sorted(p.name for p in out.iterdir()) == [
        "images",
        "manifest.csv",
        "quarantine.csv",
        "report.json",
    ]
    manifest = read_manifest(out / "manifest.csv")
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert len(manifest) == report.n_images == len(list((out / "images").iterdir()))
    assert (manifest["identity"] == manifest["id"]).all()  # no subject ids in FER
    assert set(manifest["source"]) == {"imagefolder"}
    assert manifest["id"].str.fullmatch(r"[A-Za-z0-9._-]+").all()
    angry = manifest[manifest["label"] == EXPRESSIONS.index("angry")]
    assert angry["id"].str.startswith("train_Angry_").all()
    _check_images(out, manifest, 32)
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    assert list(quarantine.columns) == ["file", "reason", "detail"]
    assert quarantine["reason"].value_counts().to_dict() == fer_folder.bad_reasons
    bomb = quarantine[quarantine["file"].str.endswith("bomb.png")].iloc[0]
    assert bomb["reason"] == "too_large" and "limit" in bomb["detail"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["n_images"] == report.n_images and saved["leakage"]["clean"] is True


def test_prepare_fer_csv(fer_csv, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare_dataset(DataParams(source="fer2013_csv", path=str(fer_csv.path)), out)
    assert report.n_images == fer_csv.n_good
    assert report.quarantine_by_reason == fer_csv.bad_reasons
    manifest = read_manifest(out / "manifest.csv")
    assert manifest["usage"].value_counts().to_dict() == {"train": 5, "val": 2, "test": 2}
    assert manifest["id"].iloc[0] == "fer2013_row00001"
    assert manifest["label"].tolist() == [i % 7 for i in range(9)]
    _check_images(out, manifest, 64)
    img = np.asarray(Image.open(out / manifest["file"].iloc[0]))
    assert (img[..., 0] == img[..., 2]).all()  # grayscale source stays gray
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert quarantine["file"].str.startswith("fer2013.csv:row ").all()


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_prepare_attributes_table(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = request.getfixturevalue(f"attributes_{kind}")
    params = DataParams(source="attributes_table", path=str(source.path), table=str(source.table))
    out = tmp_path / "prepared"
    report = prepare_dataset(params, out)
    assert report.n_images == source.n_good
    assert report.quarantine_by_reason == source.bad_reasons
    assert report.n_ignored == 1 and report.ignored_by_reason == {"not_in_table": 1}
    assert report.attributes == list(ATTRIBUTES[:3])
    assert report.counts_per_class == {"unlabeled": 5}
    manifest = read_manifest(out / "manifest.csv")
    attr_cols = [f"attr_{a}" for a in ATTRIBUTES[:3]]
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, *attr_cols]
    assert manifest["label"].isna().all()
    assert manifest["identity"].tolist() == ["p0", "p0", "p1", "p1", "p2"]
    assert manifest.loc[manifest["id"] == "face00", attr_cols].to_numpy().tolist() == [
        [2.0, 5.0, 8.0]
    ]
    _check_images(out, manifest, 64)


def test_prepare_synth(tmp_path: Path) -> None:
    synth = SynthParams(n_identities=3, expressions_per_identity=2, seed=1)
    out = tmp_path / "prepared"
    report = prepare_dataset(DataParams(synth=synth, image_size=48), out)
    assert report.n_images == 6 and report.n_quarantined == 0
    assert set(report.synth) == {"reliability", "correlation_mad", "images_per_second"}
    manifest = read_manifest(out / "manifest.csv")
    aus = [f"au_{a}" for a in AUS]
    attrs = [f"attr_{a}" for a in ATTRIBUTES]
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, *aus, *attrs]
    assert manifest["identity"].nunique() == 3 and set(manifest["source"]) == {"synth"}
    assert manifest[aus].to_numpy().min() >= 0 and manifest[aus].to_numpy().max() <= 1
    _check_images(out, manifest, 48)
    for mask_file in manifest["mask"]:
        mask = np.asarray(Image.open(out / mask_file))
        assert mask.shape == (48, 48) and mask.dtype == np.uint8 and mask.max() > 0
    written = json.loads((out / "report.json").read_text())["synth"]
    assert written["correlation_mad"] >= 0 and "images_per_second" not in written


def test_prepare_is_deterministic(fer_csv, tmp_path: Path) -> None:
    params = DataParams(source="fer2013_csv", path=str(fer_csv.path))
    reports = [prepare_dataset(params, tmp_path / name) for name in ("a", "b")]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    for rel in files:  # every byte, report.json included: the DVC hash of the folder is stable
        if (tmp_path / "a" / rel).is_file():
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    written = json.loads((tmp_path / "a" / "report.json").read_text())
    assert "duration_s" not in written and "images_per_second" not in written
    assert reports[0].duration_s > 0  # the timings stay in the returned report


def test_duplicates_are_reported(tmp_path: Path, make_image: Callable, encode) -> None:
    root = tmp_path / "faces"
    base = make_image(1, 48, 48)
    files = {
        "happy/a.png": base,
        "happy/b.png": make_image(2, 48, 48),
        "sad/a_copy.png": base,  # same pixels, other label
        "happy/a_bright.png": np.clip(base.astype(int) + 20, 0, 255).astype(np.uint8),
    }
    for name, img in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(img))
    report = check_source(DataParams(source="imagefolder", path=str(root)))
    assert report.exact_duplicates == [["happy_a", "sad_a_copy"]]
    assert report.label_conflicts == [["happy_a", "sad_a_copy"]]
    near = {(a, b) for a, b, _ in report.near_duplicates}
    assert near == {("happy_a", "happy_a_bright"), ("happy_a_bright", "sad_a_copy")}


def test_prepare_is_atomic(fer_csv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "prepared"
    prepare_dataset(DataParams(source="fer2013_csv", path=str(fer_csv.path)), out)
    before = {p: (out / p).read_bytes() for p in _listing(out) if (out / p).is_file()}
    real = prepare_rows_module.perceptual_hash
    count = {"n": 0}

    def failing(img: np.ndarray) -> str:
        count["n"] += 1
        if count["n"] > 4:
            raise RuntimeError("disk full midway")
        return real(img)

    monkeypatch.setattr(prepare_rows_module, "perceptual_hash", failing)
    with pytest.raises(RuntimeError, match="midway"):
        prepare_dataset(DataParams(source="fer2013_csv", path=str(fer_csv.path)), out)
    after = {p: (out / p).read_bytes() for p in _listing(out) if (out / p).is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fer2013.csv", "prepared"]


def test_no_usable_image_raises_and_keeps_previous(tmp_path: Path, fer_csv) -> None:
    out = tmp_path / "prepared"
    prepare_dataset(DataParams(source="fer2013_csv", path=str(fer_csv.path)), out)
    manifest = (out / "manifest.csv").read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    with pytest.raises(SourceError, match=r"no usable image.*bad_label: 1"):
        prepare_dataset(DataParams(source="fer2013_csv", path=str(bad)), out)
    assert (out / "manifest.csv").read_bytes() == manifest
    report = check_source(DataParams(source="fer2013_csv", path=str(bad)))
    assert report.n_images == 0 and report.quarantine_by_reason == {"bad_label": 1}


def test_unusable_source_raises_clearly(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="nowhere"):
        prepare_dataset(
            DataParams(source="imagefolder", path=str(tmp_path / "nowhere")), tmp_path / "out"
        )
    header = tmp_path / "x.csv"
    header.write_text("label,image\n1,2\n")
    with pytest.raises(SourceError, match="missing column 'emotion'"):
        prepare_dataset(DataParams(source="fer2013_csv", path=str(header)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_check_source_writes_nothing(fer_folder, tmp_path: Path) -> None:
    before = _listing(tmp_path)
    params = source_params_for_path(fer_folder.path)
    report = check_source(params)
    assert _listing(tmp_path) == before
    assert report.n_images == fer_folder.n_good
    assert report.quarantine_by_reason == fer_folder.bad_reasons
    payload = report.to_dict()
    json.dumps(payload)
    assert {"file", "reason", "detail"} == set(payload["quarantine"][0])


def test_source_params_for_path(tmp_path: Path, fer_csv, attributes_xlsx) -> None:
    assert source_params_for_path(fer_csv.path).source == "fer2013_csv"
    assert source_params_for_path(tmp_path).source == "imagefolder"
    params = source_params_for_path(attributes_xlsx.path, attributes_xlsx.table)
    assert params.source == "attributes_table" and params.table == str(attributes_xlsx.table)
    with pytest.raises(SourceError, match="--table"):
        source_params_for_path(attributes_xlsx.table)
    with pytest.raises(MissingInputError):
        source_params_for_path(tmp_path / "nope")


def test_prepare_then_split(fer_csv, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepare_dataset(DataParams(source="fer2013_csv", path=str(fer_csv.path)), prepared)
    result = split_prepared(prepared, tmp_path / "splits", SplitParams(seed=0))
    assert {k: len(v) for k, v in result.frames().items()} == {"train": 5, "val": 2, "test": 2}
    assert result.leakage.clean


def test_oversized_and_unreadable_files_are_quarantined(
    fer_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facelens.data.sources.imagefolder as imagefolder_module

    real = imagefolder_module.read_limited

    def limited(path: Path) -> bytes:
        if path.name == "img001.png":
            raise PermissionError("denied")
        return real(path, max_bytes=3000)

    monkeypatch.setattr(imagefolder_module, "read_limited", limited)
    report = check_source(DataParams(source="imagefolder", path=str(fer_folder.path)))
    reasons = {q["file"].rsplit("/", 1)[-1]: q for q in report.quarantine}
    assert reasons["img001.png"]["reason"] == "unreadable"
    assert "PermissionError" in reasons["img001.png"]["detail"]
    too_large = [q for q in report.quarantine if "byte limit" in q["detail"]]
    assert too_large and all(q["reason"] == "too_large" for q in too_large)
