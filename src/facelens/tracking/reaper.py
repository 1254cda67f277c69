"""Dead runs: MLflow runs left ``RUNNING`` by a process that died, and the reaper that closes them.

A process killed with SIGKILL (or by the OOM killer, a lost node, a closed laptop) never ends its
MLflow run, which then shows ``RUNNING`` forever. Every run a facelens process starts or resumes
therefore carries an *owner stamp* (tags, see :func:`owner_tags`):

- ``facelens.owner.host``, ``facelens.owner.pid`` and ``facelens.owner.pidns``: where the
  owning process runs (the pid namespace tells two containers that share a host name apart,
  as under ``docker run --network host``: each sees only its own pids);
- ``facelens.owner.process``: that process's identity, ``<boot id>:<start time in clock
  ticks>`` from ``/proc`` (Linux), so a pid reused by another process, or a reboot, is told
  apart from the owner still running; empty where ``/proc`` is absent (then only "is the pid
  alive" is checked);
- ``facelens.owner.heartbeat``: Unix time of the owner's last beat, refreshed every
  :data:`HEARTBEAT_S` seconds by a daemon thread (:class:`Heartbeat`);
- ``facelens.owner.on_death``: the status a dead owner's run gets: ``KILLED``, or ``FINISHED``
  for a finished run reopened only to log into (the ``evaluate`` / ``explain`` / ``manifold``
  stages log into the finished train run and must never change its outcome).

Why both a process stamp and a heartbeat: on the owner's host the stamp is exact and immediate
(a dead process is known dead now, with no clock and no threshold), so the heartbeat is never
consulted there. From another host (or pid namespace) the process cannot be inspected; there
only a heartbeat
older than ``stale_after_s`` (default :data:`STALE_AFTER_S`, ten missed beats) marks the run
dead, which assumes the hosts' clocks agree to well within that. Runs without a stamp (started
by other tools) are never touched.

API: :func:`judge` (pure: a run's tags -> the reason it is dead, or None), :func:`find_dead` and
:func:`reap` (search an MLflow store; ``reap`` closes what ``find_dead`` finds, re-checking each
run just before), :func:`owner_tags` and :class:`Heartbeat` (what a run's owner records).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunStatus

__all__ = [
    "HEARTBEAT_S",
    "HEARTBEAT_TAG",
    "HOST_TAG",
    "ON_DEATH_TAG",
    "PIDNS_TAG",
    "PID_TAG",
    "PROCESS_TAG",
    "REAPED_TAG",
    "STALE_AFTER_S",
    "Heartbeat",
    "Owner",
    "Reaped",
    "find_dead",
    "judge",
    "owner_tags",
    "pid_namespace",
    "process_identity",
    "reap",
]

HOST_TAG = "facelens.owner.host"
PID_TAG = "facelens.owner.pid"
PIDNS_TAG = "facelens.owner.pidns"
PROCESS_TAG = "facelens.owner.process"
HEARTBEAT_TAG = "facelens.owner.heartbeat"
ON_DEATH_TAG = "facelens.owner.on_death"
#: Set on a reaped run: why it was judged dead.
REAPED_TAG = "facelens.reaped"

#: Seconds between two heartbeats of a running run.
HEARTBEAT_S = 60.0
#: A run owned by another host is dead when its heartbeat is older than this.
STALE_AFTER_S = 600.0

_KILLED = RunStatus.to_string(RunStatus.KILLED)
_FINISHED = RunStatus.to_string(RunStatus.FINISHED)
_RUNNING = RunStatus.to_string(RunStatus.RUNNING)
_PROC = Path("/proc")


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_identity(pid: int) -> str | None:
    """``"<boot id>:<start ticks>"`` of process ``pid``; ``""`` when it is alive but ``/proc``
    cannot tell its start (not Linux); None when no such process exists (or it is a zombie)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None if _PROC.is_dir() else _alive_elsewhere(pid)
    except OSError:
        return _alive_elsewhere(pid)
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    # Field 3 is the state (Z: a zombie, dead but not yet waited for); field 22, starttime, is
    # the 20th field after the closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}:{fields[19]}"


def pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``); ``""`` where ``/proc`` lacks it."""
    try:
        return os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return ""


def _alive_elsewhere(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""  # exists, owned by another user
    return ""


@dataclass(frozen=True)
class Owner:
    """The process that owns a run, as recorded in its tags."""

    host: str
    pid: int
    process: str  # process_identity() at start; "" when unknown
    heartbeat: float | None  # Unix time of the last beat
    on_death: str  # KILLED or FINISHED
    pidns: str = ""  # pid_namespace(); "" when unknown

    @classmethod
    def current(cls, on_death: str = _KILLED) -> Owner:
        """This process, beating now."""
        pid = os.getpid()
        identity = process_identity(pid) or ""
        return cls(socket.gethostname(), pid, identity, time.time(), on_death, pid_namespace())

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Owner | None:
        """The owner recorded in a run's tags; None when the run has no (valid) stamp."""
        try:
            host, pid = tags[HOST_TAG], int(tags[PID_TAG])
        except (KeyError, ValueError):
            return None
        try:
            beat: float | None = float(tags[HEARTBEAT_TAG])
        except (KeyError, ValueError):
            beat = None
        on_death = tags.get(ON_DEATH_TAG, _KILLED)
        if on_death not in (_KILLED, _FINISHED):
            on_death = _KILLED
        process, pidns = tags.get(PROCESS_TAG, ""), tags.get(PIDNS_TAG, "")
        return cls(host, pid, process, beat, on_death, pidns)


