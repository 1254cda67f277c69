"""The dead-run reaper's pure parts: the owner stamp, process identities and the verdict."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from facelens.tracking.reaper import (
    HEARTBEAT_TAG,
    HOST_TAG,
    ON_DEATH_TAG,
    PID_TAG,
    PIDNS_TAG,
    PROCESS_TAG,
    STALE_AFTER_S,
    Owner,
    judge,
    owner_tags,
    pid_namespace,
    process_identity,
)
from facelens.tracking.runs import launcher_parent

HERE = "host-a"
NOW = 1_000_000.0
BOOT = "boot-1"


def _tags(host: str = HERE, pid: int = 42, process: str = f"{BOOT}:500", beat: float = NOW):
    return owner_tags(Owner(host, pid, process, beat, "KILLED"))


def _judge(tags, processes: dict[int, str], now: float = NOW) -> str | None:
    return judge(tags, host=HERE, identity_of=processes.get, now=now)


def test_owner_tags_round_trip() -> None:
    owner = Owner("h", 7, "b:9", 123.0, "FINISHED", "pid:[1]")
    tags = owner_tags(owner)
    assert tags == {
        HOST_TAG: "h",
        PID_TAG: "7",
        PIDNS_TAG: "pid:[1]",
        PROCESS_TAG: "b:9",
        HEARTBEAT_TAG: "123",
        ON_DEATH_TAG: "FINISHED",
    }
    assert Owner.from_tags(tags) == owner


@pytest.mark.parametrize(
    "tags",
    [{}, {HOST_TAG: "h"}, {HOST_TAG: "h", PID_TAG: "not-a-pid"}],
    ids=["none", "no-pid", "bad-pid"],
)
def test_runs_without_a_valid_stamp_are_never_judged(tags) -> None:
    assert Owner.from_tags(tags) is None
    assert _judge(tags, {}) is None


def test_unknown_on_death_status_falls_back_to_killed() -> None:
    tags = {**_tags(), ON_DEATH_TAG: "RUNNING"}
    assert Owner.from_tags(tags).on_death == "KILLED"


def test_same_host_live_owner_is_alive() -> None:
    assert _judge(_tags(), {42: f"{BOOT}:500"}) is None


def test_same_host_gone_pid_is_dead() -> None:
    reason = _judge(_tags(), {})
    assert reason == f"process 42 on {HERE} is gone"


def test_same_host_reused_pid_is_dead() -> None:
    reason = _judge(_tags(), {42: f"{BOOT}:777"})
    assert reason is not None and "belongs to another" in reason


def test_same_host_after_reboot_is_dead() -> None:
    reason = _judge(_tags(), {42: "boot-2:500"})
    assert reason is not None and "rebooted" in reason


def test_same_host_without_identities_trusts_the_pid() -> None:
    # /proc absent (macOS): identities are "" and only "is the pid alive" counts.
    assert _judge(_tags(process=""), {42: ""}) is None
    assert _judge(_tags(process=""), {}) is not None


def test_same_host_never_looks_at_the_heartbeat() -> None:
    old = _tags(beat=NOW - 10 * STALE_AFTER_S)
    assert _judge(old, {42: f"{BOOT}:500"}) is None


def test_other_host_is_judged_by_its_heartbeat_only() -> None:
    # The pid means nothing on this host: a process 42 here must not keep it alive.
    fresh = _tags(host="host-b", beat=NOW - STALE_AFTER_S + 1)
    stale = _tags(host="host-b", beat=NOW - STALE_AFTER_S - 1)
    assert _judge(fresh, {}) is None
    reason = _judge(stale, {42: f"{BOOT}:500"})
    assert reason is not None and "host-b" in reason and "heartbeat" in reason
    no_beat = {k: v for k, v in stale.items() if k != HEARTBEAT_TAG}
    assert _judge(no_beat, {}) is None


def test_stale_threshold_is_a_parameter() -> None:
    tags = _tags(host="host-b", beat=NOW - 100)
    assert judge(tags, host=HERE, identity_of=dict().get, now=NOW, stale_after_s=99) is not None
    assert judge(tags, host=HERE, identity_of=dict().get, now=NOW, stale_after_s=101) is None


def test_same_host_name_in_another_pid_namespace_is_judged_by_heartbeat() -> None:
    # Two containers sharing the host's name (docker --network host) see different pids.
    owner = Owner(HERE, 42, f"{BOOT}:500", NOW - STALE_AFTER_S - 1, "KILLED", "pid:[2]")
    tags = owner_tags(owner)
    same = judge(tags, host=HERE, identity_of=dict().get, now=NOW, pidns="pid:[2]")
    assert same == f"process 42 on {HERE} is gone"
    other = judge(tags, host=HERE, identity_of=dict().get, now=NOW, pidns="pid:[1]")
    assert other is not None and "heartbeat" in other
    fresh = owner_tags(Owner(HERE, 42, f"{BOOT}:500", NOW, "KILLED", "pid:[2]"))
    assert judge(fresh, host=HERE, identity_of=dict().get, now=NOW, pidns="pid:[1]") is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_process_identity_of_this_and_of_no_process() -> None:
    mine = process_identity(os.getpid())
    assert mine and mine == process_identity(os.getpid())
    boot, ticks = mine.rsplit(":", 1)
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert int(ticks) > 0
    assert process_identity(1) not in (None, mine)  # init started long before this process
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert process_identity(pid_max + 1) is None  # no pid can be that large
    assert pid_namespace().startswith("pid:[")


def test_current_owner_is_this_process_on_this_host() -> None:
    owner = Owner.current("FINISHED")
    assert owner.host == socket.gethostname() and owner.pid == os.getpid()
    assert owner.pidns == pid_namespace()
    assert owner.on_death == "FINISHED"
    assert judge(owner_tags(owner), host=owner.host, identity_of=process_identity, now=NOW) is None


@pytest.mark.parametrize(
    ("run_id", "nested", "active", "want"),
    [
        (None, False, False, "launcher"),
        ("resumed", False, False, None),  # a resumed run keeps its parent
        (None, True, True, None),  # a nested run's parent is the active run
        (None, False, True, None),
    ],
)
def test_launcher_parent(run_id, nested, active, want) -> None:
    env = {"MLFLOW_RUN_ID": "launcher"}
    assert launcher_parent(env, run_id=run_id, nested=nested, active=active) == want
    assert launcher_parent({}, run_id=None, nested=False, active=False) is None
    assert launcher_parent({"MLFLOW_RUN_ID": ""}, run_id=None, nested=False, active=False) is None


def test_cli_help_states_the_default_stale_threshold() -> None:
    from typer.testing import CliRunner

    from facelens.cli.app import app

    result = CliRunner().invoke(app, ["runs", "reap", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"{STALE_AFTER_S:.0f}" in result.output and "--dry-run" in result.output
