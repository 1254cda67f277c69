"""The tune stage's parent run shows the trial fidelity measured for its own study only."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from facelens.config import load_params
from facelens.tracking.fidelity import FIDELITY_TAG, log_fidelity, read_record

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "tuning_fidelity.py"

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


def test_each_design_shows_the_command_that_measured_it(sqlite_store, tmp_path) -> None:
    sqlite_store("fidelity-test")
    path = tmp_path / "f.json"
    designs = {
        f"{task} 2x0.35": {
            "study": f"facelens-{task}",
            "spearman": 1.0,
            "ci": [0.62, 1.0],
            "pairs": PAIRS,
            "measured_by": f"python bench --task {task}",
        }
        for task in ("expression", "attributes")
    }
    path.write_text(json.dumps({"designs": designs}))
    run_id = _run()
    assert log_fidelity(run_id, "facelens-attributes", path) is None
    tag = MlflowClient().get_run(run_id).data.tags[FIDELITY_TAG]
    assert tag.startswith("attributes 2x0.35 trials vs full training")
    assert tag.endswith("measured by python bench --task attributes")
    designs["expression 2x0.35"]["measured_by"] = 3
    path.write_text(json.dumps({"designs": designs}))
    note = log_fidelity(_run(), "facelens-attributes", path)
    assert "design expression 2x0.35: 'measured_by' must be the command" in note


def _benchmark():
    spec = importlib.util.spec_from_file_location("tuning_fidelity", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pairs(scores: list[tuple[float, float]]) -> list[dict]:
    return [{"trials": {"2x0.35": {"score": t}}, "full": {"score": f}} for t, f in scores]


def test_benchmark_adds_to_the_record_and_replaces_only_its_own_study(
    tmp_path, monkeypatch
) -> None:
    """benchmarks/tuning_fidelity.py --record keeps what other tasks' measurements wrote."""
    bench = _benchmark()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["tuning_fidelity.py", "--configs", "4"])
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "manifest.csv").write_text("id,label\na,1\n")
    expression = load_params(REPO / "params.yaml").model_copy(update={"task": "expression"})
    attributes = expression.model_copy(update={"task": "attributes"})
    path = tmp_path / "record.json"
    rising = _pairs([(0.1, 0.5), (0.2, 0.6), (0.3, 0.7), (0.4, 0.8)])
    bench._record(path, expression, prepared, rising, ["2x0.35"])
    bench._record(path, attributes, prepared, rising, ["2x0.35"])
    falling = _pairs([(0.4, 0.5), (0.3, 0.6), (0.2, 0.7), (0.1, 0.8)])
    bench._record(path, expression, prepared, falling, ["2x0.35"])
    record = read_record(path)
    assert set(record["designs"]) == {"expression 2x0.35", "attributes 2x0.35"}
    expr, attr = record["designs"]["expression 2x0.35"], record["designs"]["attributes 2x0.35"]
    assert expr["spearman"] == pytest.approx(-1.0) and attr["spearman"] == pytest.approx(1.0)
    assert expr["study"] != attr["study"]
    assert expr["measured_by"] == "python benchmarks/tuning_fidelity.py --configs 4"
    path.write_text("{not json")
    with pytest.raises(SystemExit, match=f"--record: fidelity record {path} is unreadable"):
        bench._record(path, expression, prepared, rising, ["2x0.35"])
    assert path.read_text() == "{not json"


def test_committed_record_is_readable() -> None:
    record = read_record(REPO / "reports" / "tuning_fidelity.json")
    assert not isinstance(record, str), record
    assert all(design.get("measured_by") for design in record["designs"].values())
