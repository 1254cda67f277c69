"""Two ``dvc repro`` at once in one workspace: the second stops with DVC's lock message
(naming the first's PID) while the first runs ``tune`` (writing ``optuna.db`` and
``mlflow.db``); the first completes, and ``dvc.lock``, ``mlflow.db`` and ``optuna.db`` are intact (``PRAGMA integrity_check``, the lock
file parses and names the stages run, no MLflow run is left RUNNING). A third ``dvc repro``
afterwards finds everything up to date.

The tiny params (32 px, 12 identities, one 1-epoch trial) keep it to about a minute.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent
_WAIT_S = 600
#: DVC's messages when another process holds the workspace's lock (``.dvc/tmp/lock``) or the
#: read/write lock of a stage's dependencies and outputs (``.dvc/tmp/rwlock``; what DVC 3's
#: ``repro`` takes stage by stage, naming the process that holds it).
LOCK_MESSAGES = ("Unable to acquire lock", "is busy, it is being blocked by")


def _env(proj: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the stage commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(proj: Path, log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(
            [BIN / "dvc", "repro", "tune"],
            cwd=proj,
            env=_env(proj),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=30) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_second_dvc_repro_stops_on_the_lock_and_nothing_is_corrupted(
    tmp_path: Path, dvc_project, pipeline_params
) -> None:
    proj = dvc_project(tmp_path / "proj", pipeline_params())
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _start(proj, first_log)
    second: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + _WAIT_S
        while "Running stage 'tune'" not in first_log.read_text():
            if first.poll() is not None:
                pytest.fail(f"the first dvc repro ended early:\n{first_log.read_text()}")
            assert time.monotonic() < deadline, first_log.read_text()
            time.sleep(0.2)
        second = _start(proj, second_log)
        second_code = second.wait(timeout=120)
        assert first.poll() is None, "the second dvc repro must run while the first holds the lock"
        first_code = first.wait(timeout=_WAIT_S)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    said = second_log.read_text()
    assert second_code != 0
    assert any(message in said for message in LOCK_MESSAGES), said
    if LOCK_MESSAGES[1] in said:
        assert f"(PID {first.pid})" in said, said  # names the first dvc repro
    assert "Running stage" not in said
    assert first_code == 0, first_log.read_text()

    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert {"prepare", "split", "tune"} <= set(lock["stages"])
    for db in ("mlflow.db", "optuna.db"):
        assert _integrity(proj / db) == "ok", db
    with sqlite3.connect(proj / "mlflow.db") as con:
        statuses = {s for (s,) in con.execute("SELECT status FROM runs")}
    assert statuses == {"FINISHED"}
    with sqlite3.connect(proj / "optuna.db") as con:
        states = [s for (s,) in con.execute("SELECT state FROM trials")]
    assert states == ["COMPLETE"]

    third = subprocess.run(
        [BIN / "dvc", "repro", "tune"],
        cwd=proj,
        env=_env(proj),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Running stage" not in third.stdout, third.stdout  # everything was up to date
