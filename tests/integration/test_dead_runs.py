"""The dead-run reaper on a real MLflow store with real processes: a run whose process was
SIGKILLed is closed, live and finished runs are left alone, and every entry point (the stages'
``configure_stage``, ``facelens runs reap``) does it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from facelens.tracking.reaper import (
    HEARTBEAT_TAG,
    REAPED_TAG,
    Heartbeat,
    Owner,
    find_dead,
    owner_tags,
    reap,
)
from facelens.tracking.runs import configure_stage, tracked_run

EXPERIMENT = "reaper"

#: A process that starts (or, given a run id, reopens like a later stage) a run, prints its id
#: and sleeps until it is killed.
_OWNER = """
import sys, time
from facelens.tracking.runs import configure, tracked_run
configure(None, sys.argv[1])
resume = sys.argv[2] if len(sys.argv) > 2 else None
with tracked_run("owned", run_id=resume, keep_status_on_error=resume is not None) as run:
    print(run.info.run_id, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def store(sqlite_store) -> MlflowClient:
    sqlite_store(EXPERIMENT)
    return MlflowClient()


def _experiment_ids(client: MlflowClient) -> list[str]:
    return [client.get_experiment_by_name(EXPERIMENT).experiment_id]


def _start_owner(*args: str) -> tuple[subprocess.Popen, str]:
    """A process owning a run (its id), which is RUNNING once this returns."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER, EXPERIMENT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        pytest.fail(f"the owner process printed no run id:\n{proc.stderr.read()}")
    return proc, line


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)  # waited for: no zombie keeps the pid


def _status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_sigkilled_run_is_killed_and_live_and_finished_runs_are_not(store) -> None:
    client = store
    dead_proc, dead = _start_owner()
    live_proc, live = _start_owner()
    try:
        with tracked_run("finished"):
            pass
        finished = client.search_runs(_experiment_ids(client), "tags.mlflow.runName = 'finished'")
        finished_id = finished[0].info.run_id
        foreign = client.create_run(_experiment_ids(client)[0], run_name="no stamp").info.run_id
        _kill(dead_proc)
        with tracked_run("this process"):
            own = mlflow.active_run().info.run_id
            closed = reap(client, _experiment_ids(client))
            assert _status(client, own) == "RUNNING"
    finally:
        _kill(live_proc)
    assert [(c.run_id, c.status) for c in closed] == [(dead, "KILLED")]
    assert f"process {dead_proc.pid} on {socket.gethostname()} is gone" in closed[0].reason
    run = client.get_run(dead)
    assert run.info.status == "KILLED" and run.data.tags[REAPED_TAG] == closed[0].reason
    beat = float(run.data.tags[HEARTBEAT_TAG])
    assert run.info.end_time == int(beat * 1000)  # ended at its last sign of life
    assert _status(client, live) == "RUNNING"  # its owner was alive when reaped
    assert _status(client, finished_id) == "FINISHED"
    assert _status(client, foreign) == "RUNNING"  # not started by facelens: never touched
    # Now that the live owner is dead too, its run goes; the reaped one is not RUNNING any more.
    assert [c.run_id for c in reap(client, _experiment_ids(client))] == [live]
    assert find_dead(client, _experiment_ids(client)) == []


def test_a_finished_run_reopened_by_a_dead_stage_gets_finished_back(store) -> None:
    client = store
    with tracked_run("train") as train:
        pass
    proc, reopened = _start_owner(train.info.run_id)
    assert reopened == train.info.run_id and _status(client, reopened) == "RUNNING"
    _kill(proc)
    closed = reap(client, _experiment_ids(client))
    assert [(c.run_id, c.status) for c in closed] == [(reopened, "FINISHED")]
    assert _status(client, reopened) == "FINISHED"


def test_other_hosts_runs_by_heartbeat_and_dry_run(store) -> None:
    client = store
    exp = _experiment_ids(client)[0]
    ids = {}
    for name, age in (("stale", 3600.0), ("fresh", 5.0)):
        ids[name] = client.create_run(exp, run_name=name).info.run_id
        owner = Owner("elsewhere.example", 4242, "other-boot:1", time.time() - age, "KILLED")
        for key, value in owner_tags(owner).items():
            client.set_tag(ids[name], key, value)
    would = reap(client, [exp], dry_run=True)
    assert [r.run_id for r in would] == [ids["stale"]]
    assert _status(client, ids["stale"]) == "RUNNING"  # a dry run changes nothing
    assert [r.run_id for r in reap(client, [exp], stale_after_s=7200)] == []
    assert [r.run_id for r in reap(client, [exp])] == [ids["stale"]]
    assert _status(client, ids["stale"]) == "KILLED"
    assert _status(client, ids["fresh"]) == "RUNNING"


def test_configure_stage_reaps_its_experiment(store, capsys) -> None:
    client = store
    proc, dead = _start_owner()
    _kill(proc)
    closed = configure_stage(None, EXPERIMENT)
    assert [c.run_id for c in closed] == [dead]
    assert f"reaped run {dead}" in capsys.readouterr().err
    assert _status(client, dead) == "KILLED"


def test_heartbeat_refreshes_the_tag(store) -> None:
    client = store
    with tracked_run("beating") as run:
        run_id = run.info.run_id
        client.set_tag(run_id, HEARTBEAT_TAG, "0")
        with Heartbeat(run_id, mlflow.get_tracking_uri(), interval_s=0.05) as beat:
            deadline = time.monotonic() + 20
            while beat.beats < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    assert beat.beats >= 2
    assert abs(float(client.get_run(run_id).data.tags[HEARTBEAT_TAG]) - time.time()) < 60


def test_cli_runs_reap(store, tmp_path, monkeypatch) -> None:
    from facelens.cli.app import app

    client = store
    proc, dead = _start_owner()
    _kill(proc)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["runs", "reap", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(r["run_id"], r["status"], r["dry_run"]) for r in listed] == [(dead, "KILLED", True)]
    assert _status(client, dead) == "RUNNING"
    result = runner.invoke(app, ["runs", "reap", "--experiment", EXPERIMENT])
    assert result.exit_code == 0, result.output
    assert f"closed run {dead}" in result.stdout and "closed 1 dead run(s)" in result.stdout
    assert _status(client, dead) == "KILLED"
    result = runner.invoke(app, ["runs", "reap", "--experiment", "nope"])
    assert result.exit_code == 1 and "nope" in result.stderr
    listing = runner.invoke(app, ["runs", "--json"])  # the group still lists without a command
    assert listing.exit_code == 0 and dead in listing.stdout
