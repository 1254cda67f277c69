"""End to end: a facelens study in its SQLite storage, read by ``optuna-dashboard``.

The study is made by the tune stage's own code (:func:`create_study` and :func:`run_study`
under a :func:`study_name_for` name, a scripted objective reporting per-epoch values, the
median pruner), in ``tmp_path/optuna.db``. ``optuna-dashboard sqlite:///... --host
127.0.0.1 --port <free>`` runs as a subprocess, exactly as the README says; the test reads the
study through its JSON API (``/api/studies``, ``/api/studies/<id>``: the routes of
``optuna_dashboard/_app.py``) and always stops the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facelens.tuning.params import TuneParams
from facelens.tuning.study import create_study, run_study, study_name_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

pytest.importorskip("optuna_dashboard", reason="pip install -e '.[dev]' installs optuna-dashboard")

CURVES = [[0.2, 0.4, 0.6], [0.3, 0.5, 0.7], [0.1, 0.1, 0.1], [0.4, 0.6, 0.8]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def _scripted() -> Callable[[dict[str, Any], Callable[[int, float], None]], float]:
    calls = iter(CURVES)

    def objective(trial_params: dict[str, Any], report: Callable[[int, float], None]) -> float:
        curve = next(calls)
        for epoch, value in enumerate(curve, 1):
            report(epoch, value)
        return curve[-1]

    return objective


def _study(tmp_path: Path) -> str:
    name = study_name_for(
        "facelens", task="expression", data_version="e2e", sections={"space": {"lr": [1e-3]}}
    )
    params = TuneParams(
        study_name=name,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        n_trials=len(CURVES),
        pruner="median",
        n_startup_trials=2,
        space={"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
    )
    run_study(create_study(params), params, _scripted(), progress=False)
    return name


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"optuna-dashboard exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            _get(url)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"optuna-dashboard did not answer {url} in 60 s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def test_optuna_dashboard_serves_the_facelens_study(tmp_path: Path) -> None:
    name = _study(tmp_path)
    port = _free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    cmd = [str(exe), f"sqlite:///{tmp_path / 'optuna.db'}", "--host", "127.0.0.1"]
    log = tmp_path / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/api/studies", proc, log)
        (summary,) = _get(f"{base}/api/studies")["study_summaries"]
        assert summary["study_name"] == name and name.startswith("facelens-")
        assert summary["directions"] == ["maximize"]
        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        trials = detail["trials"]
        assert len(trials) == len(CURVES)
        assert {t["state"] for t in trials} <= {"Complete", "Pruned"}
        assert [t["number"] for t in detail["best_trials"]] == [3]  # the 0.8 curve
        first = trials[0]
        assert [v["value"] for v in first["intermediate_values"]] == CURVES[0]
        assert set(first["params"][0]) >= {"name", "param_external_value"}
        page = urllib.request.urlopen(f"{base}/dashboard", timeout=10).read()
        assert b"<html" in page.lower()  # the web UI itself is served too
    finally:
        _stop(proc)
    assert proc.poll() is not None
