"""Several tuning workers on the default SQLite files stop with one line, never a
``database is locked`` traceback (the PostgreSQL workers are in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from facelens.cli.app import app
from facelens.config import load_params
from facelens.errors import ConfigError
from facelens.stages import tune
from facelens.tuning.storage import sqlite_guard

REPO = Path(__file__).resolve().parents[2]


def _params_file(tmp_path: Path, **tune_kw) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tune"].update({"storage": f"sqlite:///{tmp_path}/optuna.db", **tune_kw})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_second_worker_on_a_sqlite_study_stops_with_one_line(tmp_path: Path) -> None:
    path = _params_file(tmp_path)
    storage = load_params(path).tune.storage
    with sqlite_guard(storage, "tune.storage"):  # the first worker, e.g. `dvc repro tune`
        result = CliRunner().invoke(app, ["tune", "worker", "--params", str(path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "in use by another tuning worker" in lines[0] and "postgresql://" in lines[0]


def test_stage_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    params = load_params(_params_file(tmp_path, workers=2))
    with pytest.raises(ConfigError, match=r"tune.workers=2 but tune.storage is sqlite") as info:
        tune.run(params, tmp_path / "prepared", tmp_path / "splits", cache_dir=tmp_path / "c")
    assert "\n" not in str(info.value)
