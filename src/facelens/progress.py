"""Progress of the long loops (pretraining, trials, epochs, batches, explain and manifold
steps): a live rich display on a terminal, plain throttled lines in a log.

Loops nest: the tune stage opens ``trials``, each trial's training opens ``epochs``, each
epoch opens ``batches``. A plain line shows every open loop, the time since the outermost
one started and the time left, estimated from the fraction done so far (nested loops count
as fractions of their parent's unit)::

    tune: trials 2/20 (best 0.8530) | epochs 1/5 (val macro-F1 0.8120) | batches 14/40 | 1m12s elapsed, ETA 6m40s

Where the output goes, from the environment:

- ``FACELENS_PROGRESS``: ``auto`` (default: ``live`` when stderr is a terminal, else
  ``plain``), ``live`` (a rich display), ``plain`` (lines, never a carriage return) or
  ``off``. ``dvc repro`` passes its own terminal to the stage, so a stage run by hand or by
  ``dvc repro`` in a terminal is live and the same stage with its output sent to a file is
  plain.
- ``FACELENS_PROGRESS_EVERY``: seconds between two plain lines of loop updates (default 5;
  0 prints every update). Events (:func:`note`, e.g. a trial's end) are always printed.

Library code opens loops with :func:`task` and reports events with :func:`note`; the stage
runner calls :func:`configure` once with the stage's name.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from facelens.errors import ConfigError

__all__ = [
    "DEFAULT_EVERY",
    "MODES",
    "Board",
    "Task",
    "callback",
    "configure",
    "format_duration",
    "note",
    "task",
]

#: Values of ``FACELENS_PROGRESS``.
MODES = ("auto", "live", "plain", "off")
#: Seconds between two plain lines when ``FACELENS_PROGRESS_EVERY`` is not set.
DEFAULT_EVERY = 5.0


def format_duration(seconds: float) -> str:
    """``"0.4s"``, ``"12s"``, ``"4m05s"``, ``"2h03m"``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _format(value: object) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text.replace("\r", " ").replace("\n", " ")


@dataclass
class Task:
    """One open loop: ``done`` of ``total`` units (``None``: unknown) and display fields."""

    label: str
    total: int | None
    done: int
    started: float
    board: Board
    fields: dict[str, str] = field(default_factory=dict)
    start_done: int = 0
    handle: Any = None  # the rich task id when live

    def update(self, done: int | None = None, fields: Mapping[str, object] | None = None) -> None:
        """Set the units done and the fields (e.g. ``{"val macro-F1": 0.81}``); in plain mode
        a line is printed when the last one is at least ``every`` seconds old."""
        if done is not None:
            self.done = done
        if fields:
            self.fields.update({k: _format(v) for k, v in fields.items()})
        self.board.changed(self)

    def text(self) -> str:
        """``"epochs 2/5 (val macro-F1 0.8120)"``."""
        count = f"{self.done}" if self.total is None else f"{self.done}/{self.total}"
        extra = ", ".join(f"{k} {v}" for k, v in self.fields.items())
        return f"{self.label} {count}" + (f" ({extra})" if extra else "")


