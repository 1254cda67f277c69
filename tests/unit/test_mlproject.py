"""The MLproject file and its launcher's pure parts: entry points, -P overrides, the DVC command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facelens.cli.mlproject import (
    PIPELINE_ENTRY,
    apply_overrides,
    dvc_command,
    experiment_name,
    main,
    parse_overrides,
)
from facelens.config import parse_params
from facelens.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_mlproject_has_the_pipeline_and_every_dvc_stage() -> None:
    project = yaml.safe_load((REPO / "MLproject").read_text())
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    entries = project["entry_points"]
    assert list(entries) == [PIPELINE_ENTRY, *stages]
    for name, entry in entries.items():
        # No declared parameters: MLflow passes every -P on as `--key value`.
        assert "parameters" not in entry, name
        assert entry["command"] == f"python -m facelens.cli.mlproject {name}"
    assert not {"conda_env", "python_env", "docker_env"} & set(project)


def test_parse_overrides() -> None:
    tokens = ["--train.epochs", "3", "--tune.space.epochs=[1, 2]", "--data.path", "null"]
    assert parse_overrides(tokens) == [
        ("train.epochs", "3"),
        ("tune.space.epochs", "[1, 2]"),
        ("data.path", "null"),
    ]
    assert parse_overrides([]) == []


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (["train.epochs", "3"], "expected --section.key"),
        (["--train.epochs"], "no value"),
        (["--", "3"], "expected --section.key"),
        (["--train.lr", "1", "--train.lr", "2"], "given twice"),
    ],
)
def test_parse_overrides_refuses(tokens, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_overrides(tokens)


def test_apply_overrides_reads_yaml_values_and_keeps_the_original() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    out = apply_overrides(
        raw, [("train.epochs", "3"), ("tune.space.epochs", "[1, 2]"), ("data.path", "null")]
    )
    assert out["train"]["epochs"] == 3 and out["tune"]["space"]["epochs"] == [1, 2]
    assert out["data"]["path"] is None
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == raw
    params = parse_params(out)
    assert params.train.epochs == 3


def test_apply_overrides_refuses_a_key_inside_a_value() -> None:
    with pytest.raises(ConfigError, match=r"'task.name'.*task is a value"):
        apply_overrides({"task": "expression"}, [("task.name", "x")])


def test_a_typo_fails_validation_with_the_key() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="epoch"):
        parse_params(apply_overrides(raw, [("train.epoch", "3")]), "params.yaml with -P")


def test_dvc_command() -> None:
    overrides = [("train.epochs", "3"), ("tune.n_trials", "2")]
    assert dvc_command("dvc", "train", overrides, "mlflow-abc") == [
        "dvc",
        "exp",
        "run",
        "-n",
        "mlflow-abc",
        "-S",
        "train.epochs=3",
        "-S",
        "tune.n_trials=2",
        "train",
    ]
    assert dvc_command("dvc", PIPELINE_ENTRY, [], None) == ["dvc", "exp", "run"]


def test_experiment_name() -> None:
    assert experiment_name("0123456789abcdef0123") == "mlflow-0123456789ab"
    assert experiment_name(None) is None


@pytest.fixture
def no_dvc(monkeypatch):
    """In the repository, without a launcher run, and with DVC never started."""
    import facelens.cli.mlproject as mod

    def refuse(*args, **kwargs):
        raise AssertionError(f"DVC must not start: {args}")

    monkeypatch.setattr(mod.subprocess, "run", refuse)
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def test_main_refuses_an_unknown_entry_point(no_dvc, capsys) -> None:
    assert main(["trian"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'trian'" in err[0] and "train" in err[0]


def test_main_refuses_a_bad_override_before_running_anything(no_dvc, capsys) -> None:
    assert main(["train", "--train.epochs", "many"]) == 1
    err = capsys.readouterr().err
    assert "train.epochs" in err


def test_main_usage(capsys) -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "mlflow run" in capsys.readouterr().out
