"""What the comparison report needs from one run: params, latest metrics, tags and the report
artifacts (images, HTML and JSON under :data:`ARTIFACT_DIRS`)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facelens.tracking.compare.refs import mlflow_client, resolve_run_ref

__all__ = ["ARTIFACT_DIRS", "IMAGE_SUFFIXES", "RunSnapshot", "fetch_run"]

#: Artifact folders read from every run.
ARTIFACT_DIRS: tuple[str, ...] = ("explain", "manifold")
#: Image suffix -> MIME type of the images the report embeds.
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_KEPT_SUFFIXES = {*IMAGE_SUFFIXES, ".html", ".json"}
_MAX_ARTIFACT_BYTES = 25 * 1024 * 1024


@dataclass
class RunSnapshot:
    """What the report needs from one run.

    Attributes:
        ref: The reference as given on the command line.
        run_id: The resolved run id.
        run_name: The run's name (may be empty).
        experiment: The experiment's name.
        start_time: Start time, ISO 8601 (UTC), or empty.
        status: Run status (FINISHED, FAILED, ...).
        params: Parameter name -> value.
        metrics: Metric name -> latest value.
        tags: Non-system tags (``mlflow.*`` dropped).
        artifacts: Artifact path (e.g. ``explain/cam_grid_happy.png``) -> file bytes, for the
            files under :data:`ARTIFACT_DIRS` with a kept suffix.
    """

    ref: str
    run_id: str
    run_name: str = ""
    experiment: str = ""
    start_time: str = ""
    status: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short column heading: run name and id prefix (two runs of one stage share a name),
        and the ref when it was a model."""
        base = f"{self.run_name} {self.run_id[:8]}" if self.run_name else self.run_id[:8]
        return f"{base} ({self.ref})" if self.ref.startswith("models:/") else base


def _walk_artifacts(client: Any, run_id: str, path: str) -> Iterable[Any]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _walk_artifacts(client, run_id, info.path)
        else:
            yield info


def fetch_run(
    ref: str,
    *,
    client: Any = None,
    tracking_uri: str | None = None,
    artifact_dirs: Sequence[str] = ARTIFACT_DIRS,
) -> RunSnapshot:
    """Resolve a reference and collect params, latest metrics, tags and report artifacts.

    Args:
        ref: See :func:`~facelens.tracking.compare.refs.resolve_run_ref`.
        client: An ``MlflowClient``; built from ``tracking_uri`` when ``None``.
        tracking_uri: Tracking URI for a new client.
        artifact_dirs: Artifact folders to read (recursively); only images, HTML and JSON
            files up to 25 MiB each are kept.

    Returns:
        A :class:`RunSnapshot`.
    """
    cl = client if client is not None else mlflow_client(tracking_uri)
    run_id = resolve_run_ref(ref, client=cl)
    run = cl.get_run(run_id)
    try:
        experiment = cl.get_experiment(run.info.experiment_id).name
    except Exception:  # a deleted experiment must not stop the report
        experiment = str(run.info.experiment_id)
    start = run.info.start_time
    snap = RunSnapshot(
        ref=ref,
        run_id=run_id,
        run_name=run.info.run_name or "",
        experiment=experiment,
        start_time=(
            datetime.fromtimestamp(start / 1000, tz=UTC).isoformat(timespec="seconds")
            if start
            else ""
        ),
        status=str(run.info.status),
        params={k: str(v) for k, v in run.data.params.items()},
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags={k: str(v) for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
    )
    with tempfile.TemporaryDirectory(prefix="facelens-compare-") as tmp:
        for top in artifact_dirs:
            for info in _walk_artifacts(cl, run_id, top):
                suffix = Path(info.path).suffix.lower()
                size = info.file_size or 0
                if suffix not in _KEPT_SUFFIXES or size > _MAX_ARTIFACT_BYTES:
                    continue
                local = cl.download_artifacts(run_id, info.path, tmp)
                snap.artifacts[info.path] = Path(local).read_bytes()
    return snap