class Board:
    """The open loops of one process and where their progress goes.

    Args:
        stage: the prefix of every line (the stage's name).
        mode: ``live``, ``plain`` or ``off`` (resolved, not ``auto``).
        every: seconds between two plain lines of updates.
        stream: where lines go (``None``: ``sys.stderr`` at the time of writing).
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        stage: str = "facelens",
        *,
        mode: str = "plain",
        every: float = DEFAULT_EVERY,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self.mode, self.every = stage, mode, every
        self._stream = stream
        self.clock = clock
        #: The environment settings the board was made from (see :func:`_current`).
        self.env: tuple[str | None, str | None] | None = None
        self.tasks: list[Task] = []
        self._last_line = -math.inf
        self._live: Any = None  # rich.progress.Progress while a loop is open in live mode

    @property
    def stream(self) -> TextIO:
        """Where lines go."""
        return self._stream if self._stream is not None else sys.stderr

    def open(self, label: str, total: int | None, done: int = 0) -> Task:
        """Start a loop nested in the open ones."""
        t = Task(label, total, done, self.clock(), self, start_done=done)
        self.tasks.append(t)
        if self.mode == "live":
            self._live_open(t)
        return t

    def close(self, t: Task) -> None:
        """End ``t`` (and any loop still open inside it)."""
        while t in self.tasks:
            inner = self.tasks.pop()
            if self._live is not None and inner.handle is not None:
                self._live.remove_task(inner.handle)
        if self._live is not None and not self.tasks:
            self._live.stop()
            self._live = None

    def changed(self, t: Task) -> None:
        """``t`` moved: refresh the display, or print a line when one is due."""
        if self.mode == "live" and self._live is not None and t.handle is not None:
            extra = ", ".join(f"{k} {v}" for k, v in t.fields.items())
            self._live.update(t.handle, completed=t.done, info=extra)
        elif self.mode == "plain" and self.clock() - self._last_line >= self.every:
            self._write(self.line())

    def note(self, message: str) -> None:
        """Print an event (always, above the live display when there is one)."""
        if self.mode == "off":
            return
        text = f"{self.stage}: {_format(message)}"
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            self._write(text)

    def line(self) -> str:
        """The plain line of the open loops, with elapsed time and ETA."""
        now = self.clock()
        parts = [t.text() for t in self.tasks]
        if self.tasks:
            elapsed = now - self.tasks[0].started
            timing = f"{format_duration(elapsed)} elapsed"
            eta = self.eta(now)
            parts.append(timing + ("" if eta is None else f", ETA {format_duration(eta)}"))
        return f"{self.stage}: " + " | ".join(parts)

    def eta(self, now: float) -> float | None:
        """Seconds left for the outermost loop, from the fraction done since it started
        (an inner loop counts as a fraction of its parent's current unit)."""
        fraction = 0.0
        for t in reversed(self.tasks):
            if not t.total:
                return None
            fraction = min(1.0, (t.done + fraction) / t.total)
        first = self.tasks[0]
        start = first.start_done / first.total if first.total else 0.0
        if fraction <= start:
            return None
        return (now - first.started) * (1.0 - fraction) / (fraction - start)

    def _write(self, text: str) -> None:
        self._last_line = self.clock()
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream never stops the work
            pass

    def _live_open(self, t: Task) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._live = Progress(
                TextColumn(f"[bold]{self.stage}[/] {{task.description}}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._live.start()
        t.handle = self._live.add_task(t.label, total=t.total, completed=t.done, info="")


_board: Board | None = None


def _every_from_env() -> float:
    raw = os.environ.get("FACELENS_PROGRESS_EVERY")
    if raw is None or not raw.strip():
        return DEFAULT_EVERY
    try:
        every = float(raw)
    except ValueError:
        every = -1.0
    if not math.isfinite(every) or every < 0:
        raise ConfigError(
            f"FACELENS_PROGRESS_EVERY={raw!r}: expected seconds between progress lines, a "
            "number >= 0 (0 prints every update)"
        )
    return every


def _env() -> tuple[str | None, str | None]:
    return os.environ.get("FACELENS_PROGRESS"), os.environ.get("FACELENS_PROGRESS_EVERY")


def _mode_from_env(stream: TextIO) -> str:
    raw = os.environ.get("FACELENS_PROGRESS", "auto").strip().lower() or "auto"
    if raw not in MODES:
        raise ConfigError(
            f"FACELENS_PROGRESS={raw!r}: expected one of {', '.join(MODES)} "
            "(auto: live on a terminal, plain lines otherwise)"
        )
    if raw != "auto":
        return raw
    isatty = getattr(stream, "isatty", None)
    return "live" if callable(isatty) and isatty() else "plain"


def configure(stage: str = "facelens", *, stream: TextIO | None = None, **overrides: Any) -> Board:
    """Start this process's board for ``stage``, its mode and pace read from the environment
    (``overrides``: ``mode``, ``every``, ``clock`` given directly).

    Raises:
        ConfigError: ``FACELENS_PROGRESS`` or ``FACELENS_PROGRESS_EVERY`` is not a value
            they take.
    """
    global _board
    mode = overrides.pop("mode", None) or _mode_from_env(stream or sys.stderr)
    every = overrides.pop("every", None)
    if _board is not None:
        for t in list(_board.tasks):
            _board.close(t)
    _board = Board(
        stage,
        mode=mode,
        every=_every_from_env() if every is None else every,
        stream=stream,
        **overrides,
    )
    _board.env = _env()
    return _board


def _current() -> Board:
    """The process's board; made anew (same stage) when the environment settings changed
    while no loop was open, so library users and tests can switch it at any time."""
    if _board is None:
        return configure()
    if _board.env is not None and _board.env != _env() and not _board.tasks:
        return configure(_board.stage, stream=_board._stream)
    return _board


@contextmanager
def task(label: str, total: int | None, *, done: int = 0, enabled: bool = True) -> Iterator[Task]:
    """A loop of ``total`` units (``done`` of them already, e.g. resumed); with ``enabled``
    false, or the board off, nothing is shown."""
    board = _current() if enabled else Board(mode="off")
    t = board.open(label, total, done)
    try:
        yield t
    finally:
        board.close(t)


def note(message: str) -> None:
    """Print an event line (``"<stage>: <message>"``), whatever the pace of updates."""
    _current().note(message)


def callback(label: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback (data preparation, pool generation) shown as a
    loop that opens at the first call and closes when ``done`` reaches ``total``."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        board = _current()
        if "task" not in state:
            state["task"] = board.open(label, total)
        t: Task = state["task"]
        t.total = total
        t.update(done)
        if done >= total:
            board.close(t)
            state.clear()

    return update