def owner_tags(owner: Owner) -> dict[str, str]:
    """The tags that stamp a run with its owner (see the module docstring)."""
    return {
        HOST_TAG: owner.host,
        PID_TAG: str(owner.pid),
        PIDNS_TAG: owner.pidns,
        PROCESS_TAG: owner.process,
        HEARTBEAT_TAG: f"{owner.heartbeat or time.time():.0f}",
        ON_DEATH_TAG: owner.on_death,
    }


def judge(
    tags: Mapping[str, str],
    *,
    host: str,
    identity_of: Callable[[int], str | None],
    now: float,
    stale_after_s: float = STALE_AFTER_S,
    pidns: str = "",
) -> str | None:
    """Why the owner of a ``RUNNING`` run with ``tags`` is dead, or None when it is alive or
    cannot be judged (no stamp; another host with no heartbeat or a fresh one).

    Args:
        host: this host's name.
        identity_of: ``pid -> process_identity(pid)`` on this host.
        now: the current Unix time.
        stale_after_s: age beyond which another host's heartbeat means its owner is dead.
        pidns: this process's pid namespace (:func:`pid_namespace`); an owner in another one
            is judged like one on another host.
    """
    owner = Owner.from_tags(tags)
    if owner is None:
        return None
    same_namespace = not owner.pidns or not pidns or owner.pidns == pidns
    if owner.host == host and same_namespace:
        current = identity_of(owner.pid)
        if current is None:
            return f"process {owner.pid} on {host} is gone"
        if owner.process and current and current != owner.process:
            if owner.process.split(":")[0] != current.split(":")[0]:
                return f"{host} rebooted since process {owner.pid} started the run"
            return f"process {owner.pid} on {host} is gone (its pid now belongs to another one)"
        return None
    if owner.heartbeat is None:
        return None
    age = now - owner.heartbeat
    if age > stale_after_s:
        return (
            f"no heartbeat from process {owner.pid} on {owner.host} for {age:.0f} s "
            f"(stale after {stale_after_s:.0f} s)"
        )
    return None


@dataclass(frozen=True)
class Reaped:
    """A run judged dead, and the status it gets (or got)."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    reason: str

    def line(self) -> str:
        """One line for a terminal or a log."""
        return f"run {self.run_id} ({self.run_name}): {self.reason} -> {self.status}"


def _running(client: MlflowClient, experiment_ids: list[str]) -> Iterable[Any]:
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=f"attributes.status = '{_RUNNING}'",
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def _verdict(run: Any, *, now: float | None, stale_after_s: float) -> Reaped | None:
    if run.info.status != _RUNNING:
        return None
    tags = run.data.tags
    reason = judge(
        tags,
        host=socket.gethostname(),
        identity_of=process_identity,
        pidns=pid_namespace(),
        now=time.time() if now is None else now,
        stale_after_s=stale_after_s,
    )
    if reason is None:
        return None
    owner = Owner.from_tags(tags)
    status = owner.on_death if owner else _KILLED
    name = run.info.run_name or ""
    return Reaped(run.info.run_id, name, run.info.experiment_id, status, reason)


def find_dead(
    client: MlflowClient,
    experiment_ids: list[str],
    *,
    stale_after_s: float = STALE_AFTER_S,
    now: float | None = None,
) -> list[Reaped]:
    """The ``RUNNING`` runs of ``experiment_ids`` whose owner is dead (see :func:`judge`)."""
    if not experiment_ids:
        return []
    found = (
        _verdict(r, now=now, stale_after_s=stale_after_s) for r in _running(client, experiment_ids)
    )
    return [r for r in found if r is not None]


def reap(
    client: MlflowClient,
    experiment_ids: list[str],
    *,
    stale_after_s: float = STALE_AFTER_S,
    dry_run: bool = False,
) -> list[Reaped]:
    """Close the runs :func:`find_dead` finds: the ``facelens.reaped`` tag gets the reason and
    the run its owner's ``on_death`` status (``KILLED`` unless it was a finished run reopened to
    log into), ending at its last heartbeat. Each run is read again just before, so one that
    ended or was resumed by a live process meanwhile is left alone.

    Returns:
        The runs closed (with ``dry_run``, the runs that would be).
    """
    closed = []
    for dead in find_dead(client, experiment_ids, stale_after_s=stale_after_s):
        if dry_run:
            closed.append(dead)
            continue
        run = client.get_run(dead.run_id)
        again = _verdict(run, now=None, stale_after_s=stale_after_s)
        if again is None:
            continue
        owner = Owner.from_tags(run.data.tags)
        beat = owner.heartbeat if owner and owner.heartbeat else time.time()
        client.set_tag(again.run_id, REAPED_TAG, again.reason)
        client.set_terminated(again.run_id, status=again.status, end_time=int(beat * 1000))
        closed.append(again)
    return closed


class Heartbeat:
    """A daemon thread that refreshes a run's ``facelens.owner.heartbeat`` tag every
    ``interval_s`` seconds until the ``with`` block ends. A failed beat (store unreachable) is
    skipped; the next one tries again.

    Args:
        run_id: the run.
        tracking_uri: its store (the thread has its own client).
        interval_s: seconds between beats (the first one is the tag written at start).
    """

    def __init__(self, run_id: str, tracking_uri: str, interval_s: float = HEARTBEAT_S) -> None:
        self.run_id = run_id
        self.interval_s = interval_s
        self.beats = 0
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
                self.beats += 1
            except Exception:  # a beat must never kill the run; the next one retries
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
