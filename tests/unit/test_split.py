"""Grouped, stratified, seeded split; leakage detection; split params."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from facelens.data.leakage import check_leakage
from facelens.data.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest
from facelens.data.params import DataParams, SplitParams
from facelens.data.split import group_ids, split_manifest, split_prepared
from facelens.errors import LeakageError


def _manifest(
    n_identities: int = 60, per_identity: int = 5, seed: int = 0, usage: str = ""
) -> pd.DataFrame:
    """Rows of ``n_identities`` people; labels skewed so stratification has work to do."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_identities):
        for k in range(per_identity):
            i = len(rows)
            rows.append(
                {
                    "id": f"im{i:04d}",
                    "file": f"images/im{i:04d}.png",
                    "sha256": f"{i:064x}",
                    "phash": f"{int(rng.integers(0, 2**62)):016x}",
                    "label": int(rng.choice(7, p=[0.3, 0.05, 0.1, 0.25, 0.1, 0.1, 0.1])),
                    "identity": f"p{p:03d}",
                    "source": "synth",
                    "usage": usage,
                    "mask": "",
                }
            )
            del k
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    df["label"] = df["label"].astype("Int64")
    return df


def _split_of(result) -> dict[str, str]:
    return {i: name for name, f in result.frames().items() for i in f["id"]}


def test_grouped_split_has_no_identity_leakage_and_right_fractions() -> None:
    df = _manifest()
    before = df.copy()
    result = split_manifest(df, SplitParams(seed=3), near_pairs=[])
    pd.testing.assert_frame_equal(df, before)  # input untouched
    assert result.leakage.clean, result.leakage.summary()
    sizes = {k: len(v) for k, v in result.frames().items()}
    assert sum(sizes.values()) == len(df)
    assert abs(sizes["val"] / len(df) - 0.15) < 0.03
    assert abs(sizes["test"] / len(df) - 0.15) < 0.03
    for name, frame in result.frames().items():
        others = pd.concat([f for k, f in result.frames().items() if k != name])
        assert not set(frame["identity"]) & set(others["identity"])
    # stratified: each split's class shares are close to the whole's
    whole = df["label"].value_counts(normalize=True)
    for frame in result.frames().values():
        share = frame["label"].value_counts(normalize=True).reindex(whole.index, fill_value=0)
        assert (share - whole).abs().max() < 0.08
    assert list(result.train.columns) == list(df.columns)


def test_split_is_seeded() -> None:
    df = _manifest()
    a = split_manifest(df, SplitParams(seed=1))
    b = split_manifest(df, SplitParams(seed=1))
    c = split_manifest(df, SplitParams(seed=2))
    assert _split_of(a) == _split_of(b)
    assert _split_of(a) != _split_of(c)


def test_exact_and_near_duplicates_stay_together() -> None:
    df = _manifest(n_identities=40, per_identity=1)
    df.loc[5, "sha256"] = df.loc[30, "sha256"]  # exact duplicate of another person
    near = [("im0001", "im0020", 2), ("im0020", "im0039", 3)]  # a chain of near duplicates
    for seed in range(5):
        result = split_manifest(df, SplitParams(seed=seed), near_pairs=near)
        where = _split_of(result)
        assert where["im0005"] == where["im0030"]
        assert where["im0001"] == where["im0020"] == where["im0039"]
        assert result.leakage.clean


def test_group_ids_links_identity_sha_and_pairs() -> None:
    df = _manifest(n_identities=4, per_identity=2)
    df.loc[7, "sha256"] = df.loc[0, "sha256"]  # links p000 and p003
    groups = group_ids(df, [("im0002", "im0004", 1), ("im0002", "unknown", 0)])
    assert groups[0] == groups[1] == groups[6] == groups[7]
    assert groups[2] == groups[3] == groups[4] == groups[5]
    assert groups[0] != groups[2]


def test_source_split_is_kept() -> None:
    df = _manifest(n_identities=30, per_identity=1)
    df["usage"] = ["train"] * 20 + ["val"] * 5 + ["test"] * 5
    result = split_manifest(df, SplitParams(seed=0))
    for name, frame in result.frames().items():
        assert (frame["usage"] == name).all()
    assert result.leakage.reassigned == []
    ignored = split_manifest(df, SplitParams(seed=0, use_source_split=False))
    assert any((f["usage"] != n).any() for n, f in ignored.frames().items())


def test_source_split_conflict_moves_group_to_test() -> None:
    """FER2013 has the same picture in Training and PrivateTest: keep it in test only."""
    df = _manifest(n_identities=30, per_identity=1)
    df["usage"] = ["train"] * 20 + ["val"] * 5 + ["test"] * 5
    df.loc[3, "sha256"] = df.loc[27, "sha256"]  # train row duplicates a test row
    result = split_manifest(df, SplitParams(seed=0))
    assert _split_of(result)["im0003"] == "test"
    assert result.leakage.reassigned == [{"id": "im0003", "from": "train", "to": "test"}]
    assert result.leakage.clean


def test_missing_source_val_is_carved_from_train() -> None:
    """The FER image release has train/ and test/ only."""
    df = _manifest(n_identities=100, per_identity=1)
    df["usage"] = ["train"] * 80 + ["test"] * 20
    result = split_manifest(df, SplitParams(seed=0, val_fraction=0.15))
    assert (result.test["usage"] == "test").all() and len(result.test) == 20
    assert (result.val["usage"] == "train").all()
    assert 10 <= len(result.val) <= 20


