"""Editing a file makes DVC re-run exactly the stages that run it, and their descendants.

On a copy of the project, every stage's outputs are placeholders recorded with
``dvc commit -f`` (nothing runs), so ``dvc status`` starts clean. Then one file at a time
is edited: ``dvc status`` must report exactly the stages whose dependencies (their import
closures, ``tests/unit/test_dvc_deps.py``) hold the file, and ``dvc repro --dry
--force-downstream`` must plan those stages and everything downstream of them (a re-run
stage writes new outputs, which re-runs its descendants).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DVC = Path(sys.executable).parent / "dvc"


def _dvc(proj: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [str(DVC), *args], cwd=proj, env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _outputs(stage: dict) -> list[str]:
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            paths.append(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, dvc_project) -> tuple[Path, dict]:
    proj = dvc_project(tmp_path_factory.mktemp("status") / "proj")
    stages = yaml.safe_load((proj / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for out in _outputs(stage):
            path = proj / out
            if path.suffix in (".json", ".csv"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}\n" if path.suffix == ".json" else "a\n1\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder.txt").write_text("x")
    _dvc(proj, "commit", "-f", "-q")
    assert json.loads(_dvc(proj, "status", "--json")) == {}
    return proj, stages


def _descendants(stages: dict, names: set[str]) -> set[str]:
    produced = {out: n for n, s in stages.items() for out in _outputs(s)}
    found = set(names)
    changed = True
    while changed:
        changed = False
        for name, stage in stages.items():
            upstream = {produced.get(d) for d in stage.get("deps", [])}
            if name not in found and upstream & found:
                found.add(name)
                changed = True
    return found


def _cases() -> list[str]:
    """Per stage, the file of its closure shared by the fewest stages; plus the file every
    stage runs and one no stage runs."""
    repo = Path(__file__).resolve().parents[2]
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    users: dict[str, set[str]] = {}
    for name, stage in stages.items():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                users.setdefault(dep, set()).add(name)
    picks = {
        min((f for f, u in users.items() if name in u), key=lambda f: (len(users[f]), f))
        for name in stages
    }
    return sorted(picks | {"src/facelens/config.py", "src/facelens/cli/app.py"})


@pytest.mark.parametrize("edited", _cases())
def test_editing_a_file_reruns_the_stages_that_run_it(project, edited: str) -> None:
    proj, stages = project
    users = {n for n, s in stages.items() if edited in s.get("deps", [])}
    path = proj / edited
    original = path.read_bytes()
    path.write_bytes(original + b"\n# edited\n")
    try:
        status = json.loads(_dvc(proj, "status", "--json"))
        planned = {
            line.split("'")[1]
            for line in _dvc(proj, "repro", "--dry", "--force-downstream").splitlines()
            if line.startswith("Running stage")
        }
    finally:
        path.write_bytes(original)
    assert set(status) == users
    assert planned == _descendants(stages, users)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("tune", "n_trials", 7, {"tune"}),
        ("train", "lr", 0.002, {"tune", "train"}),
        ("pretrain", "epochs", 9, {"pretrain"}),
    ],
)
def test_tuning_experiments_never_rebuild_the_pretrained_backbone(
    project, section: str, key: str, value: object, expected: set[str]
) -> None:
    """``dvc exp run -S tune.n_trials=...`` (or a recipe change) re-runs tuning, not
    ``pretrain``, whose only params are its own section."""
    proj, _ = project
    path = proj / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(_dvc(proj, "status", "--json"))
    finally:
        path.write_text(original)
    assert set(status) == expected
