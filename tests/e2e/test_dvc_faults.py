"""A real ``dvc repro`` SIGKILLed mid-stage, and a bad param under a bare ``dvc repro``.

One tiny project (32 px, 12 identities, one 1-epoch trial) serves the whole module:

1. ``dvc repro train`` is SIGKILLed (the whole process group: DVC and the stage, as the OOM
   killer or a lost node would) once an epoch checkpoint exists, then ``dvc repro explain`` is
   SIGKILLed while the explain stage writes its outputs or logs into the train run. Finished
   stages keep their ``dvc.lock`` entries, the killed stage has none and nothing of its outputs
   is in the cache; the rerun completes, training resumes from its checkpoint, and the runs
   the dead processes left ``RUNNING`` are closed by the reaper of the next stage.
2. A bad ``explain`` param under a bare ``dvc repro``: the stage stops with one line after DVC
   has removed its outputs, and the README's recipe (``git checkout`` the params and the
   ``cache: false`` metrics, ``dvc checkout <stage>``) brings every output back unchanged.
   ``facelens params check`` (what ``make repro`` runs first) refuses the file before DVC.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

# Three dvc repro runs of a tiny pipeline and a few dvc/git commands.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

BIN = Path(sys.executable).parent
_WAIT_S = 600
_CACHED_OUTS = {
    "train": ("models/model", "models/run.json"),
    "explain": (
        "reports/explain/figures",
        "reports/explain/maps",
        "reports/explain/faithfulness_details.json",
    ),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, dvc_project, pipeline_params) -> Path:
    params = pipeline_params()
    params["train"].update({"epochs": 10, "batch_size": 16})
    return dvc_project(tmp_path_factory.mktemp("faults") / "proj", params, git=True)


def _env(proj: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the stage commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(proj: Path, target: str, log: Path) -> subprocess.Popen:
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
    return _start(proj, target, log).wait(timeout=_WAIT_S)


def _kill_when(proj: Path, target: str, log: Path, ready: Callable[[], bool]) -> None:
    """Start ``dvc repro target`` and SIGKILL its whole process group once ``ready()``."""
    proc = _start(proj, target, log)
    deadline = time.monotonic() + _WAIT_S
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"dvc repro {target} ended before the kill:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"dvc repro {target} never became ready:\n{log.read_text()}")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _run(proj: Path, *cmd: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=proj, env=_env(proj), capture_output=True, text=True
    )


def _locked(proj: Path) -> set[str]:
    lock = proj / "dvc.lock"
    return (
        set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) if lock.is_file() else set()
    )


def _runs(proj: Path) -> dict[str, str]:
    """run id -> status of every run in the project's MLflow store."""
    with sqlite3.connect(proj / "mlflow.db", timeout=30) as con:
        return dict(con.execute("SELECT run_uuid, status FROM runs").fetchall())


def _tags(proj: Path, run_id: str) -> dict[str, str]:
    with sqlite3.connect(proj / "mlflow.db", timeout=30) as con:
        rows = con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))
        return dict(rows.fetchall())


