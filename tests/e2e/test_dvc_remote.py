"""A DVC remote round trip: a tiny project runs the whole pipeline (``dvc repro``), commits
to git and ``dvc push``es to a local-folder remote; a fresh ``git clone`` ``dvc pull``s the
prepared data, the splits, the model and the reports, and ``dvc status`` (workspace and remote)
is clean.

The metrics files and plot tables (``cache: false`` in ``dvc.yaml``) are not in the remote at
all: they travel by git, so the clone has them before ``dvc pull``.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _env(proj: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the stage commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def _run(cwd: Path, *cmd: str | Path) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, BIN / "dvc", *args)


def _same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files_a], shallow=False)
    assert not mismatch and not errors


def test_push_to_and_pull_from_a_local_remote(tmp_path: Path, dvc_project, pipeline_params):
    proj = dvc_project(tmp_path / "proj", pipeline_params(), git=True)
    remote = tmp_path / "remote"
    _dvc(proj, "repro")
    _dvc(proj, "remote", "add", "-d", "storage", str(remote))
    _run(proj, "git", "add", "-A")
    _run(proj, *GIT, "commit", "-qm", "pipeline results, with a local remote")
    _dvc(proj, "push")
    assert json.loads(_dvc(proj, "status", "--cloud", "--json")) == {}

    committed = set(_run(proj, "git", "ls-files").split())
    metrics = {
        "reports/metrics.json",
        "reports/explain/faithfulness.json",
        "reports/manifold/metrics.json",
    }
    assert {"dvc.lock", ".dvc/config", *metrics} <= committed
    assert any(f.startswith("reports/plots/") for f in committed)
    assert not any(f.startswith(("data/prepared/", "models/model/")) for f in committed)

    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(proj), str(clone))
    # cache: false outputs came with git; the cached ones are not there yet.
    for name in metrics:
        assert (clone / name).read_bytes() == (proj / name).read_bytes()
    assert not (clone / "data" / "prepared").exists() and not (clone / "models" / "model").exists()

    _dvc(clone, "pull")
    for out in ("data/prepared", "data/splits", "models/model", "reports/explain/figures"):
        _same_tree(proj / out, clone / out)
    for out in ("models/best_params.json", "models/run.json", "reports/registry.json"):
        assert (clone / out).read_bytes() == (proj / out).read_bytes()
    assert json.loads(_dvc(clone, "status", "--json")) == {}
    assert json.loads(_dvc(clone, "status", "--cloud", "--json")) == {}
