"""A workspace copied or moved with its ``mlflow.db``: never write into the original's ``mlruns/``.

MLflow stores each experiment's artifact location as an *absolute* path when the experiment
is created (``<workspace>/mlruns/<id>`` for ``sqlite:///mlflow.db``). After ``cp -r project
copy`` the copy's ``mlflow.db`` still points there, and a run in the copy would put its
artifacts (models, checkpoints, figures) into the original's ``mlruns/``; after ``mv`` it would
recreate the old folder.

:func:`check_workspace` runs before anything is logged to an experiment of a local SQLite store
(:func:`facelens.tracking.runs.configure`, ``facelens compare --log``). The workspace is the
folder that holds the database file; each experiment records it in the tag
:data:`WORKSPACE_TAG`. When the artifact location lies inside *another* workspace (the one the
tag names, or, for an experiment written before the tag existed, a folder above it holding its
own copy of the database) it stops with one line naming both paths and the fixes. Artifact
locations elsewhere (a shared disk, ``s3://``, an MLflow server) are used as they are.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.exceptions import MlflowException

from facelens.errors import ConfigError

__all__ = [
    "WORKSPACE_TAG",
    "Moved",
    "check_workspace",
    "local_artifact_path",
    "relocate",
    "sqlite_workspace",
]

#: Experiment tag: the folder holding the SQLite database the experiment was last used from.
WORKSPACE_TAG = "facelens.workspace"


def sqlite_workspace(tracking_uri: str) -> Path | None:
    """The database file of a local ``sqlite:///`` URI, absolute; None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(os.path.abspath(unquote(path)))


def local_artifact_path(location: str | None) -> Path | None:
    """The local folder of an artifact location (a plain path or ``file://``), else None."""
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def check_workspace(experiment_id: str, tracking_uri: str, client=None) -> None:
    """Refuse to log to an experiment whose artifacts live in another workspace's folder.

    Args:
        experiment_id: the experiment about to receive runs.
        tracking_uri: the store in use; only local SQLite files are checked.
        client: an ``MlflowClient`` of ``tracking_uri`` (made here when None, and only for
            a database file that exists: opening a store creates it).

    Raises:
        ConfigError: one line naming the database, the artifact location, the other
            workspace and the fixes.
    """
    db = sqlite_workspace(tracking_uri)
    if db is None or not db.is_file():  # not a local file, or nothing in it yet
        return
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment(experiment_id)
    location = local_artifact_path(exp.artifact_location)
    here = db.parent
    if location is None:
        return
    recorded = exp.tags.get(WORKSPACE_TAG)
    other = _foreign_workspace(location, recorded, db)
    if other is not None:
        raise ConfigError(
            f"MLflow experiment {exp.name!r} in {db} keeps its artifacts in {location}, inside "
            f"the workspace {other} (this one, {here}, was copied or moved from it), so runs "
            f"here would write there: run `facelens runs relocate` here, or give this "
            f"workspace its own experiment (tracking.experiment in params.yaml) or its own "
            f"store (MLFLOW_TRACKING_URI=sqlite:///{here / 'fresh.db'})"
        )
    if recorded != str(here):
        _tag(client, experiment_id, str(here))


@dataclass(frozen=True)
class Moved:
    """An experiment whose artifact paths :func:`relocate` moved (or would move)."""

    experiment: str
    old: str
    new: str


#: (table, column) of the SQLite store that hold artifact paths, and the experiment id column.
_PATH_COLUMNS = (
    ("experiments", "artifact_location", "experiment_id"),
    ("runs", "artifact_uri", "experiment_id"),
    ("logged_models", "artifact_location", "experiment_id"),
)


def relocate(tracking_uri: str, *, dry_run: bool = False) -> list[Moved]:
    """Point the artifact paths of a copied or moved workspace's experiments into it.

    Each experiment whose artifact location lies in another workspace (as
    :func:`check_workspace` finds it) gets that workspace's folder replaced by this one in
    its artifact location, its runs' and logged models' artifact URIs and the model versions
    made from them; the files themselves are the copies ``cp -r`` made (after ``mv`` they
    are the moved ones).

    Raises:
        ConfigError: ``tracking_uri`` is not a local SQLite file.
    """
    db = sqlite_workspace(tracking_uri)
    if db is None or not db.is_file():
        raise ConfigError(
            f"{tracking_uri}: relocate works on a local SQLite store (sqlite:///mlflow.db)"
        )
    here = db.parent
    moved: list[Moved] = []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT experiment_id, name, artifact_location FROM experiments")
        for exp_id, name, location in rows.fetchall():
            tag = conn.execute(
                "SELECT value FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                (exp_id, WORKSPACE_TAG),
            ).fetchone()
            path = local_artifact_path(location)
            other = None if path is None else _foreign_workspace(path, tag and tag[0], db)
            if other is None:
                continue
            moved.append(Moved(name, str(other), str(here)))
            if not dry_run:
                _rewrite(conn, exp_id, str(other), str(here))
    return moved


def _rewrite(conn: sqlite3.Connection, exp_id: int, old: str, new: str) -> None:
    """Replace the ``old`` folder prefix by ``new`` in one experiment's artifact paths."""
    for prefix_old, prefix_new in ((old, new), (f"file://{old}", f"file://{new}")):
        n = len(prefix_old)
        like = prefix_old.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "/%"
        for table, column, key in _PATH_COLUMNS:
            conn.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                f"WHERE {key} = ? AND {column} LIKE ? ESCAPE '!'",
                (prefix_new, n + 1, exp_id, like),
            )
        for column in ("source", "storage_location"):
            conn.execute(
                f"UPDATE model_versions SET {column} = ? || substr({column}, ?) "
                f"WHERE run_id IN (SELECT run_uuid FROM runs WHERE experiment_id = ?) "
                f"AND {column} LIKE ? ESCAPE '!'",
                (prefix_new, n + 1, exp_id, like),
            )
    conn.execute(
        "INSERT INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?) "
        "ON CONFLICT (key, experiment_id) DO UPDATE SET value = excluded.value",
        (WORKSPACE_TAG, new, exp_id),
    )


def _foreign_workspace(location: Path, recorded: str | None, db: Path) -> Path | None:
    """The other workspace holding ``location``, or None when it is this one's or elsewhere."""
    other = Path(recorded) if recorded else _owner(location, db)
    if other is None or other == db.parent or not _within(location, other):
        return None
    return other


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _owner(location: Path, db: Path) -> Path | None:
    """The nearest folder above ``location`` holding a database file named like ``db`` that
    is not ``db`` itself (the workspace this one was copied from), else None."""
    for folder in location.parents:
        candidate = folder / db.name
        if candidate.is_file():
            try:
                same = os.path.samefile(candidate, db)
            except OSError:
                same = False
            return None if same else folder
    return None


def _tag(client, experiment_id: str, value: str) -> None:
    """Record the workspace; processes starting together race to insert the same tag and a
    SQL store refuses the second insert: the loser reads it back and accepts it."""
    try:
        client.set_experiment_tag(experiment_id, WORKSPACE_TAG, value)
    except MlflowException:
        if client.get_experiment(experiment_id).tags.get(WORKSPACE_TAG) != value:
            raise
