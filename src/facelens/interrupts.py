"""Ctrl-C that cannot be lost.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be, and
an exception raised inside a finaliser or a garbage-collection callback (SQLAlchemy has
several) is printed and *swallowed*: the stage would then run on as if nothing had happened.
:func:`install` (called by :func:`facelens.stages.common.run_stage`) keeps Python's behaviour and also
records the request, and the long loops call :func:`raise_if_requested` at safe points (each
training batch, each cached batch, each trial), so a swallowed interrupt is raised again
within one batch. Without :func:`install` (library use, tests) the checks are no-ops.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["install", "raise_if_requested", "requested"]

_requested = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Record SIGINT (and still raise ``KeyboardInterrupt``); main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def requested() -> bool:
    """Whether SIGINT arrived since :func:`install`."""
    return _requested.is_set()


def raise_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` when SIGINT arrived (even if it was swallowed once)."""
    if _requested.is_set():
        raise KeyboardInterrupt
