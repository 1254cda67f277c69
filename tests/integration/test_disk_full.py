"""The disk fills up while a stage writes: one line naming the file, earlier outputs intact,
and the rerun completes.

The full disk is a patched write that raises ``OSError(ENOSPC)`` on one file: ``torch.save``
of an epoch checkpoint and of the exported model (``train``), ``Path.write_bytes`` of the
report JSON (``evaluate`` and ``explain``, whose scripts run in process under the real
stage runner).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from facelens._io import write_error_line
from facelens.data.params import DataParams, SplitParams
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.data.synthfacs.params import SynthParams
from facelens.stages.common import run_stage
from facelens.tracking.runs import tracked_run
from facelens.training.fit import fit
from facelens.training.params import TrainParams

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def _enospc(*_: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _failing_save(monkeypatch: pytest.MonkeyPatch, name: str, nth: int = 1) -> None:
    """``torch.save`` raises ENOSPC on the ``nth`` write of a file called ``name`` (its
    temporary sibling ``.<name>.<random>.tmp``, as atomic writes name it)."""
    real, seen = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if Path(str(f)).name.startswith(f".{name}."):
            seen["n"] += 1
            if seen["n"] == nth:
                raise _enospc()
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def _datasets():
    from facelens.data.dataset import FaceDataset
    from facelens.data.transforms import make_transform

    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(12) % 2) * 3
    x = torch.randint(0, 100, (12, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    x[y == 3, :, 8:24, 8:24] += 150
    tf = make_transform(SIZE, train=False, augment=0.0, norm_mean=norm[0], norm_std=norm[1])
    train = FaceDataset.from_tensors(x, y, "expression", transform=tf)
    return train, train


def _model():
    from facelens.models.build import build_model
    from facelens.models.params import ModelParams

    model, _ = build_model(
        ModelParams(arch="vgg16_bn", weights="none", input_size=SIZE), num_outputs=7, seed=0
    )
    return model


def test_a_full_disk_at_an_epoch_checkpoint_keeps_the_last_one_and_the_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, val = _datasets()
    params = TrainParams(epochs=3, batch_size=6, augment=0.0, seed=4, precision="fp32")
    full = fit(_model(), train, val, params, "expression", progress=False)

    ckpt = tmp_path / "ckpt"
    _failing_save(monkeypatch, "checkpoint.pt", nth=2)  # epoch 2's checkpoint
    with pytest.raises(OSError) as caught:
        fit(_model(), train, val, params, "expression", checkpoint_dir=ckpt, progress=False)
    line = write_error_line(caught.value)
    assert line is not None and line.startswith(f"disk full while writing {ckpt}/checkpoint.pt;")
    assert not [p.name for p in ckpt.iterdir() if p.name.endswith(".tmp")]
    kept = [torch.load(p, weights_only=True)["epoch"] for p in sorted(ckpt.glob("checkpoint*.pt"))]
    assert kept == [1]  # epoch 1's checkpoint survives the failed write of epoch 2's

    monkeypatch.undo()
    resumed = fit(_model(), train, val, params, "expression", checkpoint_dir=ckpt, progress=False)
    assert resumed.resumed_from == 1  # from the kept checkpoint, not from scratch
    assert [e.train_loss for e in resumed.epochs] == [e.train_loss for e in full.epochs]


def test_a_full_disk_while_exporting_the_model_keeps_the_previous_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export_tiny_model
) -> None:
    from facelens.models.export import export_model, load_exported

    exported = export_tiny_model(tmp_path)
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    model, meta = load_exported(exported, torch.device("cpu"))
    torch.nn.init.zeros_(next(model.parameters()))  # a different model to write over it
    _failing_save(monkeypatch, "state_dict.pt")
    with pytest.raises(OSError) as caught:
        export_model(model, meta, exported)
    assert caught.value.filename == str(exported / "state_dict.pt")
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before  # intact, no temp
    monkeypatch.undo()
    export_model(model, meta, exported)
    assert (exported / "state_dict.pt").read_bytes() != before["state_dict.pt"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("disk_full")
    prepared, splits = root / "prepared", root / "splits"
    prepare_dataset(DataParams(image_size=SIZE, synth=SynthParams(n_identities=8)), prepared)
    split_prepared(prepared, splits, SplitParams(val_fraction=0.2, test_fraction=0.4))
    return prepared, splits


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("stage", "outputs", "report"),
    [
        ("evaluate", ["--metrics", "metrics.json", "--plots", "plots"], "metrics.json"),
        (
            "explain",
            ["--figures", "figures", "--maps", "maps", "--metrics", "faithfulness.json"],
            "faithfulness.json",
        ),
    ],
)
def test_a_full_disk_while_writing_a_report_is_one_line_and_the_rerun_completes(
    stage: str,
    outputs: list[str],
    report: str,
    tiny_data,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sqlite_store,
    export_tiny_model,
) -> None:
    sqlite_store("facelens")
    prepared, splits = tiny_data
    with tracked_run("train expression", tags={"facelens.stage": "train"}) as run:
        mlflow.log_metric("best_val_metric", 0.5)
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": run.info.run_id}))
    raw = {
        "explain": {"methods": ["gradcam"], "per_class": 1, "road": False, "batch_size": 8},
        "tracking": {"experiment": "facelens"},
    }
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(raw))
    out = tmp_path / "reports"
    argv = [
        "--params", str(params_file), "--prepared", str(prepared), "--splits", str(splits),
        "--model-dir", str(export_tiny_model(tmp_path)), "--run-file", str(run_file),
        *[str(out / a) if i % 2 else a for i, a in enumerate(outputs)],
    ]  # fmt: skip
    main = _script(stage).main
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("FACELENS_PROGRESS", "off")  # this test reads stderr for the error line

    real = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name.startswith(f".{report}."):
            raise _enospc()
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    previous = signal.getsignal(signal.SIGINT)  # run_stage installs its Ctrl-C handler
    monkeypatch.setattr(signal, "signal", lambda *a: previous)
    capsys.readouterr()  # what the fixtures printed (MLflow creating the store)
    assert run_stage(lambda: main(argv)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: disk full while writing {out / report};"), err[0]
    assert not (out / report).exists()
    details = out / report.replace(".json", "_details.json")
    assert json.loads(details.read_text())  # written before the failure: intact
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"

    monkeypatch.setattr(Path, "write_bytes", real)
    assert run_stage(lambda: main(argv)) == 0
    assert json.loads((out / report).read_text())
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_a_full_mlflow_database_is_one_line_naming_it_and_earlier_runs_are_kept(
    tiny_data,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sqlite_store,
    export_tiny_model,
) -> None:
    """mlflow.db cannot grow (SQLite's ``max_page_count`` set to its size on every
    connection, and each write of the stage preceded by one that needs new pages, so SQLite
    itself raises "database or disk is full"): ``evaluate``, which logs into the train run,
    ends with one line naming the file; the train run is intact and the rerun completes
    once there is room."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    uri = sqlite_store("facelens")
    db = Path(uri[len("sqlite:///") :])
    prepared, splits = tiny_data
    with tracked_run("train expression", tags={"facelens.stage": "train"}) as run:
        mlflow.log_metric("best_val_metric", 0.5)
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": run.info.run_id}))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps({"tracking": {"experiment": "facelens"}}))
    out = tmp_path / "reports"
    argv = [
        "--params", str(params_file), "--prepared", str(prepared), "--splits", str(splits),
        "--model-dir", str(export_tiny_model(tmp_path)), "--run-file", str(run_file),
        "--metrics", str(out / "metrics.json"), "--plots", str(out / "plots"),
    ]  # fmt: skip
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE filler (b BLOB)")
        pages = con.execute("PRAGMA page_count").fetchone()[0]

    def cap(dbapi_connection, *_: object) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    def grow(conn, cursor, statement: str, *_: object) -> None:
        # A write that needs new pages, on the stage's own connection and transaction:
        # SQLite itself answers SQLITE_FULL, as it does when the disk is full.
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            cursor.execute("INSERT INTO filler VALUES (zeroblob(1000000))")

    listeners = [("connect", cap), ("checkout", cap), ("before_cursor_execute", grow)]
    for name, fn in listeners:
        event.listen(Engine, name, fn)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    previous = signal.getsignal(signal.SIGINT)  # run_stage installs its Ctrl-C handler
    monkeypatch.setattr(signal, "signal", lambda *a: previous)
    main = _script("evaluate").main
    capsys.readouterr()
    try:
        code = run_stage(lambda: main(argv))
    finally:
        for name, fn in listeners:
            event.remove(Engine, name, fn)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: disk full while writing {db.resolve()};"), err[0]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = MlflowClient().get_run(run.info.run_id)
    assert kept.info.status == "FINISHED" and kept.data.metrics["best_val_metric"] == 0.5

    assert run_stage(lambda: main(argv)) == 0
    assert json.loads((out / "metrics.json").read_text())
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
