"""Contract tests: params.yaml loads, is closed, and every dvc.yaml param exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from facelens._io import canonical_hash
from facelens.config import ConfigError, Params, load_params, parse_params
from facelens.training.params import DEFAULT_TASK, TASK_EPOCHS, TrainParams

ROOT = Path(__file__).resolve().parents[2]


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_yaml_has_every_section_and_the_code_sees_its_values() -> None:
    params = load_params(ROOT / "params.yaml")
    raw = _raw()
    assert set(raw) == set(Params.model_fields)  # every knob is visible in params.yaml
    dumped = params.model_dump(mode="json")

    def seen(written: object, loaded: object) -> object:  # the loaded values of written keys
        if isinstance(written, dict) and isinstance(loaded, dict):
            return {k: seen(v, loaded[k]) for k, v in written.items()}
        return loaded

    assert raw["train"]["epochs"] == "auto"  # resolved per task (tested below)
    raw["train"]["epochs"] = TASK_EPOCHS[raw["task"]]
    for section, values in raw.items():
        assert seen(values, dumped[section]) == values, section


@pytest.mark.parametrize(("task", "epochs"), [("expression", 6), ("attributes", 16)])
def test_auto_epochs_are_the_tasks_budget_and_a_number_overrides_them(
    task: str, epochs: int
) -> None:
    raw = _raw()
    raw["task"] = task
    assert parse_params(raw).train.epochs == epochs
    raw["train"]["epochs"] = 3  # what `dvc exp run -S train.epochs=3` writes
    assert parse_params(raw).train.epochs == 3
    raw["train"]["epochs"] = "many"
    with pytest.raises(ConfigError, match=r"train\.epochs.*auto \(6 on expression.*'many'"):
        parse_params(raw)


def test_a_params_file_without_a_task_trains_the_default_tasks_epochs() -> None:
    """``task`` left out means the default task, for ``auto`` epochs as everywhere else."""
    raw = _raw()
    del raw["task"]
    params = parse_params(raw)
    assert params.task == DEFAULT_TASK
    assert params.train.epochs == TASK_EPOCHS[DEFAULT_TASK] == TrainParams().epochs


@pytest.mark.parametrize("section", sorted(set(Params.model_fields) - {"task", "device"}))
def test_each_section_is_defined_beside_the_code_it_configures(section: str) -> None:
    """``config`` composes; each params model lives in the package that reads it."""
    model = Params.model_fields[section].annotation
    owner = {
        "split": "data",
        "model": "models",
        "train": "training",
        "pretrain": "training",
        "tune": "tuning",
        "registry": "tracking",
    }.get(section, section)
    assert model.__module__ == f"facelens.{owner}.params"


def test_params_yaml_synth_section_is_the_validated_default() -> None:
    """The SynthFACS tests (difficulty guard, calibration) check ``SynthParams()``; the
    pipeline reads params.yaml: both must describe the same generator."""
    from facelens.data.synthfacs.params import SynthParams

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


def test_params_hash_is_stable_and_sensitive() -> None:
    a = Params()
    assert canonical_hash(a) == canonical_hash(Params())
    b = parse_params({"split": {"seed": 1}})
    assert canonical_hash(a) != canonical_hash(b)


def test_registry_names_and_aliases_come_from_params() -> None:
    raw = _raw()
    raw["registry"] = {"model_name": "lab-faces", "champion_alias": "prod"}
    params = parse_params(raw)
    assert params.registered_model_name == "lab-faces"
    assert params.registry.champion_uri("attributes") == "models:/lab-faces@prod"
    assert Params().registry.champion_uri("attributes") == "models:/facelens-attributes@champion"


def test_device_is_checked_but_never_a_stage_param() -> None:
    """Changing the machine re-runs nothing: no stage lists ``device`` as a DVC param."""
    assert parse_params({"device": " CUDA:1 "}).device == "cuda:1"
    with pytest.raises(ConfigError, match=r"device: .*got 'gpu'; allowed: auto, cpu, cuda"):
        parse_params({"device": "gpu"})
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    listed = {
        entry if isinstance(entry, str) else next(iter(entry))
        for stage in dvc["stages"].values()
        for entry in stage.get("params", [])
    }
    assert "device" not in listed and "train" in listed
    with pytest.raises(ConfigError, match=r"train\.precision"):
        parse_params({"train": {"precision": "half"}})


def _readme_paper_overrides() -> list[tuple[str, object]]:
    """The ``-S key=value`` overrides of the README's "The paper's setting" command."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The paper's setting", 1)[1].split("\n## ", 1)[0]
    command = section.split("```bash", 1)[1].split("```", 1)[0]
    pairs = re.findall(r"-S\s+'?([\w.]+)=([^'\s]+)'?", command)
    return [(key, yaml.safe_load(value)) for key, value in pairs]


def test_the_readme_paper_setting_is_valid_params() -> None:
    """The README's one command for arXiv 2404.18352's setting sets keys that exist, to
    values the params models accept (224 px attributes, ImageNet VGG16, 120 epochs)."""
    overrides = _readme_paper_overrides()
    raw = _raw()
    for key, value in overrides:
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, f"README sets {key}, which params.yaml does not have"
        node[leaf] = value
    params = parse_params(raw)
    assert params.task == "attributes" and params.data.source == "attributes_table"
    assert params.model.input_size == params.data.image_size == 224
    assert params.model.weights == "imagenet" and params.model.arch == "vgg16"
    assert params.train.epochs == 120


def test_pretrained_weights_need_a_backbone_for_every_arch_training_may_build() -> None:
    ok = {"model": {"weights": "pretrained"}, "tune": {"space": {"arch": ["vgg16_bn"]}}}
    assert parse_params(ok).pretrain.archs == ["vgg16_bn"]
    bad = {"model": {"weights": "pretrained"}, "tune": {"space": {"arch": ["vgg16", "vgg16_bn"]}}}
    with pytest.raises(ConfigError, match=r"pretrain\.archs \['vgg16_bn'\] lacks \['vgg16'\]"):
        parse_params(bad)
    assert parse_params({**bad, "pretrain": {"archs": ["vgg16", "vgg16_bn"]}})
