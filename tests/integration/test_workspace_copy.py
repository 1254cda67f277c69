"""A workspace copied (``cp -r``) or moved with its ``mlflow.db``: a stage or a ``facelens``
command in the copy never writes into the original's ``mlruns/``. It stops with one line naming
both paths and the fixes; after ``facelens runs relocate`` (or with its own experiment) the
copy's runs and artifacts land in the copy.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from facelens.cli.app import app
from facelens.errors import ConfigError
from facelens.tracking.runs import configure, configure_stage, tracked_run
from facelens.tracking.workspace import WORKSPACE_TAG

runner = CliRunner()
EXPERIMENT = "facelens"


def _use(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in ``workspace`` with its ``mlflow.db`` (an absolute URI: MLflow caches one store
    per URI, and ``sqlite:///mlflow.db`` would name every test's database alike)."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace / 'mlflow.db'}")


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _log_one_run(text: str) -> str:
    """A stage-like run with one artifact (the tracking URI and experiment are configured)."""
    with tracked_run("stage") as run:
        mlflow.log_text(text, "notes/report.txt")
    return run.info.artifact_uri


@pytest.fixture
def original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace ``orig/`` that ran one stage with the default ``sqlite:///mlflow.db``
    (so the experiment's artifact location is the absolute ``orig/mlruns/<id>``)."""
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    workspace = tmp_path / "orig"
    workspace.mkdir()
    _use(workspace, monkeypatch)
    configure_stage(None, EXPERIMENT)
    assert _log_one_run("original").startswith(str(workspace / "mlruns"))
    return workspace


def _copy(original: Path, monkeypatch: pytest.MonkeyPatch, name: str = "copy") -> Path:
    copy = original.parent / name
    shutil.copytree(original, copy, symlinks=True)
    _use(copy, monkeypatch)
    return copy


def _untag(workspace: Path) -> None:
    """Remove the workspace tag, as in a store written before facelens recorded it."""
    import sqlite3

    with sqlite3.connect(workspace / "mlflow.db") as conn:
        conn.execute("DELETE FROM experiment_tags WHERE key = ?", (WORKSPACE_TAG,))


@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "older-store"])
def test_a_stage_in_a_copy_stops_with_one_line(original, monkeypatch, tagged):
    if not tagged:
        _untag(original)
    before = _tree(original)
    copy = _copy(original, monkeypatch)
    with pytest.raises(ConfigError) as caught:
        configure_stage(None, EXPERIMENT)
    message = str(caught.value)
    assert "\n" not in message
    for needle in (str(copy / "mlflow.db"), str(original / "mlruns"), "facelens runs relocate"):
        assert needle in message, message
    assert _tree(original) == before


def test_facelens_compare_log_in_a_copy_stops_with_one_line(original, monkeypatch):
    _use(original, monkeypatch)
    run_id = mlflow.search_runs(experiment_names=[EXPERIMENT]).run_id[0]
    result = runner.invoke(app, ["compare", run_id, "--out", "r.html", "--log"])
    assert result.exit_code == 0, result.output  # the original logs to its own mlruns
    before = _tree(original)
    copy = _copy(original, monkeypatch)
    result = runner.invoke(app, ["compare", run_id, "--out", "r2.html", "--log"])
    assert result.exit_code == 1, result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert str(copy) in line and str(original / "mlruns") in line
    assert _tree(original) == before


def test_a_moved_workspace_does_not_recreate_the_old_folder(original, monkeypatch):
    moved = original.parent / "moved"
    original.rename(moved)
    _use(moved, monkeypatch)
    with pytest.raises(ConfigError, match="copied or moved"):
        configure_stage(None, EXPERIMENT)
    assert not original.exists()


