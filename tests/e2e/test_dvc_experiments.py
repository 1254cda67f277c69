"""DVC experiments carry their results: two tiny experiments of the real pipeline, compared
and restored with DVC's own commands.

A copy of the project (a git repository) runs ``dvc exp run`` twice with different params.
Both experiments' headline metrics must be in ``dvc exp show --json``, ``dvc metrics diff``
between them must show the change, ``dvc plots diff`` must draw both experiments' training
curves, ``dvc metrics show`` (of both tasks) and ``dvc exp show --only-changed`` must fit a
120-column terminal, and ``dvc exp apply`` must bring one experiment's metrics, plot tables
and cached reports back into the workspace; a forced re-run of ``pretrain`` must leave
every later stage up to date.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

BIN = Path(sys.executable).parent


def _dvc(proj: Path, *args: str) -> str:
    env = dict(os.environ)
    env["COLUMNS"] = "120"  # a 120-column terminal for the tables
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in the stage commands
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{proj / 'mlflow.db'}"
    env["TQDM_DISABLE"] = "1"
    out = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=proj, env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, f"dvc {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _experiments(shown: list[dict]) -> dict[str, dict]:
    """Experiment name -> its workspace data (metrics files) in ``dvc exp show --json``."""
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name"):
                    found[rev["name"]] = rev["data"]
    return found


def _fits(text: str, width: int = 120) -> None:
    widest = max(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines(), key=len)
    assert len(widest) <= width, f"{len(widest)} columns:\n{text}"


def _plot_series(proj: Path, *revs: str) -> dict[str, list[dict]]:
    """``dvc plots diff revs --json``: plot id -> its vega rows (each with ``rev``)."""
    shown = json.loads(_dvc(proj, "plots", "diff", *revs, "--json"))
    out: dict[str, list[dict]] = {}
    for plot_id, renders in shown["data"].items():
        for render in renders:
            values = render.get("content", {}).get("data", {}).get("values", [])
            out.setdefault(plot_id, []).extend(values)
    return out


def test_experiments_carry_metrics_and_plots(tmp_path: Path, dvc_project, pipeline_params):
    params = pipeline_params()
    params["explain"]["road"] = True  # every headline metric, as in the default params
    proj = dvc_project(tmp_path / "proj", params, git=True)
    _dvc(proj, "exp", "run", "-n", "base")
    _dvc(proj, "exp", "run", "-n", "longer", "-S", "train.epochs=2")

    # Readable in a 120-column terminal: headline metrics only, details elsewhere.
    shown = _dvc(proj, "metrics", "show")
    _fits(shown)
    for column in ("accuracy", "macro_f1", "lift", "sanity_rho", "road", "trust"):
        assert column in shown, shown
    assert "per_class_f1" not in shown
    # `--only-changed` still lists every dependency whose hash changed (the models, and here
    # every file, since the baseline commit has no dvc.lock): the README's command drops the
    # path columns and the timestamp.
    changed = _dvc(proj, "exp", "show", "--only-changed", "--drop", ".*/|Created")
    _fits(changed)
    for column in ("base", "longer", "macro_f1", "lift", "sanity_rho", "road", "train.epochs"):
        assert column in changed, changed

    # Training curves: `dvc plots diff` draws both experiments' epochs.
    series = _plot_series(proj, "base", "longer")
    assert {"Training loss", "Validation metric", "Learning rate"} <= set(series), set(series)
    for plot_id in ("Training loss", "Validation metric", "Learning rate"):
        revs = {row["rev"] for row in series[plot_id]}
        assert revs == {"base", "longer"}, (plot_id, revs)
    losses = {row["field"] for row in series["Training loss"]}
    assert losses == {"train_loss", "val_loss"}
    epochs = {
        rev: sorted({int(r["epoch"]) for r in series["Training loss"] if r["rev"] == rev})
        for rev in ("base", "longer")
    }
    assert epochs == {"base": [1], "longer": [1, 2]}
    page = tmp_path / "plots"
    _dvc(proj, "plots", "diff", "base", "longer", "-o", str(page))
    html = (page / "index.html").read_text()
    assert "train_loss" in html and '"rev": "base"' in html and '"rev": "longer"' in html

    exps = _experiments(json.loads(_dvc(proj, "exp", "show", "--json")))
    assert {"base", "longer"} <= set(exps)
    metrics = {}
    for name in ("base", "longer"):
        files = exps[name]["metrics"]
        assert "error" not in files["reports/metrics.json"], files["reports/metrics.json"]
        metrics[name] = files["reports/metrics.json"]["data"]
        assert 0.0 <= metrics[name]["macro_f1"] <= 1.0
        for other in ("reports/explain/faithfulness.json", "reports/manifold/metrics.json"):
            assert "error" not in files[other] and files[other]["data"], other
        assert exps[name]["params"]["params.yaml"]["data"]["train"]["epochs"] == (
            1 if name == "base" else 2
        )

    diff = json.loads(_dvc(proj, "metrics", "diff", "base", "longer", "--all", "--json"))
    assert diff["reports/metrics.json"]["macro_f1"]["old"] == metrics["base"]["macro_f1"]
    assert diff["reports/metrics.json"]["macro_f1"]["new"] == metrics["longer"]["macro_f1"]
    changed = [
        (path, key)
        for path, values in diff.items()
        for key, d in values.items()
        if d.get("old") != d.get("new")
    ]
    assert changed, "two differently trained models gave identical metrics everywhere"

    _dvc(proj, "exp", "apply", "base")
    workspace = json.loads((proj / "reports" / "metrics.json").read_text())
    assert workspace["macro_f1"] == metrics["base"]["macro_f1"]
    assert (proj / "reports" / "plots" / "confusion.csv").is_file()
    figures = proj / "reports" / "explain" / "figures"
    assert figures.is_dir() and any(figures.glob("cam_grid_*.png"))  # restored from the cache
    assert json.loads(_dvc(proj, "status", "--json")) == {}
    # A forced re-run of `pretrain` writes the same weights and the same meta.json (no MLflow
    # run id in it), so its output keeps its hash and nothing downstream becomes stale.
    pretrained = (proj / "models" / "pretrained" / "meta.json").read_bytes()
    _dvc(proj, "repro", "--force", "--single-item", "pretrain")
    assert (proj / "models" / "pretrained" / "meta.json").read_bytes() == pretrained
    assert json.loads(_dvc(proj, "status", "--json")) == {}

    # Each stage that logs into the train run says where it ran (device auto: the CPU here).
    from mlflow import MlflowClient

    run_id = json.loads((proj / "models" / "run.json").read_text())["run_id"]
    tags = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}").get_run(run_id).data.tags
    assert tags["facelens.device"] == "cpu"
    for stage in ("evaluate", "explain", "manifold"):
        assert tags[f"facelens.{stage}.device"] == "cpu", stage

    # The attributes task (same data, one param changed) is readable too, with its
    # per-attribute r plot. Last: `exp apply` of an expression experiment would keep its
    # per_attribute_r.csv, untracked in the expression experiments' commits.
    _dvc(proj, "exp", "run", "-n", "attrs", "-S", "task=attributes")
    shown = _dvc(proj, "metrics", "show")
    _fits(shown)
    assert "mean_pearson" in shown and "sanity_rho" in shown and "per_attribute" not in shown
    attrs = _plot_series(proj, "attrs")
    assert {row["attribute"] for row in attrs["reports/plots/per_attribute_r.csv"]} >= {
        "trustworthy",
        "happy",
    }
