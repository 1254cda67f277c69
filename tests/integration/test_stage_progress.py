"""The tune stage as ``dvc repro`` runs it with its output sent to files: per-trial and
per-epoch progress lines on stderr (no carriage return), one summary line last on stdout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facelens.data.params import DataParams, SplitParams
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.data.synthfacs.params import SynthParams

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_splits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("progress")
    prepared, splits = root / "prepared", root / "splits"
    prepare_dataset(DataParams(image_size=32, synth=SynthParams(n_identities=8)), prepared)
    split_prepared(prepared, splits, SplitParams(val_fraction=0.2, test_fraction=0.2))
    return prepared, splits


def _tune(tmp_path: Path, tiny_splits: tuple[Path, Path], pipeline_params, **env: str):
    tmp_path.mkdir(exist_ok=True)
    params = pipeline_params()
    params["tune"].update({"n_trials": 2, "storage": f"sqlite:///{tmp_path}/optuna.db"})
    params["tune"]["space"]["epochs"] = [3]
    params["tracking"]["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    prepared, splits = tiny_splits
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    cmd = [
        sys.executable, str(REPO / "pipelines" / "tune.py"), "--params", "params.yaml",
        "--prepared", str(prepared), "--splits", str(splits),
        "--best-params", "best.json", "--reports", "reports", "--cache", "cache",
    ]  # fmt: skip
    environ = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "PYTHONPATH": str(REPO / "src"),
        **env,
    }
    with out.open("w") as o, err.open("w") as e:
        code = subprocess.run(cmd, cwd=tmp_path, stdout=o, stderr=e, env=environ).returncode
    assert code == 0, err.read_text()[-3000:]
    return out.read_text(), err.read_text()


@pytest.mark.slow
def test_tune_stage_logs_trials_and_epochs_without_carriage_returns(
    tmp_path: Path, tiny_splits, pipeline_params
) -> None:
    out, err = _tune(tmp_path, tiny_splits, pipeline_params, FACELENS_PROGRESS_EVERY="0")
    assert "\r" not in err and "\r" not in out
    lines = err.splitlines()
    # every epoch of both trials, inside the trial it belongs to, with its validation metric
    epochs = [x for x in lines if re.search(r"\| epochs (\d)/3 \(val macro-F1 [\d.]+", x)]
    heads = {x.split(" | ")[0] for x in epochs}
    assert "tune: trials 0/2" in heads
    assert any(re.fullmatch(r"tune: trials 1/2 \(best [\d.]+\)", h) for h in heads), heads
    assert {re.search(r"epochs (\d)/3", x)[1] for x in epochs} == {"1", "2", "3"}
    assert all(re.search(r"elapsed(, ETA \S+)?$", x) for x in epochs)
    assert any("| batches " in x for x in lines)
    ended = [x for x in lines if re.match(r"tune: trial \d COMPLETE [\d.]+ \(\d/2 finished", x)]
    assert len(ended) == 2 and "best " in ended[-1]
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"tune: study facelens-\w+: 2 trials \(2 complete, 0 pruned, 0 failed\), best val "
        r"macro-F1 [\d.]+ with lr=[\d.e-]+, .* in [\dhms.]+",
        last,
    ), last


@pytest.mark.slow
def test_plain_update_lines_are_throttled_and_events_are_not(
    tmp_path: Path, tiny_splits, pipeline_params
) -> None:
    _, err = _tune(tmp_path, tiny_splits, pipeline_params, FACELENS_PROGRESS_EVERY="600")
    updates = [x for x in err.splitlines() if " | " in x]
    assert len(updates) == 1  # the first one; the next would be due in 10 minutes
    assert len([x for x in err.splitlines() if " COMPLETE " in x]) == 2  # events always print