def test_relocate_makes_the_copys_runs_land_in_the_copy(original, monkeypatch):
    before = _tree(original)
    copy = _copy(original, monkeypatch)
    result = runner.invoke(app, ["runs", "relocate", "--dry-run"])
    assert result.exit_code == 0, result.output
    for name in (EXPERIMENT, "Default"):  # MLflow's Default experiment was copied too
        assert f"would move experiment '{name}': {original} -> {copy}" in result.stdout
    with pytest.raises(ConfigError):  # a dry run changes nothing
        configure_stage(None, EXPERIMENT)
    result = runner.invoke(app, ["runs", "relocate"])
    assert result.exit_code == 0, result.output
    assert "moved 2 experiment(s)" in result.stdout
    configure_stage(None, EXPERIMENT)
    artifact_uri = _log_one_run("copy")
    assert artifact_uri.startswith(str(copy / "mlruns"))
    assert (Path(artifact_uri) / "notes/report.txt").read_text() == "copy"
    # the run copied from the original reads its artifact from the copy's files
    first = mlflow.search_runs(experiment_names=[EXPERIMENT], order_by=["start_time ASC"])
    old_uri = mlflow.get_run(first.run_id[0]).info.artifact_uri
    assert old_uri.startswith(str(copy / "mlruns"))
    assert mlflow.artifacts.load_text(f"runs:/{first.run_id[0]}/notes/report.txt") == "original"
    assert _tree(original) == before
    assert runner.invoke(app, ["runs", "relocate"]).stdout.startswith("moved 0 experiment(s)")


def test_the_copy_with_its_own_experiment_logs_into_the_copy(original, monkeypatch):
    before = _tree(original)
    copy = _copy(original, monkeypatch)
    configure_stage(None, "facelens-copy")
    assert _log_one_run("copy").startswith(str(copy / "mlruns"))
    assert _tree(original) == before


def test_artifacts_kept_outside_any_workspace_are_used_as_they_are(tmp_path, monkeypatch):
    """A shared artifact folder elsewhere is not a copied workspace: no error, before or
    after the workspace moves."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    _use(workspace, monkeypatch)
    shared = tmp_path / "shared-artifacts"
    configure(None, EXPERIMENT, artifact_location=str(shared))
    assert _log_one_run("one").startswith(str(shared))
    moved = _copy(workspace, monkeypatch, "ws2")
    configure_stage(None, EXPERIMENT)
    assert _log_one_run("two").startswith(str(shared))
    client = mlflow.MlflowClient()
    assert client.get_experiment_by_name(EXPERIMENT).tags[WORKSPACE_TAG] == str(moved)


def test_a_registered_model_loads_from_the_relocated_copy_alone(
    original, monkeypatch, export_tiny_model
):
    """The copy's registry (model versions, logged models) follows too: after relocating, the
    original can be deleted and ``models:/<name>/1`` still loads, from the copy's files."""
    from facelens.serving.log_model import log_pyfunc_model
    from facelens.tracking.registry import register

    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{original / 'mlflow.db'}")
    with tracked_run("train tiny"):
        info = log_pyfunc_model(export_tiny_model(original.parent / "export"))
    register(info.model_uri, "tiny-expression")
    copy = _copy(original, monkeypatch)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{copy / 'mlflow.db'}")
    assert runner.invoke(app, ["runs", "relocate"]).exit_code == 0
    shutil.rmtree(original)
    model = mlflow.pyfunc.load_model("models:/tiny-expression/1")
    assert model.metadata.run_id == info.run_id
    import sqlite3

    with sqlite3.connect(copy / "mlflow.db") as conn:
        paths = conn.execute(
            "SELECT artifact_location FROM experiments UNION ALL SELECT artifact_uri FROM runs "
            "UNION ALL SELECT artifact_location FROM logged_models "
            "UNION ALL SELECT coalesce(source, '') || ' ' || coalesce(storage_location, '') "
            "FROM model_versions"
        ).fetchall()
    assert len(paths) >= 6 and not [p for (p,) in paths if str(original) in p]
    assert not original.exists()
