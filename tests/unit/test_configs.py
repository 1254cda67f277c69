"""Contract tests: params.yaml loads, is closed, and every dvc.yaml param exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facelens.config import ConfigError, Params, load_params, params_hash, parse_params

ROOT = Path(__file__).resolve().parents[2]


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_yaml_loads_every_section() -> None:
    params = load_params(ROOT / "params.yaml")
    raw = _raw()
    assert set(raw) <= set(Params.model_fields)
    for section in raw:
        assert getattr(params, section) is not None


def test_params_yaml_synth_section_is_the_validated_default() -> None:
    """The SynthFACS tests (difficulty guard, calibration) check ``SynthParams()``; the
    pipeline reads params.yaml: both must describe the same generator."""
    from facelens.data.synth import SynthParams

    raw = _raw()["data"]["synth"]
    assert raw == SynthParams().model_dump(mode="json")


def test_unknown_key_fails_with_its_name() -> None:
    raw = _raw()
    raw["data"]["synth"]["n_identites"] = 3
    with pytest.raises(ConfigError, match=r"data\.synth\.n_identites"):
        parse_params(raw)


def test_wrong_type_fails_with_its_name() -> None:
    raw = _raw()
    raw["split"]["seed"] = "zero"
    with pytest.raises(ConfigError, match=r"split\.seed.*'zero'"):
        parse_params(raw)


def test_unknown_top_level_section_fails() -> None:
    with pytest.raises(ConfigError, match="trainn"):
        parse_params({"trainn": {}})


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_every_dvc_param_exists_in_params_yaml() -> None:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    raw = _raw()
    for name, stage in dvc["stages"].items():
        for entry in stage.get("params", []):
            keys = entry if isinstance(entry, str) else next(iter(entry))
            node = raw
            for part in keys.split("."):
                assert part in node, f"stage {name}: param {keys} is not in params.yaml"
                node = node[part]


def test_every_dvc_dep_script_exists() -> None:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for dep in stage.get("deps", []):
            if dep.startswith(("pipelines/", "src/")):
                assert (ROOT / dep).exists(), f"stage {name}: dep {dep} does not exist"


def test_params_hash_is_stable_and_sensitive() -> None:
    a = Params()
    assert params_hash(a) == params_hash(Params())
    b = parse_params({"split": {"seed": 1}})
    assert params_hash(a) != params_hash(b)
