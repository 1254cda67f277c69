"""Storage rules for tuning workers: heartbeats and retries per storage, the SQLite guard,
the refusal of several workers on a one-process store."""

from __future__ import annotations

from pathlib import Path

import pytest

from facelens.errors import ConfigError
from facelens.tuning.params import TuneParams
from facelens.tuning.storage import (
    DEFAULT_HEARTBEAT_S,
    check_shareable,
    liveness,
    make_storage,
    sqlite_guard,
    sqlite_path,
    storage_kind,
    study_lock,
)

PG = "postgresql+psycopg2://optuna:pw@db:5432/optuna"


def _tune(**kw) -> TuneParams:
    return TuneParams.model_validate(kw)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (None, "memory"),
        ("sqlite:///optuna.db", "sqlite"),
        (PG, "postgresql"),
        ("mysql+pymysql://u@h/db", "mysql"),
        ("journal:optuna.journal", "journal"),
    ],
)
def test_storage_kind(url, kind) -> None:
    assert storage_kind(url) == kind


def test_heartbeat_and_retry_are_on_by_default_for_postgres_only() -> None:
    on = liveness(_tune(storage=PG))
    assert (on.heartbeat_interval, on.grace_period, on.max_retry) == (DEFAULT_HEARTBEAT_S, None, 1)
    for url in ("sqlite:///optuna.db", "journal:x.journal", None):
        off = liveness(_tune(storage=url))
        assert (off.heartbeat_interval, off.max_retry) == (None, 0), url


def test_explicit_liveness_settings_are_kept_or_refused_with_the_key() -> None:
    live = liveness(_tune(storage=PG, heartbeat_interval=2, grace_period=5, retry_failed=3))
    assert (live.heartbeat_interval, live.grace_period, live.max_retry) == (2, 5, 3)
    assert liveness(_tune(storage=PG, heartbeat_interval=None)).max_retry == 0
    assert liveness(_tune(storage="sqlite:///o.db", heartbeat_interval=1)).max_retry == 1
    with pytest.raises(ConfigError, match=r"tune.heartbeat_interval=5: .*journal"):
        liveness(_tune(storage="journal:x.journal", heartbeat_interval=5))
    with pytest.raises(ConfigError, match=r"tune.retry_failed=1 needs heartbeats"):
        liveness(_tune(storage="sqlite:///o.db", retry_failed=1))
    with pytest.raises(ConfigError, match=r"grace_period=2 must exceed .*interval=2"):
        liveness(_tune(storage=PG, heartbeat_interval=2, grace_period=2))
    with pytest.raises(ValueError, match="heartbeat_interval"):
        _tune(heartbeat_interval=0)


def test_sqlite_storage_gets_heartbeat_and_retry_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    storage = make_storage(_tune(storage=url, heartbeat_interval=1, grace_period=2))
    assert storage.get_heartbeat_interval() == 1
    assert storage.get_heartbeat_stale_trial_callback() is not None
    assert make_storage(_tune(storage=url)).get_heartbeat_interval() is None
    assert make_storage(_tune(storage=None)) is None


def test_a_second_process_on_a_sqlite_file_stops_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    assert sqlite_path(url) == tmp_path / "optuna.db"
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path(PG) is None
    # flock locks belong to an open file: a second open is refused as another process is
    with (
        sqlite_guard(url, "tune.storage"),
        pytest.raises(ConfigError) as info,
        sqlite_guard(url, "tune.storage"),
    ):
        pass
    message = str(info.value)
    assert "\n" not in message
    assert "tune.storage" in message and "in use by another tuning worker" in message
    assert "postgresql://" in message and "journal:" in message
    with sqlite_guard(url, "tune.storage"):  # released when the first block ended
        pass
    with sqlite_guard(PG, "tune.storage"), sqlite_guard(PG, "tune.storage"):
        pass  # a server database is never guarded


def test_several_workers_need_a_shared_store() -> None:
    check_shareable("sqlite:///optuna.db", "tune.storage", 1)
    check_shareable(PG, "tune.storage", 4)
    check_shareable("journal:o.journal", "tune.storage", 4)
    with pytest.raises(ConfigError, match=r"tune.workers=2 but MLFLOW_TRACKING_URI is sqlite"):
        check_shareable("sqlite:///mlflow.db", "MLFLOW_TRACKING_URI", 2)
    with pytest.raises(ConfigError, match="in memory"):
        check_shareable(None, "tune.storage", 2)


def test_journal_study_lock_excludes_and_releases(tmp_path: Path) -> None:
    params = _tune(storage=f"journal:{tmp_path}/o.journal", study_name="s")
    with study_lock(params, "parent-run"):
        held = list(tmp_path.glob("o.journal.*.lock"))
        assert len(held) == 1
    assert not list(tmp_path.glob("*.lock"))
    with study_lock(_tune(storage=None), "parent-run"):
        pass  # one process: nothing to lock