def test_unlabeled_rows_split_by_size() -> None:
    df = _manifest(n_identities=50, per_identity=2)
    df["label"] = pd.array([pd.NA] * len(df), dtype="Int64")
    result = split_manifest(df, SplitParams(seed=0, val_fraction=0.2, test_fraction=0.1))
    assert len(result.val) == 20 and len(result.test) == 10
    assert result.leakage.counts_per_class["train"] == {"unlabeled": 70}


def test_empty_manifest() -> None:
    result = split_manifest(_manifest(n_identities=0), SplitParams())
    assert all(len(f) == 0 for f in result.frames().values()) and result.leakage.clean


def test_check_leakage_catches_identity_exact_and_near_crossings() -> None:
    df = _manifest(n_identities=6, per_identity=2)
    train, val, test = df.iloc[:4].copy(), df.iloc[4:8].copy(), df.iloc[8:].copy()
    assert check_leakage(train, val, test).clean
    val.loc[val.index[0], "identity"] = train["identity"].iloc[0]  # identity crossing
    test.loc[test.index[0], "sha256"] = train["sha256"].iloc[1]  # exact crossing
    near = [(train["id"].iloc[2], test["id"].iloc[1], 3), (train["id"].iloc[2], "x", 0)]
    report = check_leakage(train, val, test, near_pairs=near)
    assert not report.clean
    assert [c["identity"] for c in report.identity_crossings] == ["p000"]
    assert report.identity_crossings[0]["splits"] == ["train", "val"]
    assert len(report.exact_crossings) == 1
    assert report.exact_crossings[0]["splits"] == ["train", "test"]
    assert report.near_crossings == [
        {"a": "im0002", "b": "im0009", "distance": 3, "split_a": "train", "split_b": "test"}
    ]
    with pytest.raises(LeakageError, match="p000") as info:
        report.raise_if_leaky()
    assert "im0002" in str(info.value) and "im0009" in str(info.value)
    json.dumps(report.to_dict())  # JSON-ready
    assert report.to_dict()["n_crossings"]["near_duplicates"] == 1


def test_check_leakage_catches_ids_in_two_splits() -> None:
    df = _manifest(n_identities=3, per_identity=1)
    report = check_leakage(df.iloc[:2], df.iloc[1:], df.iloc[0:0])
    assert report.id_crossings == ["im0001"] and not report.clean


def _prepared(tmp_path: Path, df: pd.DataFrame, report: dict | None = None) -> Path:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    write_manifest(df, prepared / "manifest.csv")
    if report is not None:
        (prepared / "report.json").write_text(json.dumps(report))
    return prepared


def test_split_prepared_writes_splits(tmp_path: Path) -> None:
    df = _manifest(n_identities=20, per_identity=2)
    prepared = _prepared(tmp_path, df, {"near_duplicates": [["im0000", "im0010", 1]]})
    out = tmp_path / "splits"
    result = split_prepared(prepared, out, SplitParams(seed=0))
    assert sorted(p.name for p in out.iterdir()) == [
        "leakage.json",
        "test.csv",
        "train.csv",
        "val.csv",
    ]
    total = 0
    for name in ("train", "val", "test"):
        frame = read_manifest(out / f"{name}.csv")
        assert frame["id"].tolist() == result.frames()[name]["id"].tolist()
        total += len(frame)
    assert total == len(df)
    where = _split_of(result)
    assert where["im0000"] == where["im0010"]  # near pair from report.json kept together
    leakage = json.loads((out / "leakage.json").read_text())
    assert leakage["clean"] is True and leakage["params"]["seed"] == 0


def test_split_prepared_recomputes_near_pairs(tmp_path: Path) -> None:
    df = _manifest(n_identities=20, per_identity=1)
    df.loc[3, "phash"] = df.loc[15, "phash"]
    prepared = _prepared(tmp_path, df)  # no report.json
    result = split_prepared(prepared, tmp_path / "splits", SplitParams(seed=0))
    where = _split_of(result)
    assert where["im0003"] == where["im0015"]


def test_split_prepared_raises_on_leakage_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facelens.data.split as split_module

    df = _manifest(n_identities=10, per_identity=1)
    prepared = _prepared(tmp_path, df, {"near_duplicates": []})
    real = split_module.check_leakage

    def leaky(train, val, test, near_pairs=()):
        return real(train, val, test, near_pairs=[(train["id"].iloc[0], test["id"].iloc[0], 1)])

    monkeypatch.setattr(split_module, "check_leakage", leaky)
    with pytest.raises(LeakageError, match="near-duplicate"):
        split_prepared(prepared, tmp_path / "splits", SplitParams(seed=0))
    assert not (tmp_path / "splits").exists()


def test_split_params_validation() -> None:
    with pytest.raises(ValidationError, match="val_fraction \\+ test_fraction"):
        SplitParams(val_fraction=0.6, test_fraction=0.4)
    with pytest.raises(ValidationError, match="extra"):
        SplitParams(seeds=1)  # type: ignore[call-arg]


def test_data_params_validation() -> None:
    assert DataParams().source == "synth"
    with pytest.raises(ValidationError, match=r"data\.path is required"):
        DataParams(source="imagefolder")
    with pytest.raises(ValidationError, match=r"data\.table is required"):
        DataParams(source="attributes_table", path="faces")
    with pytest.raises(ValidationError, match="only used by source 'attributes_table'"):
        DataParams(source="fer2013_csv", path="f.csv", table="t.csv")
    with pytest.raises(ValidationError, match="image_size"):
        DataParams(image_size=8)
    with pytest.raises(ValidationError, match="extra"):
        DataParams(sorce="synth")  # type: ignore[call-arg]
