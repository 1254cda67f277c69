"""Helpers shared by the thin DVC stage scripts in ``pipelines/``.

A stage prints one clear line and exits 1 on a known error (bad params, bad data, leakage),
instead of a traceback from deep inside a library.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from facelens import interrupts

__all__ = [
    "KNOWN_ERRORS",
    "StageError",
    "progress_printer",
    "read_run_id",
    "run_stage",
    "stage_parser",
]


class StageError(RuntimeError):
    """A stage cannot produce its outputs; the message says why and what to do."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from facelens.config import ConfigError
    from facelens.data.split import LeakageError
    from facelens.models.vgg import WeightsUnavailable

    return (
        ConfigError,
        LeakageError,
        StageError,
        WeightsUnavailable,
        FileNotFoundError,
        ValueError,
    )


KNOWN_ERRORS = _known_errors


def run_stage(main: Callable[[], None]) -> int:
    """Run a stage's ``main``; known errors become one line on stderr and exit code 1.

    Ctrl-C (SIGINT) becomes one line and exit code 130: work already saved (finished Optuna
    trials, epoch checkpoints, MLflow runs closed as ``KILLED``) is kept, and ``dvc repro``
    resumes from it.
    """
    interrupts.install()
    try:
        main()
    except KNOWN_ERRORS() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: finished trials and epoch checkpoints are kept; "
            "run `dvc repro` again to resume",
            file=sys.stderr,
        )
        return 130
    return 0


def progress_printer(label: str, every_s: float = 2.0) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that prints a line every few seconds (log-friendly)."""
    last = [0.0]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= every_s:
            last[0] = now
            pct = 100.0 * done / max(total, 1)
            print(f"{label}: {done}/{total} ({pct:.0f}%)", file=sys.stderr, flush=True)

    return update


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


def read_run_id(run_file: Path) -> str:
    """The train run id in ``run_file`` (``models/run.json``, written by the ``train`` stage).

    Raises:
        StageError: the file is missing, not JSON, or has no ``run_id``.
    """
    try:
        return str(json.loads(Path(run_file).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StageError(
            f"{run_file}: no train run id ({type(exc).__name__}: {exc}); run `dvc repro train`"
        ) from None
