"""Interrupting a real ``dvc repro`` during ``tune`` and ``train``, then running it again.

A copy of the pipeline (``dvc.yaml``, ``params.yaml`` shrunk to 32 px and a few identities,
``pipelines/``, ``src/``) is initialised as a DVC project in a temporary directory. ``dvc
repro`` runs in its own process group and gets SIGINT there, as Ctrl-C in a terminal would
deliver it: during ``tune`` once a trial has completed, during ``train`` once an epoch
checkpoint exists. The second ``dvc repro`` must keep the finished trials of the same study
and resume the same MLflow training run from its checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from facelens.device import cpu_has_bf16

# Four dvc repro runs (interrupted and resumed tune and train): well past the global 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

BIN = Path(sys.executable).parent
_WAIT_S = 600


def _project(root: Path, dvc_project, pipeline_params) -> Path:
    params = pipeline_params()
    params["train"].update({"epochs": 60, "batch_size": 16})
    params["tune"].update({"n_trials": 6, "pruner": "none", "train_fraction": 1.0})
    params["tune"]["space"].update({"epochs": [3], "batch_size": [16]})
    return dvc_project(root / "proj", params)


def _env(proj: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the stage commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(proj: Path, target: str, log: Path) -> subprocess.Popen:
    """``dvc repro target`` in its own process group, its output appended to ``log``."""
    with log.open("a") as out:
        return subprocess.Popen(
            [BIN / "dvc", "repro", target],
            cwd=proj,
            env=_env(proj),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _repro(proj: Path, target: str, log: Path) -> int:
    """Run ``dvc repro target`` to the end; its exit code."""
    return _start(proj, target, log).wait(timeout=_WAIT_S)


def _interrupt_when(
    proj: Path,
    target: str,
    log: Path,
    ready: Callable[[], bool],
    sig: signal.Signals = signal.SIGINT,  # what Ctrl-C in a terminal sends
) -> int:
    """Start ``dvc repro target``; send ``sig`` to its process group once ``ready()``; its
    exit code."""
    proc = _start(proj, target, log)
    deadline = time.monotonic() + _WAIT_S
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"dvc repro {target} ended before the interrupt:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"dvc repro {target} never became ready:\n{log.read_text()}")
            time.sleep(0.2)
        os.killpg(proc.pid, sig)
        code = proc.wait(timeout=_WAIT_S)
        # DVC may exit before the stage it ran has closed its runs and printed its last line:
        # wait for the whole group (a slow machine can take minutes), then read the log.
        group_deadline = time.monotonic() + _WAIT_S
        while _group_alive(proc.pid):
            if time.monotonic() > group_deadline:
                pytest.fail(
                    f"the stage outlived dvc repro {target} by {_WAIT_S} s after {sig.name}:\n"
                    + log.read_text()
                )
            time.sleep(0.2)
        return code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _trials(proj: Path) -> list[tuple[str, int, str, str | None]]:
    """(study name, trial number, state, datetime_start) of every trial in optuna.db."""
    db = proj / "optuna.db"
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute(
                "SELECT s.study_name, t.number, t.state, t.datetime_start FROM trials t "
                "JOIN studies s ON s.study_id = t.study_id ORDER BY t.number"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def _complete(proj: Path) -> list[tuple[str, int, str, str | None]]:
    return [t for t in _trials(proj) if t[2] == "COMPLETE"]


def test_interrupted_repro_resumes_the_study_and_the_training(
    tmp_path: Path, dvc_project, pipeline_params
) -> None:
    proj = _project(tmp_path, dvc_project, pipeline_params)
    log = tmp_path / "dvc.log"

    # --- tune: interrupted after the first completed trial, then run again -------------------
    code = _interrupt_when(proj, "tune", log, lambda: len(_complete(proj)) >= 1)
    assert code != 0, "an interrupted dvc repro must fail"
    assert not (proj / "models" / "best_params.json").exists()
    kept = _complete(proj)
    assert 1 <= len(kept) < 6
    assert len({t[0] for t in _trials(proj)}) == 1

    done = _repro(proj, "tune", log)
    assert done == 0, log.read_text()
    complete = _complete(proj)
    assert len(complete) == 6  # n_trials counts the kept trials: only the rest ran
    assert set(kept) <= set(complete)  # same study, same trials, same start times
    assert len({t[0] for t in _trials(proj)}) == 1
    text = log.read_text()
    assert "resumed: " in text
    assert "interrupted (SIGINT): finished trials and epoch checkpoints are kept" in text, text
    assert 'pipelines/tune.py", line' not in text, text  # Ctrl-C: one line, not a stack trace

    # --- train: interrupted after an epoch checkpoint, then run again -----------------------
    def checkpointed() -> bool:
        return any((proj / "cache" / "checkpoints").glob("*/checkpoint.pt"))

    # SIGTERM this time: what schedulers and `docker stop` send is handled like Ctrl-C.
    code = _interrupt_when(proj, "train", log, checkpointed, signal.SIGTERM)
    assert code != 0
    assert not (proj / "models" / "run.json").exists()
    (run_id_file,) = (proj / "cache" / "checkpoints").glob("*/mlflow_run_id")
    first_run = run_id_file.read_text().strip()
    mlflow.set_tracking_uri(_env(proj)["MLFLOW_TRACKING_URI"])
    assert MlflowClient().get_run(first_run).info.status == "KILLED"
    text = log.read_text()
    assert "interrupted (SIGTERM): finished trials and epoch checkpoints" in text, text

    done = _repro(proj, "train", log)
    assert done == 0, log.read_text()
    info = json.loads((proj / "models" / "run.json").read_text())
    assert info["run_id"] == first_run  # the same MLflow run continued
    run = MlflowClient().get_run(first_run)
    assert run.info.status == "FINISHED"
    resumed = int(run.data.tags["resumed_from_epoch"])
    assert run.data.tags["facelens.device"] == "cpu"  # device auto on a CPU-only machine
    # precision auto: bf16 on a CPU with native bf16 units (this one), fp32 elsewhere
    assert run.data.tags["facelens.precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert run.data.tags["facelens.torch_version"]
    assert 1 <= resumed < 60
    steps = [m.step for m in MlflowClient().get_metric_history(first_run, "val_metric")]
    assert len(steps) == len(set(steps)) and max(steps) == 60  # no epoch trained twice
    assert set(range(resumed + 1, 61)) <= set(steps)
    text = log.read_text()
    assert f"from its epoch-{resumed} checkpoint" in text
    assert 'pipelines/train.py", line' not in text, text
