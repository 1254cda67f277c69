"""Where a study lives and what several workers sharing it need.

* :func:`make_storage`: the Optuna storage of ``tune.storage``: an RDB URL (``sqlite:///``,
  ``postgresql://``, ``mysql://``) with heartbeats and the retry of trials whose worker died
  (:func:`liveness`), ``journal:<file>`` for Optuna's journal file storage, or None (memory).
* :func:`study_lock`: a lock that every worker of a study, on any host, sees: a PostgreSQL
  advisory lock / MySQL ``GET_LOCK`` on the study's own database, Optuna's journal file lock
  beside a journal. It makes "create the study's MLflow parent run unless it exists" atomic.
* :func:`sqlite_guard`: a SQLite file serves one worker: a second process tuning on the same
  file stops with one line that names the storages built for several workers.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from facelens.errors import ConfigError
from facelens.tuning.params import TuneParams

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "JOURNAL_PREFIX",
    "Liveness",
    "StaleTrialFn",
    "check_shareable",
    "liveness",
    "make_storage",
    "redact_url",
    "sqlite_guard",
    "sqlite_path",
    "storage_kind",
    "study_lock",
]

#: ``tune.storage: journal:<file>`` selects Optuna's JournalStorage on that file.
JOURNAL_PREFIX = "journal:"
#: Heartbeat interval (s) of ``heartbeat_interval: auto`` on PostgreSQL / MySQL.
DEFAULT_HEARTBEAT_S = 60
#: Storages whose heartbeats Optuna supports (RDBStorage).
_RDB = ("sqlite", "postgresql", "mysql")
#: Storages several workers on several hosts can share.
SHARED_KINDS = ("postgresql", "mysql", "journal")

StaleTrialFn = Callable[[optuna.Study, FrozenTrial], None]

_SHARE_HINT = (
    "for several workers set tune.storage to postgresql://user:password@host:5432/db "
    "(or journal:optuna.journal on one host) and MLFLOW_TRACKING_URI to an MLflow tracking "
    "server (see README: Scaling out)"
)


def redact_url(url: str | None) -> str:
    if url is None:
        return "<in-memory>"
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)  # hide a password in the URL


def storage_kind(url: str | None) -> str:
    """``memory``, ``journal``, or the SQLAlchemy dialect of the URL (``sqlite``,
    ``postgresql``, ``mysql``, ...)."""
    if url is None:
        return "memory"
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    return url.split(":", 1)[0].split("+", 1)[0].lower()


@dataclass(frozen=True)
class Liveness:
    """How the workers of a study notice a dead one (resolved from ``tune``)."""

    #: Seconds between heartbeats of a running trial; None = no heartbeat.
    heartbeat_interval: int | None
    #: Seconds without heartbeat after which a running trial is failed (None = 2x interval).
    grace_period: int | None
    #: Times a trial failed for lack of heartbeat is enqueued again with its params.
    max_retry: int


def liveness(params: TuneParams) -> Liveness:
    """Resolve ``heartbeat_interval``, ``grace_period`` and ``retry_failed`` for the storage.

    ``auto`` turns heartbeats (every :data:`DEFAULT_HEARTBEAT_S` s) and one retry on for
    PostgreSQL and MySQL, off for SQLite (one worker), journal files and memory.

    Raises:
        ConfigError: a value the storage cannot honour (names the key and the storage).
    """
    kind = storage_kind(params.storage)
    interval = params.heartbeat_interval
    if interval == "auto":
        interval = DEFAULT_HEARTBEAT_S if kind in ("postgresql", "mysql") else None
    elif interval is not None and kind not in _RDB:
        raise ConfigError(
            f"tune.heartbeat_interval={interval}: Optuna keeps heartbeats only in RDB storages "
            f"(sqlite/postgresql/mysql), tune.storage is {kind}; set it to null or auto"
        )
    retry = params.retry_failed
    if retry == "auto":
        retry = 1 if interval else 0
    elif retry and interval is None:
        raise ConfigError(
            f"tune.retry_failed={retry} needs heartbeats to see a dead worker; set "
            "tune.heartbeat_interval (e.g. 60) with an RDB storage, or retry_failed: 0"
        )
    grace = params.grace_period
    if grace is not None and (interval is None or grace <= interval):
        raise ConfigError(
            f"tune.grace_period={grace} must exceed tune.heartbeat_interval={interval}; "
            "raise it or set grace_period: null (2x the interval)"
        )
    return Liveness(heartbeat_interval=interval, grace_period=grace, max_retry=int(retry))


def _retry_callback(max_retry: int) -> StaleTrialFn:
    storages = optuna.storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return (cls or storages.RetryFailedTrialCallback)(max_retry=max_retry)


def make_storage(
    params: TuneParams, on_stale: StaleTrialFn | None = None
) -> optuna.storages.BaseStorage | None:
    """The storage of ``tune.storage`` (None: in memory).

    Args:
        params: the ``tune`` section.
        on_stale: called with each trial the heartbeat found dead (state ``FAIL`` already),
            before it is enqueued again (e.g. to close the trial's MLflow run).

    Raises:
        ConfigError: bad liveness settings (:func:`liveness`).
    """
    kind = storage_kind(params.storage)
    if kind == "memory":
        return None
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = params.storage[len(JOURNAL_PREFIX) :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    live = liveness(params)
    kwargs: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}} if kind != "sqlite" else {}
    if live.heartbeat_interval is not None:
        stale: list[StaleTrialFn] = [on_stale] if on_stale is not None else []
        if live.max_retry:
            stale.append(_retry_callback(live.max_retry))

        def on_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            for callback in stale:
                callback(study, trial)

        kwargs.update(
            heartbeat_interval=live.heartbeat_interval,
            grace_period=live.grace_period,
            heartbeat_stale_trial_callback=on_stale_trial,
        )
    return _rdb_storage(params.storage, kwargs)


def _rdb_storage(url: str, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            # Workers starting together on an empty database race to create its tables; the
            # losers see the winner's tables on the next try.
            if attempt == 3:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _lock_key(name: str) -> int:
    """A signed 64-bit key (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def study_lock(params: TuneParams, name: str) -> Iterator[None]:
    """Hold the lock ``name`` of the study ``params.study_name`` across every worker.

    PostgreSQL: ``pg_advisory_lock`` on a connection of its own (released when it closes,
    even if this process dies); MySQL: ``GET_LOCK``; a journal: Optuna's journal file lock
    beside it. SQLite and memory serve one process (:func:`sqlite_guard`): nothing to lock.
    """
    kind = storage_kind(params.storage)
    label = f"facelens:{params.study_name}:{name}"
    if kind == "journal":
        from optuna.storages.journal import JournalFileOpenLock

        lock = JournalFileOpenLock(f"{params.storage[len(JOURNAL_PREFIX) :]}.{_lock_key(label)}")
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
        return
    if kind not in ("postgresql", "mysql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(params.storage, poolclass=NullPool)
    take, give = {
        "postgresql": ("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"),
        "mysql": ("SELECT GET_LOCK(:k, 600)", "SELECT RELEASE_LOCK(:k)"),
    }[kind]
    key: int | str = _lock_key(label) if kind == "postgresql" else label[-64:]
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(take), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(give), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


def sqlite_path(url: str | None) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for anything else or an in-memory SQLite)."""
    if not url or not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def sqlite_guard(url: str | None, what: str) -> Iterator[None]:
    """Keep the SQLite file of ``url`` to this process while the block runs.

    An exclusive ``flock`` on ``<file>.lock`` (SQLite itself uses POSIX record locks on the
    file, which ``flock`` does not touch); the lock dies with the process.

    Args:
        url: a storage or tracking URL; anything but a SQLite file is not guarded.
        what: its params key for the message, e.g. ``tune.storage``.

    Raises:
        ConfigError: another process holds the file (names it, its pid and what to use).
    """
    path = sqlite_path(url)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            raise ConfigError(
                f"{what} {url} is in use by another tuning worker (pid {holder}); a SQLite "
                f"file serves one worker: {_SHARE_HINT}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def check_shareable(url: str | None, what: str, workers: int) -> None:
    """Refuse ``workers`` > 1 on a storage only one process may write (SQLite, memory).

    Raises:
        ConfigError: one line naming the key, the URL and what to use instead.
    """
    if workers > 1 and (sqlite_path(url) is not None or url is None):
        raise ConfigError(
            f"tune.workers={workers} but {what} is {url or 'in memory'}, which one process "
            f"writes; {_SHARE_HINT}"
        )
