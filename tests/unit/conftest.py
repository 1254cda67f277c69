"""The unit tier is pure: no MLflow tracking store, no subprocess, seconds per test (the whole
tier runs in well under 90 s). These guards make a test that breaks the rule fail at once,
naming what it did; such a test belongs in ``tests/integration``."""

from __future__ import annotations

import platform
import subprocess
from typing import Any, NoReturn

import joblib
import pytest
from mlflow.tracking.client import MlflowClient

# Libraries ask the platform (``uname -p``) and joblib counts physical cores (``lscpu``) with
# a subprocess, once, and cache the answer: ask before the guard is up, so that only a
# test's own subprocesses are refused.
platform.uname()
joblib.cpu_count(only_physical_cores=True)


def _refuse(what: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"unit tests must not {what}; move the test to tests/integration")

    return refuse


@pytest.fixture(autouse=True)
def _pure_unit_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a subprocess"))
    monkeypatch.setattr(MlflowClient, "__init__", _refuse("use an MLflow tracking store"))
