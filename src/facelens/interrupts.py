"""Ctrl-C that cannot be lost.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be, and
an exception raised inside a finaliser or a garbage-collection callback (SQLAlchemy has
several) is printed and *swallowed*: the stage would then run on as if nothing had happened.
:func:`install` (called by :func:`facelens.stages.common.run_stage`) keeps Python's behaviour and also
records the request, and the long loops call :func:`raise_if_requested` at safe points (each
training batch, each cached batch, each trial), so a swallowed interrupt is raised again
within one batch. Without :func:`install` (library use, tests) the checks are no-ops.

SIGTERM, what schedulers, ``kill`` and ``docker stop`` send, is handled the same way: the
stage stops at the next safe point with its work kept and its runs closed, and
:func:`signal_name` says which signal it was.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["install", "raise_if_requested", "requested", "signal_name"]

_requested = threading.Event()
_received: list[int] = []


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Record SIGINT and SIGTERM (and raise ``KeyboardInterrupt`` for both); main thread
    only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        signal.signal(signal.SIGTERM, _on_sigint)


def requested() -> bool:
    """Whether SIGINT or SIGTERM arrived since :func:`install`."""
    return _requested.is_set()


def signal_name() -> str:
    """``SIGTERM`` when that stopped the process, else ``SIGINT`` (Ctrl-C)."""
    return "SIGTERM" if signal.SIGTERM in _received else "SIGINT"


def raise_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` when SIGINT arrived (even if it was swallowed once)."""
    if _requested.is_set():
        raise KeyboardInterrupt
