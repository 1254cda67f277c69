"""The tune stage's parent run shows the trial fidelity measured for its own study only."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from facelens.tracking.fidelity import FIDELITY_TAG, log_fidelity

PAIRS = [[0.4, 0.90], [0.3, 0.85], [0.5, 0.93], [0.2, 0.52]]


def _record(path: Path, study: str = "facelens-abcd1234") -> Path:
    design = {"study": study, "spearman": 1.0, "ci": [0.62, 1.0], "pairs": PAIRS}
    path.write_text(json.dumps({"measured_by": "python bench --x", "designs": {"2x0.35": design}}))
    return path


def _run() -> str:
    with mlflow.start_run() as run:
        return run.info.run_id


def test_measured_study_gets_metrics_tag_and_figure(sqlite_store, tmp_path) -> None:
    sqlite_store("fidelity-test")
    run_id = _run()
    assert log_fidelity(run_id, "facelens-abcd1234", _record(tmp_path / "f.json")) is None
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["fidelity_spearman"] == 1.0
    assert run.data.metrics["fidelity_ci_low"] == 0.62
    assert run.data.metrics["fidelity_configs"] == 4
    assert run.data.tags[FIDELITY_TAG].startswith("2x0.35 trials vs full training: Spearman 1.00")
    assert "python bench --x" in run.data.tags[FIDELITY_TAG]
    names = {Path(f.path).name for f in MlflowClient().list_artifacts(run_id, "study")}
    assert names == {"fidelity.png"}


def test_other_study_or_bad_record_is_a_named_note(sqlite_store, tmp_path) -> None:
    sqlite_store("fidelity-test")
    run_id = _run()
    note = log_fidelity(run_id, "facelens-ffff0000", _record(tmp_path / "f.json"))
    assert note.startswith("trial fidelity not measured for study facelens-ffff0000")
    assert "2x0.35 (study facelens-abcd1234): Spearman 1.00" in note
    assert MlflowClient().get_run(run_id).data.tags[FIDELITY_TAG] == note
    assert "fidelity_spearman" not in MlflowClient().get_run(run_id).data.metrics
    missing = log_fidelity(run_id, "facelens-abcd1234", tmp_path / "none.json")
    assert missing.startswith(f"no fidelity record at {tmp_path / 'none.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"designs": {"2x0.35": {"study": "s", "spearman": "high"}}}))
    note = log_fidelity(run_id, "s", bad)
    assert note.startswith(f"fidelity record {bad} is unreadable (")
    bad.write_text("{not json")
    assert log_fidelity(run_id, "s", bad).startswith(f"fidelity record {bad} is unreadable (")
