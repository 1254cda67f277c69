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
    # /tmp itself, not $TMPDIR (the tests point it into pytest's 0700 basetemp): reachable by
    # `nobody`, and short enough for the server's Unix socket
    root = Path(tempfile.mkdtemp(prefix="facelens-pg-", dir="/tmp"))
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
    try:
        wait_until_up(f"{url}/health", proc, root / "server.log", 180)
        yield url
    finally:
        stop_group(proc, 30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the process group of ``proc`` (a server and its workers), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


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


@pytest.mark.timeout(900)
def test_every_stage_logs_to_the_server_and_its_registry_serves_the_model(
    project: Path, mlflow_server: str, tmp_path: Path
) -> None:
    """``dvc repro`` with ``MLFLOW_TRACKING_URI`` at the PostgreSQL-backed server: every stage's
    runs and the registered model land there (artifacts proxied by the server), and
    ``mlflow models serve -m models:/...@champion`` resolves and serves it from the server."""
    import base64
    import json

    import yaml
    from mlflow import MlflowClient

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tracking"]["experiment"] = "server-pipeline"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = env_for(project, mlflow_server)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    dvc = Path(sys.executable).with_name("dvc")
    done = subprocess.run(
        [str(dvc), "repro"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("server-pipeline")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    (train,) = [r for r in runs if r.data.tags.get("facelens.stage") == "train"]
    assert train.info.status == "FINISHED"
    for stage in ("evaluate", "explain", "manifold"):
        assert train.data.tags[f"facelens.{stage}.device"] == "cpu", stage
    assert any(a.path == "explain" for a in client.list_artifacts(train.info.run_id))
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # proxied by the server
    name = f"facelens-{params['task']}"
    version = client.get_model_version_by_alias(name, "champion")
    assert version.run_id == train.info.run_id

    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "models",
                "serve",
                "-m",
                f"models:/{name}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/ping", proc, log, 240)
        image = next((project / "data" / "prepared" / "images").rglob("*.png"))
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(image.read_bytes()).decode()]],
            }
        }
        req = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            (row,) = json.loads(resp.read())["predictions"]
        assert not row["error"] and row["label"]
    finally:
        stop_group(proc, 20)
