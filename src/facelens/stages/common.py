"""What every stage shares: the runner, the argument parser, the train run file, progress lines.

A stage's progress (its loops, nested) goes to stderr through :mod:`facelens.progress`; its
last line, on stdout, is one summary: the stage's name, its headline result and how long
it took.

A stage prints one clear line and exits 1 on a :class:`~facelens.errors.FaceLensError` (bad
params, bad data, leakage, missing inputs): a problem the user can fix. Any other exception
is a bug, here or in a library, and keeps its full traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from facelens import interrupts, progress
from facelens._io import flatten_metrics, write_error_line
from facelens.errors import FaceLensError, StageError

__all__ = [
    "StageError",
    "database_full_line",
    "headline_text",
    "progress_printer",
    "read_json_file",
    "read_run_file",
    "read_run_id",
    "run_stage",
    "stage_parser",
]


_RUN_FILE_KEYS = ("run_id", "model_uri", "best_val_metric", "data_version", "task")


def run_stage(main: Callable[[], str | None], name: str | None = None) -> int:
    """Run a stage's ``main``; a :class:`FaceLensError` becomes one line on stderr and exit
    code 1, any other exception propagates with its traceback.

    With ``name``, progress lines are prefixed with it (:func:`facelens.progress.configure`)
    and, when ``main`` returns, its summary is printed on stdout as the stage's last line:
    ``"<name>: <what main returned> in <elapsed>"`` (``"<name>: done in ..."`` when it
    returned ``None``).

    A write that fails because the disk is full, the quota is exceeded or the file system is
    read-only (``OSError`` ``ENOSPC`` / ``EDQUOT`` / ``EROFS``) is one line naming the file
    (:func:`facelens._io.write_error_line`) and exit code 1: outputs are written atomically,
    so the earlier ones are intact and a rerun completes once there is room. A SQLite
    database (``mlflow.db``, ``optuna.db``) that cannot grow ("database or disk is full",
    however MLflow, Optuna or SQLAlchemy wrap it) is the same line naming the database file
    (:func:`database_full_line`): SQLite rolls the failed transaction back, so the runs and
    trials written before are intact.

    Ctrl-C (SIGINT) becomes one line and exit code 130, SIGTERM (schedulers, ``docker
    stop``) the same line and exit code 143: work already saved (finished Optuna trials, epoch
    checkpoints, MLflow runs closed as ``KILLED``) is kept, and ``dvc repro`` resumes from it.
    """
    interrupts.install()
    _note_full_databases()
    started = time.monotonic()
    try:
        if name is not None:
            progress.configure(name)
        summary = main()
    except FaceLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        line = write_error_line(exc) or database_full_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        sig = interrupts.signal_name()
        print(
            f"interrupted ({sig}): finished trials and epoch checkpoints are kept; "
            "run `dvc repro` again to resume",
            file=sys.stderr,
        )
        return 143 if sig == "SIGTERM" else 130
    if name is not None:
        elapsed = progress.format_duration(time.monotonic() - started)
        print(f"{name}: {summary or 'done'} in {elapsed}", flush=True)
    return 0


_DATABASE_ATTR = "facelens_database"
#: The logger MLflow's SQL store logs database errors to, with their traceback.
_MLFLOW_STORE_LOGGER = "mlflow.store.db.utils"


def _note_full_databases() -> None:
    """Have SQLAlchemy name the database file on a SQLite "database or disk is full" error
    (a ``handle_error`` listener on every engine; nothing when SQLAlchemy is not installed)."""
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:  # pragma: no cover - SQLAlchemy comes with MLflow and Optuna
        return
    if not event.contains(Engine, "handle_error", _name_database):
        event.listen(Engine, "handle_error", _name_database)
    store_log = logging.getLogger(_MLFLOW_STORE_LOGGER)
    if not any(isinstance(f, _QuietFullDatabase) for f in store_log.filters):
        store_log.addFilter(_QuietFullDatabase())


class _QuietFullDatabase(logging.Filter):
    """Drops MLflow's logged traceback of a full SQLite database: the stage says it in one
    line (:func:`database_full_line`) when the error reaches it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or database_full_line(exc) is None


def _name_database(context: Any) -> None:
    original = context.original_exception
    if _is_sqlite_full(original) and context.engine is not None:
        database = context.engine.url.database
        if database:
            setattr(original, _DATABASE_ATTR, str(Path(database).resolve()))


def _is_sqlite_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code == sqlite3.SQLITE_FULL
    return isinstance(exc, sqlite3.Error) and "database or disk is full" in str(exc)


def database_full_line(exc: BaseException) -> str | None:
    """One line (like :func:`facelens._io.write_error_line`) for an exception caused, anywhere
    in its chain, by a SQLite database that could not grow; ``None`` otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_sqlite_full(current):
            where = getattr(current, _DATABASE_ATTR, None) or "an SQLite database"
            return write_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where))
        current = current.__cause__ or current.__context__
    return None


def headline_text(doc: Mapping[str, Any]) -> str:
    """``"accuracy 0.9012, macro_f1 0.8800"``: the finite numbers of a (nested) headline, keys
    joined with ``/``, for a stage's summary line."""
    flat = flatten_metrics(doc)
    return ", ".join(f"{k} {v:.4g}" if v != int(v) else f"{k} {int(v)}" for k, v in flat.items())


def progress_printer(label: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback shown as a loop (:func:`facelens.progress.callback`)."""
    return progress.callback(label)


def stage_parser(
    description: str | None, *, data: bool = False, model: bool = False
) -> argparse.ArgumentParser:
    """The argument parser of a stage script with the options every stage of its kind takes:
    ``--params``; with ``data``, ``--prepared`` and ``--splits``; with ``model``, the trained
    model's ``--model-dir`` and ``--run-file`` (read with :func:`read_run_id`)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    if data:
        ap.add_argument("--prepared", type=Path, required=True, help="prepared dataset directory")
        ap.add_argument("--splits", type=Path, required=True, help="split CSV directory")
    if model:
        ap.add_argument("--model-dir", type=Path, required=True, help="exported model directory")
        ap.add_argument("--run-file", type=Path, required=True, help="JSON with the train run id")
    return ap


def read_json_file(path: Path, *, made_by: str, key: str | None = None) -> Any:
    """A JSON document written by the stage ``made_by`` (or its ``key`` entry).

    Raises:
        StageError: the file is missing, is not JSON, or lacks ``key``; the message names
            the file and the stage to run.
    """
    try:
        doc = json.loads(Path(path).read_text())
        return doc if key is None else doc[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        what = f"no {key!r} entry" if isinstance(exc, KeyError | TypeError) else type(exc).__name__
        raise StageError(f"{path}: unreadable ({what}: {exc}); run `dvc repro {made_by}`") from None


def read_run_file(run_file: Path) -> dict[str, Any]:
    """The ``models/run.json`` document written by the ``train`` stage (run id, model URI,
    validation metric, data version, task).

    Raises:
        StageError: the file is missing, not JSON, or lacks one of those entries.
    """
    doc = read_json_file(run_file, made_by="train")
    missing = [k for k in _RUN_FILE_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise StageError(f"{run_file}: no {missing} entries; run `dvc repro train`")
    return doc


def read_run_id(run_file: Path) -> str:
    """The train run id in ``run_file`` (``models/run.json``, written by the ``train`` stage).

    Raises:
        StageError: the file is missing, not JSON, or has no ``run_id``.
    """
    return str(read_json_file(run_file, made_by="train", key="run_id"))