def _md5s(paths: list[Path]) -> set[str]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {hashlib.md5(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def _cache(proj: Path) -> set[str]:
    root = proj / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name for p in root.glob("*/*") if not p.name.endswith(".dir")}


def _nothing_of_cached(proj: Path, stage: str) -> None:
    """``stage`` has no dvc.lock entry, DVC says it changed, and no file of its outputs (as
    the killed process left them) is in the cache."""
    assert stage not in _locked(proj)
    left = _md5s([proj / out for out in _CACHED_OUTS[stage] if (proj / out).exists()])
    assert not left & _cache(proj), f"{stage}: a partial output is in the DVC cache"
    status = _run(proj, BIN / "dvc", "status", stage)
    assert status.returncode == 0 and stage in status.stdout, status.stdout


def _train_run_id(proj: Path) -> str:
    (run_id_file,) = (proj / "cache" / "checkpoints").glob("*/mlflow_run_id")
    return run_id_file.read_text().strip()


def test_sigkilled_stages_cache_nothing_and_the_rerun_resumes(project: Path, tmp_path: Path):
    proj, log = project, tmp_path / "dvc.log"

    # --- train, SIGKILLed once an epoch checkpoint exists ----------------------------------
    _kill_when(proj, "train", log, lambda: any(proj.glob("cache/checkpoints/*/checkpoint.pt")))
    assert _locked(proj) == {"prepare", "split", "pretrain", "tune"}  # finished stages kept
    _nothing_of_cached(proj, "train")
    assert not (proj / "models" / "run.json").exists()
    killed_train = _train_run_id(proj)
    assert _runs(proj)[killed_train] == "RUNNING"  # nobody closed it: the process is gone

    # --- explain, SIGKILLed while it writes its outputs or logs into the train run ----------
    def explaining() -> bool:
        if "explain" in _locked(proj) or not (proj / "models" / "run.json").exists():
            return False
        writing = any(proj.glob("reports/explain/.*.tmp-*"))
        return writing or _runs(proj).get(killed_train) == "RUNNING"

    _kill_when(proj, "explain", log, explaining)
    text = log.read_text()
    assert f"reaped run {killed_train} (" in text and "-> KILLED" in text  # at train's restart
    assert {"train"} <= _locked(proj) and "explain" not in _locked(proj)
    _nothing_of_cached(proj, "explain")
    tags = _tags(proj, killed_train)
    assert tags.get("facelens.reaped"), "the next stage's reaper closed the dead train run"
    resumed = int(tags["resumed_from_epoch"])
    assert 1 <= resumed < 10  # the same run, resumed from its checkpoint
    assert f"from its epoch-{resumed} checkpoint" in text

    # --- the rerun completes; no run is left RUNNING; the train run stays FINISHED ------------
    explain_killed_in_the_run = _runs(proj)[killed_train] == "RUNNING"
    assert _repro(proj, "explain", log) == 0, log.read_text()[-4000:]
    if explain_killed_in_the_run:  # the reaper gives the finished train run FINISHED back
        assert f"reaped run {killed_train} (" in log.read_text().split("-> KILLED", 1)[1]
    assert {"train", "explain"} <= _locked(proj)
    runs = _runs(proj)
    assert runs[killed_train] == "FINISHED"
    assert "RUNNING" not in runs.values(), runs
    assert (proj / "reports" / "explain" / "faithfulness.json").is_file()
    status = _run(proj, BIN / "dvc", "status", "explain")
    assert "up to date" in status.stdout, status.stdout


def test_a_bad_param_under_bare_dvc_repro_and_getting_the_outputs_back(
    project: Path, tmp_path: Path
) -> None:
    proj, log = project, tmp_path / "dvc.log"
    assert _repro(proj, "explain", log) == 0, log.read_text()[-4000:]  # complete (no-op after 1)
    commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "outputs"]
    assert _run(proj, "git", "add", "-A").returncode == 0
    assert _run(proj, *commit).returncode == 0
    outs = [proj / p for p in (*_CACHED_OUTS["explain"], "reports/explain/faithfulness.json")]
    before = {p: _md5s([p]) for p in outs}

    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["explain"]["per_class"] = 0  # out of range: 1..20
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # what `make repro` runs first refuses it before DVC touches anything
    check = _run(proj, BIN / "facelens", "params", "check")
    assert check.returncode == 1 and "explain.per_class" in check.stderr, check.stderr
    assert all(p.exists() for p in outs)

    # a bare `dvc repro`: the stage fails with one line after DVC removed its outputs
    bare = _run(proj, BIN / "dvc", "repro", "explain")
    assert bare.returncode != 0
    errors = [line for line in bare.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "explain.per_class" in errors[0], bare.stderr[-3000:]
    assert 'pipelines/explain.py", line' not in bare.stderr
    assert not any(p.exists() for p in outs), "DVC removes a stage's outputs before running it"

    # the README's recipe brings every output back, byte for byte
    for cmd in (
        ("git", "checkout", "--", "params.yaml", "reports/explain/faithfulness.json"),
        (BIN / "dvc", "checkout", "explain"),
    ):
        done = _run(proj, *cmd)
        assert done.returncode == 0, done.stderr
    assert {p: _md5s([p]) for p in outs} == before
    status = _run(proj, BIN / "dvc", "status", "explain")
    assert "up to date" in status.stdout, status.stdout
