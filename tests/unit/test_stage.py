"""Shared stage-script helpers: the common options and the run-file reader."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
from pathlib import Path

import pytest

from facelens.errors import DataError, StageError
from facelens.stages.common import read_run_id, run_stage, stage_parser


def test_stage_parser_adds_the_options_of_its_kind() -> None:
    args = stage_parser("x", data=True, model=True).parse_args(
        ["--prepared", "p", "--splits", "s", "--model-dir", "m", "--run-file", "r.json"]
    )
    assert (args.params, args.prepared, args.splits) == (Path("params.yaml"), Path("p"), Path("s"))
    assert (args.model_dir, args.run_file) == (Path("m"), Path("r.json"))
    with pytest.raises(SystemExit):  # --prepared is required for a data stage
        stage_parser("x", data=True).parse_args([])
    assert not hasattr(stage_parser("x").parse_args([]), "prepared")


@pytest.mark.parametrize(
    "content", [None, "not json", json.dumps({"model_uri": "runs:/x/model"}), "[1, 2]"]
)
def test_read_run_id_names_the_file_when_it_cannot(
    tmp_path: Path, content: str | None, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = signal.getsignal(signal.SIGINT)  # run_stage installs its Ctrl-C handler
    monkeypatch.setattr(signal, "signal", lambda *a: previous)
    run_file = tmp_path / "run.json"
    if content is not None:
        run_file.write_text(content)
    with pytest.raises(StageError, match=r"run\.json: unreadable"):
        read_run_id(run_file)

    def main() -> None:
        read_run_id(run_file)

    assert run_stage(main) == 1  # one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1


def test_read_run_id(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "abc123", "best_epoch": 3}))
    assert read_run_id(tmp_path / "run.json") == "abc123"


def _quiet_sigint(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = signal.getsignal(signal.SIGINT)  # run_stage installs its Ctrl-C handler
    monkeypatch.setattr(signal, "signal", lambda *a: previous)


def test_a_user_error_is_one_line_and_exit_1(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    _quiet_sigint(monkeypatch)

    def main() -> None:
        raise DataError("data/splits/test.csv has no rows; check split.test_fraction")

    assert run_stage(main) == 1
    err = capsys.readouterr().err
    assert err == "error: data/splits/test.csv has no rows; check split.test_fraction\n"


@pytest.mark.parametrize("bug", [ValueError, FileNotFoundError, KeyError, ZeroDivisionError])
def test_a_genuine_bug_keeps_its_traceback(bug: type[Exception], monkeypatch, capsys) -> None:
    """Library and programming errors (a numpy ValueError, a missing key) are not user errors:
    they propagate from ``run_stage`` so Python prints the whole traceback."""
    _quiet_sigint(monkeypatch)

    def main() -> None:
        raise bug("deep inside a library")

    with pytest.raises(bug, match="deep inside a library"):
        run_stage(main)
    assert capsys.readouterr().err == ""  # nothing was turned into an "error:" line


def test_every_project_error_derives_from_the_base() -> None:
    import facelens.errors as errors

    classes = [getattr(errors, n) for n in errors.__all__]
    assert all(issubclass(c, errors.FaceLensError) for c in classes)
    assert issubclass(errors.MissingInputError, FileNotFoundError)  # callers catching builtins
    assert issubclass(errors.ConfigError, ValueError)


@pytest.mark.parametrize(
    ("code", "what"),
    [
        (errno.ENOSPC, "disk full"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only"),
    ],
)
def test_a_full_disk_is_one_line_naming_the_file(code: int, what: str, monkeypatch, capsys) -> None:
    _quiet_sigint(monkeypatch)

    def main() -> None:
        raise OSError(code, os.strerror(code), "models/model/state_dict.pt")

    assert run_stage(main) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {what}") and err.count("\n") == 1
    assert "while writing models/model/state_dict.pt;" in err


def test_other_os_errors_keep_their_traceback(monkeypatch, capsys) -> None:
    _quiet_sigint(monkeypatch)

    def main() -> None:
        raise OSError(errno.EIO, "Input/output error", "x")

    with pytest.raises(OSError, match="Input/output"):
        run_stage(main)
    assert capsys.readouterr().err == ""


def test_a_full_sqlite_database_anywhere_in_the_chain_is_one_line_naming_it(tmp_path):
    import sqlite3

    from facelens.stages.common import database_full_line

    db = tmp_path / "optuna.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (b BLOB)")
    con.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as caught:
        con.execute("INSERT INTO t VALUES (zeroblob(100000))")  # SQLite's own SQLITE_FULL
    con.close()
    full = caught.value
    try:
        try:
            raise RuntimeError("wrapped by a library") from full
        except RuntimeError:
            raise ValueError("and again") from None  # context only
    except ValueError as outer:
        assert database_full_line(outer).startswith("disk full while writing an SQLite database;")
        full.facelens_database = str(db)  # what the SQLAlchemy listener records
        line = database_full_line(outer)
    assert line.startswith(f"disk full while writing {db};") and "\n" not in line
    assert database_full_line(sqlite3.OperationalError("no such table: t")) is None
    assert database_full_line(RuntimeError("database or disk is full")) is None


def test_a_named_stage_ends_with_one_summary_line(monkeypatch, capsys) -> None:
    _quiet_sigint(monkeypatch)
    monkeypatch.setenv("FACELENS_PROGRESS", "plain")
    assert run_stage(lambda: "3 trials (3 complete), best val macro-F1 0.8000", "tune") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"tune: 3 trials \(3 complete\), best val macro-F1 0\.8000 in \S+s", line)
    assert run_stage(lambda: None, "split") == 0
    assert capsys.readouterr().out.startswith("split: done in ")


def test_a_bad_progress_setting_is_one_line_before_the_stage_runs(monkeypatch, capsys) -> None:
    _quiet_sigint(monkeypatch)
    monkeypatch.setenv("FACELENS_PROGRESS_EVERY", "often")
    ran = []
    assert run_stage(lambda: ran.append(1), "train") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: FACELENS_PROGRESS_EVERY='often'")
    assert captured.err.count("\n") == 1 and not ran and captured.out == ""
