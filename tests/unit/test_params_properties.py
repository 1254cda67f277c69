"""Property-based tests (hypothesis) of the params loader, ``facelens.config``.

Whatever ``params.yaml`` holds (random bytes, random YAML documents, the real file with values
replaced by random YAML values, keys added or removed at random depths), ``load_params`` and
``parse_params`` return :class:`Params` or raise :class:`ConfigError` with a one-line message
that names the file; nothing else escapes (no ``UnicodeDecodeError``, no ``TypeError`` from
a validator, no multi-line YAML parser message).

Example counts are bounded and there is no deadline, so the unit tier stays fast and steady.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facelens.config import ConfigError, Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]
REAL: dict = yaml.safe_load((ROOT / "params.yaml").read_text())

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["auto", "cpu", "cuda:1", "sqlite:///x.db", "1e3", "-1", "none", "[1]"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested mapping."""
    if not isinstance(doc, dict):
        return []
    out = []
    for key, value in doc.items():
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


PATHS = _paths(REAL)


@st.composite
def mutated_params(draw: st.DrawFn) -> dict:
    """The real params with 1-3 values replaced, keys removed or unknown keys added."""
    doc = copy.deepcopy(REAL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "remove":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return doc


def _dump(doc: object) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


YAML_TEXT = st.one_of(
    st.text(max_size=300),
    VALUES.map(_dump),
    mutated_params().map(_dump),
    st.sampled_from(["a: [1, 2", "{", "key: value\n  bad indent: 1", "- x\nk: v", "&a [*a]"]),
    st.just("[" * 20_000 + "]" * 20_000),  # deeper than the parser's recursion limit
    st.just("x: !!python/object/apply:os.system [echo hi]"),  # safe_load refuses the tag
)


def _one_line_config_error(exc: BaseException, source: str) -> None:
    assert isinstance(exc, ConfigError), repr(exc)
    message = str(exc)
    assert "\n" not in message, message
    assert message.startswith(f"{source}:"), message


def test_a_multi_error_message_is_one_line() -> None:
    raw = copy.deepcopy(REAL)
    raw["train"]["epochs"] = "many"
    raw["split"]["seed"] = "zero"
    raw["unknown"] = 1
    with pytest.raises(ConfigError) as caught:
        parse_params(raw, "params.yaml")
    _one_line_config_error(caught.value, "params.yaml")
    for key in ("train.epochs", "split.seed", "unknown"):
        assert key in str(caught.value)


@PROPERTY
@given(doc=st.one_of(VALUES, mutated_params()))
def test_parse_params_returns_params_or_one_line_config_error(doc: object) -> None:
    try:
        assert isinstance(parse_params(doc, "params.yaml"), Params)
    except Exception as exc:
        _one_line_config_error(exc, "params.yaml")


@PROPERTY
@given(content=st.one_of(YAML_TEXT.map(lambda t: t.encode("utf-8")), st.binary(max_size=200)))
def test_load_params_on_any_file_returns_params_or_one_line_config_error(
    content: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    try:
        assert isinstance(load_params(path), Params)
    except Exception as exc:
        _one_line_config_error(exc, str(path))
