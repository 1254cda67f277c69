"""The registry's promotion rule is a pure function of the new version and the champion."""

from __future__ import annotations

import pytest

from facelens.tracking.registry import Champion, decide_promotion


def _champion(value: str = "0.8", data: str = "d1", metric: str = "val_metric") -> Champion:
    return Champion("3", {"metric": metric, "metric_value": value, "data_version": data})


def _decide(value: float, champion: Champion | None, **kw) -> tuple[bool, str, float | None]:
    return decide_promotion(
        "4",
        metric_name=kw.pop("metric_name", "val_metric"),
        metric_value=value,
        data_version=kw.pop("data_version", "d1"),
        champion=champion,
        **kw,
    )


def test_no_champion_promotes() -> None:
    assert _decide(0.1, None) == (True, "no champion yet", None)


@pytest.mark.parametrize(("value", "wins"), [(0.81, True), (0.8, False), (0.79, False)])
def test_strictly_better_wins_and_ties_keep_the_champion(value: float, wins: bool) -> None:
    win, reason, champion_value = _decide(value, _champion())
    assert (win, champion_value) == (wins, 0.8)
    assert ("beats" if wins else "does not beat") in reason and "v3" in reason


def test_lower_is_better_flips_the_comparison() -> None:
    assert _decide(0.79, _champion(), higher_is_better=False)[0] is True
    assert _decide(0.81, _champion(), higher_is_better=False)[0] is False


def test_incomparable_champions_are_replaced() -> None:
    win, reason, _ = _decide(0.1, _champion(data="d0"))
    assert win and "data version changed (d0 -> d1)" in reason
    win, reason, _ = _decide(0.1, _champion(metric="val_loss"))
    assert win and "metric changed (val_loss -> val_metric)" in reason
    win, reason, value = _decide(0.1, _champion(value="nan"))
    assert (win, value) == (True, None) and "no valid metric_value" in reason


def test_the_champion_itself_is_kept() -> None:
    assert decide_promotion(
        "3", metric_name="val_metric", metric_value=0.9, data_version="d1", champion=_champion()
    ) == (False, "v3 is already the champion", None)


def test_inputs_are_not_mutated() -> None:
    champion = _champion()
    before = dict(champion.tags)
    _decide(0.9, champion)
    assert dict(champion.tags) == before
