"""Progress lines: pace, format, nesting, ETA and the environment switches, on a fake clock."""

from __future__ import annotations

import io

import pytest

from facelens import progress
from facelens.errors import ConfigError
from facelens.progress import Board, format_duration


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _fresh_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_board", None)  # the process's board, restored afterwards


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


def _board(clock: _Clock, every: float = 5.0, mode: str = "plain") -> tuple[Board, io.StringIO]:
    out = io.StringIO()
    return Board("tune", mode=mode, every=every, stream=out, clock=clock), out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4s"), (12.4, "12s"), (245, "4m05s"), (3600 + 180 + 20, "1h03m"), (-1, "0.0s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_plain_lines_are_at_most_one_every_few_seconds(clock: _Clock) -> None:
    board, out = _board(clock, every=5.0)
    t = board.open("batches", 100)
    for step in range(1, 101):  # 100 batches, 0.5 s each: 50 s
        clock.now += 0.5
        t.update(step, {"loss": 1.0 / step})
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # the first update, then one per 5 s
    assert "\r" not in out.getvalue()
    assert lines[0] == "tune: batches 1/100 (loss 1.0000) | 0.5s elapsed, ETA 50s"
    assert lines[1].startswith("tune: batches 11/100 (loss 0.0909) | 5.5s elapsed, ETA 45s")


def test_every_zero_prints_every_update_and_events_always(clock: _Clock) -> None:
    board, out = _board(clock, every=0.0)
    t = board.open("epochs", 3)
    for e in (1, 2, 3):
        t.update(e)
    board.note("trial 0 COMPLETE 0.5000")
    assert len(out.getvalue().splitlines()) == 4
    slow, out2 = _board(clock, every=60.0)
    t2 = slow.open("epochs", 3)
    t2.update(1)  # printed: the first line
    t2.update(2)  # not due
    slow.note("trial 0 COMPLETE 0.5000")  # an event: printed
    slow.note("trial 1 PRUNED at epoch 1")
    assert out2.getvalue().splitlines()[1:] == [
        "tune: trial 0 COMPLETE 0.5000",
        "tune: trial 1 PRUNED at epoch 1",
    ]


def test_nested_loops_share_one_line_with_a_fractional_eta(clock: _Clock) -> None:
    board, out = _board(clock, every=0.0)
    trials = board.open("trials", 4, done=1)  # one trial kept from an earlier run
    clock.now += 30
    trials.update(2, {"best": 0.8530})  # 1 trial in 30 s
    epochs = board.open("epochs", 5)
    clock.now += 6
    epochs.update(1, {"val macro-F1": 0.8123, "best": 0.8123})
    batches = board.open("batches", 10)
    clock.now += 3
    batches.update(5)
    line = out.getvalue().splitlines()[-1]
    assert line == (
        "tune: trials 2/4 (best 0.8530) | epochs 1/5 (val macro-F1 0.8123, best 0.8123) | "
        "batches 5/10 | 39s elapsed, ETA 51s"
    )  # 2 + (1 + 5/10) / 5 = 2.3 trials done, 1.3 of them in 39 s: the 1.7 left take 51 s
    board.close(epochs)  # closing a loop closes the loops inside it
    assert board.tasks == [trials]


def test_eta_is_unknown_without_a_total_or_before_any_progress(clock: _Clock) -> None:
    board, _ = _board(clock)
    board.open("items", None)
    assert board.eta(clock()) is None
    board2, _ = _board(clock)
    board2.open("epochs", 5, done=2)
    clock.now += 10
    assert board2.eta(clock()) is None
    assert board2.line() == "tune: epochs 2/5 | 10s elapsed"


def test_fields_never_carry_a_carriage_return(clock: _Clock) -> None:
    board, out = _board(clock, every=0.0)
    board.open("steps", 2).update(1, {"now": "a\rb\nc"})
    board.note("x\ry")
    assert "\r" not in out.getvalue()
    assert out.getvalue().count("\n") == 2


def test_off_prints_nothing(clock: _Clock) -> None:
    board, out = _board(clock, every=0.0, mode="off")
    board.open("epochs", 2).update(1)
    board.note("event")
    assert out.getvalue() == ""


def test_live_mode_draws_no_lines_and_prints_events(clock: _Clock) -> None:
    out = _Tty()
    board = Board("train", mode="live", every=0.0, stream=out, clock=clock)
    t = board.open("epochs", 3)
    t.update(1, {"val macro-F1": 0.5})
    board.note("an event")
    board.close(t)
    text = out.getvalue()
    assert "an event" in text
    assert "train: epochs" not in text  # the plain line format is not used on a terminal
    assert board._live is None  # the display stopped with the last loop


def test_the_module_level_task_and_note_use_the_configured_board(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FACELENS_PROGRESS", "plain")
    monkeypatch.setenv("FACELENS_PROGRESS_EVERY", "0")
    out = io.StringIO()
    progress.configure("explain", stream=out)
    with progress.task("methods", 2) as t:
        t.update(1, {"now": "gradcam"})
    with progress.task("hidden", 2, enabled=False) as t:
        t.update(1)
    progress.note("done")
    update = progress.callback("pool")
    update(2, 4)
    update(4, 4)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("explain: methods 1/2 (now gradcam) | ")
    assert lines[1] == "explain: done"
    assert [x.split(" | ")[0] for x in lines[2:]] == ["explain: pool 2/4", "explain: pool 4/4"]
    assert progress._current().tasks == []  # the callback's loop closed at 4/4


@pytest.mark.parametrize(
    ("env", "stream", "mode"),
    [
        ({}, io.StringIO(), "plain"),
        ({}, _Tty(), "live"),
        ({"FACELENS_PROGRESS": "OFF"}, _Tty(), "off"),
    ],
)
def test_auto_mode_is_live_on_a_terminal_only(
    env: dict[str, str], stream: io.StringIO, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FACELENS_PROGRESS", raising=False)
    monkeypatch.delenv("FACELENS_PROGRESS_EVERY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    board = progress.configure("x", stream=stream)
    assert (board.mode, board.every) == (mode, progress.DEFAULT_EVERY)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("FACELENS_PROGRESS", "loud", r"FACELENS_PROGRESS='loud': expected one of auto, live"),
        ("FACELENS_PROGRESS_EVERY", "soon", r"FACELENS_PROGRESS_EVERY='soon': expected seconds"),
        ("FACELENS_PROGRESS_EVERY", "-1", r"a number >= 0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    name: str, value: str, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=match) as info:
        progress.configure("x", stream=io.StringIO())
    assert "\n" not in str(info.value)
