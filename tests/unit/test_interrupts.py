"""Ctrl-C is recorded, so an interrupt swallowed by a finaliser is raised again."""

from __future__ import annotations

import gc
import os
import signal
import sys
import weakref

import pytest

from facelens import interrupts


@pytest.fixture
def installed():
    previous = signal.getsignal(signal.SIGINT)
    interrupts._requested.clear()
    interrupts.install()
    yield
    signal.signal(signal.SIGINT, previous)
    interrupts._requested.clear()


def test_without_install_the_checks_do_nothing() -> None:
    interrupts._requested.clear()
    interrupts.raise_if_requested()
    assert not interrupts.requested()


def test_sigint_still_raises_and_is_recorded(installed) -> None:
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert interrupts.requested()
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_requested()


def test_an_interrupt_swallowed_by_a_gc_callback_is_raised_at_the_next_check(
    installed, monkeypatch: pytest.MonkeyPatch
) -> None:
    swallowed: list = []
    monkeypatch.setattr(sys, "unraisablehook", swallowed.append)

    class Thing:
        pass

    def callback(_ref: object) -> None:
        interrupts._on_sigint(signal.SIGINT, None)  # SIGINT arriving inside a GC callback

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()  # Python reports "Exception ignored in ..." and carries on
    assert ref() is None
    assert [type(u.exc_value) for u in swallowed] == [KeyboardInterrupt]
    assert interrupts.requested()
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_if_requested()
