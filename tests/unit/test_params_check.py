"""``facelens params check`` (and the MLflow Project launcher, and ``make repro``, which run it
first): every params error is one line naming the key and what is allowed, before any stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from facelens.cli.app import app
from facelens.cli.mlproject import main as mlproject_main

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _check(path: Path):
    return CliRunner().invoke(app, ["params", "check", "--params", str(path)])


def _set(section: str, key: str, value: object):
    def edit(raw: dict) -> None:
        node = raw
        for part in section.split("."):
            node = node[part]
        node[key] = value

    return edit


def test_the_repository_params_pass(tmp_path: Path) -> None:
    result = _check(REPO / "params.yaml")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("params.yaml: ok")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # unknown key
        (_set("train", "learning_rate", 0.1), r"train\.learning_rate: Extra inputs"),
        # wrong type
        (_set("train", "batch_size", "ten"), r"train\.batch_size: Input should be a valid integer"),
        # a word where a number or auto is allowed: the allowed forms
        (_set("train", "epochs", "ten"), r"train\.epochs: expected a whole number .* or auto \("),
        # out of range
        (_set("train", "dropout", 1.5), r"train\.dropout: Input should be less than 1"),
        (_set("split", "val_fraction", -0.1), r"split\.val_fraction: .*greater than or equal"),
        # a missing data path (and table)
        (
            lambda raw: raw["data"].update(source="imagefolder", path="no/such/folder"),
            r"data\.path: 'no/such/folder' does not exist \(source 'imagefolder'",
        ),
        (
            lambda raw: raw["data"].update(
                source="attributes_table", path=".", table="ratings.xlsx"
            ),
            r"data\.table: 'ratings\.xlsx' does not exist",
        ),
        # a search space that cannot be sampled: loading refuses some ...
        (
            _set("tune.space", "lr", {"low": 0.01, "high": 0.001}),
            r"tune\.space\.lr.*low must be < high",
        ),
        (_set("tune.space", "optimizer", []), r"tune\.space\.optimizer.*must not be empty"),
        # ... the recipe a trial builds refuses the others
        (
            _set("tune.space", "optimizer", ["adamw", "adam"]),
            r"tune\.space\.optimizer: 'adam' cannot be sampled \(Input should be 'adamw', "
            r"'sgd' or 'rmsprop'\)",
        ),
        (
            _set("tune.space", "dropout", {"low": 0.0, "high": 1.5}),
            r"tune\.space\.dropout: 1\.5 cannot be sampled \(Input should be less than 1\)",
        ),
        (
            _set("tune.space", "trainable_blocks", [3, 7]),
            r"tune\.space\.trainable_blocks: 7 cannot be sampled",
        ),
        (
            _set("tune.space", "batch_size", [1]),
            r"tune\.space\.batch_size: 1 cannot be sampled \(Input should be greater than or "
            r"equal to 2\)",
        ),
        (_set("tune.space", "arch", ["vgg19"]), r"tune\.space\.arch: 'vgg19' cannot be sampled"),
    ],
)
def test_a_bad_params_file_is_one_line_naming_the_key(tmp_path: Path, edit, expected) -> None:
    path = _write(tmp_path, edit)
    result = _check(path)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(path) in lines[0]
    assert re.search(expected, lines[0]), lines[0]


def test_every_problem_is_named_in_the_one_line(tmp_path: Path) -> None:
    def edit(raw: dict) -> None:
        raw["data"].update(source="fer2013_csv", path="fer2013.csv")
        raw["tune"]["space"]["head"] = ["pooled", "dense"]

    result = _check(_write(tmp_path, edit))
    line = result.output.strip()
    assert result.exit_code == 1 and "\n" not in line
    assert "data.path: 'fer2013.csv'" in line and "tune.space.head: 'dense'" in line


def test_a_relative_data_path_is_found_beside_the_params_file(tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    path = _write(tmp_path, lambda raw: raw["data"].update(source="imagefolder", path="faces"))
    assert _check(path).exit_code == 0


def test_the_mlflow_project_launcher_checks_before_dvc(monkeypatch, capsys) -> None:
    import facelens.cli.mlproject as mod

    def refuse(*args, **kwargs):
        raise AssertionError(f"DVC must not start: {args}")

    monkeypatch.setattr(mod.subprocess, "run", refuse)
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert mlproject_main(["train", "--tune.space.optimizer", "[adamw, adam]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tune.space.optimizer: 'adam' cannot be sampled" in err[0]


def test_make_repro_checks_the_params_before_dvc() -> None:
    """``make repro`` runs ``facelens params check`` first; make stops at its exit code 1."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^repro:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe is not None
    lines = [line.strip() for line in recipe.group(1).splitlines()]
    assert lines == ["$(BIN)/facelens params check", "$(BIN)/dvc repro"]
