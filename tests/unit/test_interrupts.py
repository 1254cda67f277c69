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
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts._requested.clear()
    interrupts._received.clear()
    interrupts.install()
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    interrupts._requested.clear()
    interrupts._received.clear()


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


def test_sigterm_is_handled_like_ctrl_c(installed) -> None:
    """What schedulers and ``docker stop`` send stops the stage at a safe point, like Ctrl-C."""
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert interrupts.requested() and interrupts.signal_name() == "SIGTERM"


def test_run_stage_names_the_signal_and_exits_like_a_shell(installed, capsys) -> None:
    from facelens.stages.common import run_stage

    def stopped(sig: int):
        def main() -> None:
            os.kill(os.getpid(), sig)
            for _ in range(1000):
                pass

        return main

    assert run_stage(stopped(signal.SIGINT)) == 130
    assert "interrupted (SIGINT)" in capsys.readouterr().err
    interrupts._received.clear()
    assert run_stage(stopped(signal.SIGTERM)) == 143
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted (SIGTERM)" in err


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
