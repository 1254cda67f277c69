"""DVC experiments carry their results: two tiny experiments of the real pipeline, compared
and restored with DVC's own commands.

A copy of the project (a git repository) runs ``dvc exp run`` twice with different params.
Both experiments' headline metrics must be in ``dvc exp show --json``, ``dvc metrics diff``
between them must show the change, and ``dvc exp apply`` must bring one experiment's
metrics, plot tables and cached reports back into the workspace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

BIN = Path(sys.executable).parent


def _dvc(proj: Path, *args: str) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the stage commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    out = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=proj, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, f"dvc {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """Experiment name -> its workspace data (metrics files) in ``dvc exp show --json``."""
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name"):
                    found[rev["name"]] = rev["data"]
    return found


def test_experiments_carry_metrics_and_plots(tmp_path: Path, dvc_project, pipeline_params):
    proj = dvc_project(tmp_path / "proj", pipeline_params(), git=True)
    _dvc(proj, "exp", "run", "-n", "base")
    _dvc(proj, "exp", "run", "-n", "wider", "-S", "train.epochs=2", "-S", "train.dropout=0.0")

    exps = _experiments(json.loads(_dvc(proj, "exp", "show", "--json")))
    assert {"base", "wider"} <= set(exps)
    metrics = {}
    for name in ("base", "wider"):
        files = exps[name]["metrics"]
        assert "error" not in files["reports/metrics.json"], files["reports/metrics.json"]
        metrics[name] = files["reports/metrics.json"]["data"]
        assert 0.0 <= metrics[name]["macro_f1"] <= 1.0
        for other in ("reports/explain/faithfulness.json", "reports/manifold/metrics.json"):
            assert "error" not in files[other] and files[other]["data"], other
        assert exps[name]["params"]["params.yaml"]["data"]["train"]["epochs"] == (
            1 if name == "base" else 2
        )

    diff = json.loads(_dvc(proj, "metrics", "diff", "base", "wider", "--all", "--json"))
    assert diff["reports/metrics.json"]["macro_f1"]["old"] == metrics["base"]["macro_f1"]
    assert diff["reports/metrics.json"]["macro_f1"]["new"] == metrics["wider"]["macro_f1"]
    changed = [
        (path, key)
        for path, values in diff.items()
        for key, d in values.items()
        if d.get("old") != d.get("new")
    ]
    assert changed, "two differently trained models gave identical metrics everywhere"

    _dvc(proj, "exp", "apply", "base")
    workspace = json.loads((proj / "reports" / "metrics.json").read_text())
    assert workspace["macro_f1"] == metrics["base"]["macro_f1"]
    assert (proj / "reports" / "plots" / "confusion.csv").is_file()
    figures = proj / "reports" / "explain" / "figures"
    assert figures.is_dir() and any(figures.glob("cam_grid_*.png"))  # restored from the cache
    assert json.loads(_dvc(proj, "status", "--json")) == {}

    # Each stage that logs into the train run says where it ran (device auto: the CPU here).
    from mlflow import MlflowClient

    run_id = json.loads((proj / "models" / "run.json").read_text())["run_id"]
    tags = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}").get_run(run_id).data.tags
    assert tags["facelens.device"] == "cpu"
    for stage in ("evaluate", "explain", "manifold"):
        assert tags[f"facelens.{stage}.device"] == "cpu", stage
