"""``mlflow run . -e train --env-manager local`` on a tiny copy of the project: the project's
run is the parent of the stages' runs (pretrain, the study, train), the ``-P`` value reaches
``params.yaml`` through ``dvc exp run -S``, and the stages' runs carry the lineage tags a
``dvc repro`` run has.

A bad ``-P`` key or a project run in another experiment stops the launcher with one line
before DVC starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
LINEAGE = {"git_commit", "git_dirty", "data_version", "params_hash", "mlflow_version"}


def _env(proj: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python`, `dvc` in the commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    return env


def _mlflow_run(proj: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "mlflow"), "run", ".", "--env-manager", "local", *args],
        cwd=proj,
        env=_env(proj),
        capture_output=True,
        text=True,
        timeout=500,
    )


@pytest.fixture
def project(tmp_path: Path, dvc_project, pipeline_params) -> Path:
    proj = dvc_project(tmp_path / "proj", pipeline_params(), git=True)
    shutil.copy(REPO / "MLproject", proj / "MLproject")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "add", "MLproject"], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-qm", "MLproject"], cwd=proj, check=True)
    return proj


def test_mlflow_run_nests_stage_runs_under_the_project_run(project: Path) -> None:
    out = _mlflow_run(
        project, "-e", "train", "--experiment-name", "facelens", "-P", "train.epochs=2"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]

    client = MlflowClient(tracking_uri=_env(project)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("facelens")
    runs = client.search_runs([experiment.experiment_id])
    by_stage: dict[str, list] = {}
    for run in runs:
        by_stage.setdefault(run.data.tags.get("facelens.stage", "trial/study"), []).append(run)
    (proj_run,) = by_stage["mlproject"]
    (train,) = by_stage["train"]
    (pretrain,) = by_stage["pretrain"]  # train depends on the pretrained backbone
    studies = [
        r for r in runs if r.data.tags.get("study_name") and "trial_number" not in r.data.tags
    ]
    trials = [r for r in runs if "trial_number" in r.data.tags]
    assert len(studies) == 1 and len(trials) == 1, [r.info.run_name for r in runs]
    assert len(runs) == 5  # project, pretrain, study, trial, train: none collapsed, none extra

    pid = proj_run.info.run_id
    assert proj_run.info.status == "FINISHED"
    assert proj_run.data.tags["mlflow.project.entryPoint"] == "train"
    assert proj_run.data.params == {"train.epochs": "2"}
    assert proj_run.data.tags["dvc.experiment"] == f"mlflow-{pid[:12]}"
    assert "mlflow.parentRunId" not in proj_run.data.tags
    assert studies[0].data.tags["mlflow.parentRunId"] == pid
    assert trials[0].data.tags["mlflow.parentRunId"] == studies[0].info.run_id
    assert train.data.tags["mlflow.parentRunId"] == pid
    assert pretrain.data.tags["mlflow.parentRunId"] == pid
    assert all(r.info.status == "FINISHED" for r in runs)

    # Same lineage as a `dvc repro` run, and the project run shares it.
    assert set(train.data.tags) >= LINEAGE and set(proj_run.data.tags) >= LINEAGE
    for key in ("params_hash", "data_version", "git_commit"):
        assert proj_run.data.tags[key] == train.data.tags[key], key
    assert train.data.params["train.epochs"] == "2"  # -P train.epochs=2 reached the stage

    # The -P went through `dvc exp run -S`: params.yaml and the recorded DVC experiment.
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 2
    shown = subprocess.run(
        [str(BIN / "dvc"), "exp", "show", "--json"],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        check=True,
    )
    names = {
        rev.get("name")
        for commit in json.loads(shown.stdout)
        for exp in commit.get("experiments") or []
        for rev in exp.get("revs") or []
    }
    assert f"mlflow-{pid[:12]}" in names


def test_bad_parameter_or_experiment_stops_before_dvc(project: Path) -> None:
    typo = _mlflow_run(
        project, "-e", "prepare", "--experiment-name", "facelens", "-P", "data.image_siz=8"
    )
    assert typo.returncode != 0
    errors = [line for line in typo.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "image_siz" in errors[0], typo.stderr[-3000:]

    elsewhere = _mlflow_run(project, "-e", "prepare")  # MLflow's Default experiment
    assert elsewhere.returncode != 0
    errors = [line for line in elsewhere.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--experiment-name facelens" in errors[0], elsewhere.stderr[-3000:]
    assert not (project / "data" / "prepared").exists()  # DVC never ran
