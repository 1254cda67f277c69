"""Tuning workers on a real PostgreSQL study with a real ``mlflow server`` backed by PostgreSQL.

A throwaway PostgreSQL cluster is created with ``initdb`` / ``pg_ctl`` in a temporary folder
(as ``nobody`` when the tests run as root: ``initdb`` refuses root) on 127.0.0.1 and a free
port; ``mlflow server --backend-store-uri postgresql://... --artifacts-destination <tmp>``
runs on it. Two ``facelens tune worker`` processes (the command the docker compose workers
run) then share one study: (a) the study holds the sum of their trials and each is a nested
run under the one parent run; (b) one worker is SIGKILLed mid-trial: the heartbeat fails its
trial, its MLflow run is closed, and the survivor runs its params again.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
_PG_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
_CLI = "from facelens.cli.app import app; app()"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in reversed(_PG_DIRS):
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    port: int

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A private PostgreSQL cluster on 127.0.0.1 (trust auth), removed afterwards."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        if os.environ.get("CI"):
            pytest.fail("initdb/pg_ctl not found: CI installs Debian's postgresql (.ci/run)")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    pytest.importorskip("psycopg2", reason="pip install facelens[postgres] (psycopg2-binary)")
    root = Path(tempfile.mkdtemp(prefix="facelens-pg-"))  # /tmp: reachable by `nobody`
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as nobody
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    port = _free_port()
    data, log = root / "data", root / "server.log"
    subprocess.run(
        [*as_user, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*as_user, pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield Postgres(port)
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_mlflow_server(postgres: Postgres) -> Iterator[str]:
    """``mlflow server`` on a PostgreSQL backend store with proxied artifacts; its URL."""
    root = Path(tempfile.mkdtemp(prefix="facelens-mlflow-"))
    backend = postgres.create_db("mlflow")
    port = _free_port()
    log = (root / "server.log").open("w")
    cmd = [BIN / "mlflow", "server", "--backend-store-uri", backend]
    cmd += ["--artifacts-destination", root / "artifacts", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        [str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def prepared_project(root: Path) -> Path:
    """A copy of the pipeline with a tiny prepared and split dataset (random sampler, no
    pruning, 1-epoch trials)."""
    import importlib.util

    # tests/conftest.py by path: a bare `import conftest` may find tests/unit/conftest.py.
    name = "facelens_tests_conftest"
    shared = sys.modules.get(name)
    if shared is None:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "conftest.py"
        )
        shared = importlib.util.module_from_spec(spec)
        sys.modules[name] = shared  # dataclasses look their module up there
        spec.loader.exec_module(shared)
    copy_project, tiny_params = shared.copy_project, shared.tiny_params

    params = tiny_params()
    params["tune"].update({"pruner": "none", "sampler": "random", "train_fraction": 1.0})
    proj = copy_project(root / "proj", params)
    env = env_for(proj, "sqlite:///unused.db")
    for script in (
        ["pipelines/prepare.py", "--out", "data/prepared"],
        ["pipelines/split.py", "--prepared", "data/prepared", "--out", "data/splits"],
    ):
        subprocess.run([sys.executable, *script], cwd=proj, env=env, check=True, timeout=300)
    return proj


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


@pytest.fixture(scope="module")
def mlflow_server(postgres: Postgres) -> Iterator[str]:
    with running_mlflow_server(postgres) as url:
        yield url


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return prepared_project(tmp_path_factory.mktemp("workers"))


def env_for(proj: Path, tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        PYTHONPATH=str(proj / "src"),  # the copied sources, not an installed facelens
        PYTHONUNBUFFERED="1",
        TQDM_DISABLE="1",
    )
    return env


def study_params(proj: Path, name: str, storage: str, **tune) -> Path:
    import yaml

    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["tune"].update({"study_name": name, "storage": storage, **tune})
    params["tracking"]["experiment"] = name
    path = proj / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def start_worker(proj: Path, params: Path, url: str, number: int, log: Path) -> subprocess.Popen:
    """``facelens tune worker`` (what docker/compose.yaml's workers run)."""
    with log.open("w") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLI,
                "tune",
                "worker",
                "--params",
                str(params),
                "--worker-number",
                str(number),
            ],
            cwd=proj,
            env=env_for(proj, url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _load(storage: str):
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _runs(url: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _wait(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300) -> None:
    for proc, log in zip(procs, logs, strict=True):
        code = proc.wait(timeout=timeout)
        assert code == 0, f"worker exit {code}:\n{log.read_text()[-3000:]}"


def test_two_workers_share_one_study_and_one_parent_run(
    project: Path, postgres: Postgres, mlflow_server: str, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    storage = postgres.create_db("optuna_a")
    params = study_params(project, "shared", storage, n_trials=6)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    start = time.monotonic()
    _wait([start_worker(project, params, mlflow_server, i, logs[i]) for i in range(2)], logs)
    elapsed = time.monotonic() - start

    study = _load(storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert 6 <= len(trials) <= 7  # two workers may finish the last trial at once

    _, parents, children = _runs(mlflow_server, "shared")
    assert len(parents) == 1, "two workers starting together made one parent run"
    (parent,) = parents
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_complete"] == len(trials)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_trial = {int(c.data.params["trial_number"]): c for c in children}
    assert sorted(by_trial) == [t.number for t in trials]  # none lost, none duplicated
    assert all(c.info.status == "FINISHED" for c in children)
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {c.info.run_id for c in children}
    per_worker: dict[str, int] = {}
    for c in children:
        per_worker[c.data.tags["facelens.worker"]] = (
            per_worker.get(c.data.tags["facelens.worker"], 0) + 1
        )
    assert len(per_worker) == 2 and sum(per_worker.values()) == len(trials), per_worker
    print(f"2 workers, {len(trials)} trials in {elapsed:.1f} s: {per_worker}")


def test_killed_worker_trial_fails_by_heartbeat_and_is_retried(
    project: Path, postgres: Postgres, mlflow_server: str, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    storage = postgres.create_db("optuna_b")
    params = study_params(
        project,
        "killed",
        storage,
        n_trials=3,
        heartbeat_interval=1,
        grace_period=4,
        space={**_space(project), "epochs": [4]},
    )
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [start_worker(project, params, mlflow_server, i, logs[i]) for i in range(2)]
    victim, survivor = procs
    killed_number = _kill_mid_trial(storage, victim, mlflow_server)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    _wait([survivor], [logs[1]])

    study = _load(storage)
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    assert states[killed_number] == TrialState.FAIL
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = trials[killed_number]
    (retry,) = [
        t
        for t in trials
        if t.user_attrs.get("first_trial_number") == killed_number and t.number != killed_number
    ]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 3

    client, parents, children = _runs(mlflow_server, "killed")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not [r for r in parents + children if r.info.status == "RUNNING"]
    dead = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert dead.info.status == "KILLED" and dead.data.tags["state"] == "FAIL"
    assert "heartbeat" in dead.data.tags["error"]
    rerun = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert rerun.data.tags["retry_of"] == str(killed_number)
    assert rerun.data.tags["facelens.worker"].endswith(f":{survivor.pid}")


def _space(proj: Path) -> dict:
    import yaml

    return yaml.safe_load((proj / "params.yaml").read_text())["tune"]["space"]


def _kill_mid_trial(storage: str, victim: subprocess.Popen, url: str) -> int:
    """SIGKILL ``victim`` once one of its trials has run an epoch; that trial's number."""
    import optuna
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    client = MlflowClient(tracking_uri=url)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert victim.poll() is None, "the worker to kill ended first"
        try:
            study = _load(storage)
        except (ValueError, KeyError, optuna.exceptions.OptunaError):
            time.sleep(0.5)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_id = t.user_attrs.get("mlflow_run_id")
            if not run_id or t.intermediate_values == {}:
                continue
            run = client.get_run(run_id)
            if run.data.tags.get("facelens.worker", "").endswith(f":{victim.pid}"):
                victim.send_signal(signal.SIGKILL)
                return t.number
        time.sleep(0.3)
    pytest.fail("no trial of the worker to kill ran an epoch in time")
