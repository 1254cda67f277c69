"""The search space: loading from params, validation messages and suggestions."""

from __future__ import annotations

import copy

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import ValidationError

from facelens.tuning.params import FloatRange, IntRange, SearchSpace, TuneParams
from facelens.tuning.space import base_point, for_task, suggest

PARAMS_YAML = """
tune:
  study_name: facelens-expression
  storage: sqlite:///optuna.db
  n_trials: 6
  timeout: null
  seed: 0
  sampler: tpe
  pruner: median
  n_startup_trials: 2
  space:
    lr: {low: 3.0e-4, high: 3.0e-3, log: true}
    weight_decay: {low: 1.0e-5, high: 1.0e-2, log: true}
    optimizer: [adamw, sgd]
    batch_size: [32, 64]
    trainable_blocks: [5]
    head: [pooled, classifier]
    dropout: {low: 0.0, high: 0.5}
    label_smoothing: {low: 0.0, high: 0.1}
    augment: {low: 0.0, high: 0.6}
    epochs: [2]
    arch: [vgg16_bn]
"""

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _raw() -> dict:
    return yaml.safe_load(PARAMS_YAML)["tune"]


def _errors(raw: dict) -> str:
    with pytest.raises(ValidationError) as info:
        TuneParams.model_validate(raw)
    return str(info.value)


def test_params_yaml_example_loads_and_equals_defaults() -> None:
    params = TuneParams.model_validate(_raw())
    assert params.space.lr == FloatRange(low=3.0e-4, high=3.0e-3, log=True)
    assert params.space.optimizer == ["adamw", "sgd"]
    assert params.space.epochs == [2]
    assert params == TuneParams()  # the example is also the default


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("space", "learning_rate"), [0.1], "space.learning_rate"),
        (("space", "lr", "scale"), "log", "space.lr.range.scale"),
        (("n_trails",), 3, "n_trails"),
    ],
)
def test_unknown_keys_are_rejected_with_their_name(path, value, expected) -> None:
    raw = _raw()
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    message = _errors(raw)
    assert expected in message
    assert "Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("key", "dim", "needle"),
    [
        ("lr", {"low": 1.0e-2, "high": 1.0e-3}, "low must be < high"),
        ("dropout", {"low": 0.5, "high": 0.5}, "low must be < high"),
        ("weight_decay", {"low": 0.0, "high": 1.0e-2, "log": True}, "log=true needs low > 0"),
        ("batch_size", {"low": 64, "high": 16}, "low must be < high"),
        ("batch_size", {"low": 16.5, "high": 64}, "valid integer"),
        ("optimizer", [], "must not be empty"),
        ("head", ["pooled", "pooled"], "must be unique"),
        ("lr", {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}, "step cannot be combined"),
    ],
)
def test_bad_ranges_name_the_key(key: str, dim, needle: str) -> None:
    raw = _raw()
    raw["space"][key] = dim
    message = _errors(raw)
    assert f"space.{key}" in message
    assert needle in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sampler", "grid"),
        ("pruner", "asha"),
        ("n_trials", 0),
        ("timeout", -1),
        ("train_fraction", 0.0),
        ("direction", "up"),
    ],
)
def test_bad_settings_name_the_key(key: str, value) -> None:
    raw = _raw()
    raw[key] = value
    assert key in _errors(raw)


def test_suggest_covers_each_kind() -> None:
    space = SearchSpace(
        lr=FloatRange(low=1e-4, high=1e-2, log=True),
        dropout=FloatRange(low=0.0, high=0.5, step=0.1),
        batch_size=IntRange(low=16, high=64, step=16),
        epochs=[3],
        optimizer=["adamw", "sgd"],
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    values = suggest(trial, space)

    assert list(values) == list(SearchSpace.model_fields)
    dists = trial.distributions
    assert dists["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["dropout"] == FloatDistribution(0.0, 0.5, step=0.1)
    assert dists["batch_size"] == IntDistribution(16, 64, step=16)
    # A single choice still goes through suggest_categorical (recorded like the others).
    assert dists["epochs"] == CategoricalDistribution([3])
    assert dists["optimizer"] == CategoricalDistribution(["adamw", "sgd"])
    assert values["epochs"] == 3
    assert 1e-4 <= values["lr"] <= 1e-2
    assert values["batch_size"] in (16, 32, 48, 64)
    assert values["optimizer"] in ("adamw", "sgd")
    assert round(values["dropout"] * 10) == pytest.approx(values["dropout"] * 10)


def test_suggest_is_deterministic_and_pure() -> None:
    space = TuneParams().space
    before = copy.deepcopy(space.model_dump())

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return [suggest(study.ask(), space) for _ in range(3)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert space.model_dump() == before


def test_params_are_frozen() -> None:
    params = TuneParams()
    with pytest.raises(ValidationError):
        params.n_trials = 3  # type: ignore[misc]


def test_attributes_space_fixes_label_smoothing_to_the_base_value() -> None:
    """MSE ignores label smoothing: an attributes study does not search it; an expression
    study searches the space as written."""
    space = TuneParams().space
    assert isinstance(space.label_smoothing, FloatRange)
    assert for_task(space, "expression", 0.05) is space
    fixed = for_task(space, "attributes", 0.05)
    assert fixed.label_smoothing == [0.05]
    rest = {"exclude": {"label_smoothing"}}
    assert fixed.model_dump(**rest) == space.model_dump(**rest)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert {suggest(study.ask(), fixed)["label_smoothing"] for _ in range(5)} == {0.05}
    base = suggest(optuna.create_study().ask(), space)
    assert base_point(fixed, {**base, "label_smoothing": 0.05})[1] == []
