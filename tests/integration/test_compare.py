"""Tests for facelens.tracking.compare against a temporary MLflow store."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from facelens.tracking.compare.page import build_report_html
from facelens.tracking.compare.refs import resolve_run_ref
from facelens.tracking.compare.report import compare_runs
from facelens.tracking.compare.snapshot import RunSnapshot
from facelens.tracking.compare.thumbs import MAX_REPORT_BYTES, THUMB_SIDE


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Two fake train runs with params, metrics and explain/manifold artifacts, plus a model."""
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp_path
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # as the CLI does; the autouse fixture resets it afterwards
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("train", artifact_location=(tmp_path / "art").as_uri())
    art = tmp_path / "src"
    runs = []
    for i, (lr, acc) in enumerate([(0.001, 0.61), (0.01, 0.72)]):
        run = client.create_run(exp_id, run_name=f"train-{i}")
        rid = run.info.run_id
        client.log_param(rid, "lr", str(lr))
        client.log_param(rid, "batch_size", "32")
        client.log_metric(rid, "val_accuracy", acc - 0.1, step=0)
        client.log_metric(rid, "val_accuracy", acc, step=1)  # latest value wins
        d = art / rid
        (d / "explain").mkdir(parents=True)
        (d / "manifold").mkdir(parents=True)
        (d / "explain" / "cam_probe_000.png").write_bytes(_png((200, i * 50, 0)))
        if i == 1:
            (d / "explain" / "cam_probe_001.png").write_bytes(_png((0, 0, 200)))
        (d / "explain" / "faithfulness.json").write_text(
            json.dumps({"road": {"morf": 0.3 + i / 10}, "pointing_game": 0.5 + i / 10})
        )
        if i == 1:  # today's runs: every method's numbers in the details file beside it
            (d / "explain" / "faithfulness_details.json").write_text(
                json.dumps(
                    {
                        "methods": {"gradcam": {"lift": 2.5}, "guidedgradcam": {"lift": 1.9}},
                        "headline": {"lift": 2.5},
                        "per_image": [{"id": "x", "lift": 3.0}],
                    }
                )
            )
        (d / "explain" / "tensor.npy").write_bytes(b"\x93NUMPY")  # not a report artifact
        (d / "manifold" / "penultimate_umap.png").write_bytes(_png((0, 90 + i, 0)))
        (d / "manifold" / "manifold.html").write_text("<html><body>interactive</body></html>")
        client.log_artifacts(rid, str(d / "explain"), artifact_path="explain")
        client.log_artifacts(rid, str(d / "manifold"), artifact_path="manifold")
        client.set_terminated(rid)
        runs.append(rid)
    client.create_registered_model("facelens-expression")
    mv = client.create_model_version(
        "facelens-expression", source=f"runs:/{runs[1]}/model", run_id=runs[1]
    )
    client.set_registered_model_alias("facelens-expression", "champion", mv.version)
    return {"uri": uri, "runs": runs, "client": client, "tmp": tmp_path}


def test_compare_two_runs_writes_self_contained_report(store: dict[str, object]) -> None:
    r0, r1 = store["runs"]  # type: ignore[misc]
    out = Path(store["tmp"]) / "reports" / "compare.html"  # type: ignore[arg-type]
    assert compare_runs([r0, r1], out) == out
    page = out.read_text()
    # Params: lr differs (highlighted), batch_size equal (not highlighted).
    assert re.search(r"<tr class='diff'><td>lr</td><td>0\.001</td><td>0\.01</td>", page)
    assert re.search(r"<tr><td>batch_size</td><td>32</td><td>32</td>", page)
    assert "1 of 2 differ" in page
    # Latest metric values side by side.
    assert "0.61" in page and "0.72" in page
    assert "0.51" not in page
    # CAM grids matched by name, embedded as data URIs; the missing one is marked.
    assert page.count("<h3>cam_probe_000.png</h3>") == 1
    assert base64.b64encode(_png((200, 0, 0))).decode() in page
    assert base64.b64encode(_png((200, 50, 0))).decode() in page
    assert "<h3>cam_probe_001.png</h3>" in page and "missing" in page
    assert base64.b64encode(_png((0, 91, 0))).decode() in page  # manifold plot of run 2
    # Faithfulness flattened: an older run's file, and the per-method table of a newer run's
    # details (not its per-image rows).
    assert "road.morf" in page and "pointing_game" in page
    assert "methods.guidedgradcam.lift" in page and "per_image" not in page
    assert "tensor.npy" not in page
    assert "<script" not in page  # static, offline page


def test_compare_resolves_model_alias_and_version(store: dict[str, object]) -> None:
    _, r1 = store["runs"]  # type: ignore[misc]
    client = store["client"]
    assert resolve_run_ref("models:/facelens-expression@champion", client=client) == r1
    assert resolve_run_ref("models:/facelens-expression/1", client=client) == r1
    assert resolve_run_ref(f"runs:/{r1}/model", client=client) == r1
    out = Path(store["tmp"]) / "alias.html"  # type: ignore[arg-type]
    compare_runs([store["runs"][0], "models:/facelens-expression@champion"], out)  # type: ignore[index]
    assert "models:/facelens-expression@champion" in out.read_text()


def test_unknown_refs_give_clear_errors(store: dict[str, object]) -> None:
    client = store["client"]
    with pytest.raises(LookupError, match=r"run 'deadbeef' .*not found.*Accepted forms"):
        resolve_run_ref("deadbeef", client=client)
    with pytest.raises(LookupError, match=r"models:/facelens-expression@nope"):
        resolve_run_ref("models:/facelens-expression@nope", client=client)
    with pytest.raises(LookupError, match=r"models:/ghost/3"):
        resolve_run_ref("models:/ghost/3", client=client)
    with pytest.raises(ValueError, match="accepted"):
        resolve_run_ref("models:/facelens-expression/latest", client=client)
    with pytest.raises(ValueError, match="unrecognised run reference"):
        resolve_run_ref("not a run id!", client=client)
    with pytest.raises(ValueError, match="empty"):
        compare_runs([], Path(store["tmp"]) / "x.html")  # type: ignore[arg-type]


def test_log_to_run_creates_tagged_comparison_run(store: dict[str, object]) -> None:
    r0, r1 = store["runs"]  # type: ignore[misc]
    out = Path(store["tmp"]) / "c.html"  # type: ignore[arg-type]
    compare_runs([r0, r1], out, tracking_uri=str(store["uri"]), log_to_run=True)
    client: MlflowClient = store["client"]  # type: ignore[assignment]
    exp = client.get_experiment_by_name("facelens-compare")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["facelens.compared_runs"] == f"{r0},{r1}"
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "compare")] == ["compare/c.html"]


def test_build_report_html_is_pure_and_escapes() -> None:
    runs = [
        RunSnapshot(ref="a", run_id="a" * 32, params={"x": "<b>1</b>"}, metrics={"m": 0.5}),
        RunSnapshot(ref="b", run_id="b" * 32, params={"x": "<b>1</b>"}, metrics={"m": 0.25}),
    ]
    page = build_report_html(runs, embed_interactive=True)
    assert "<b>1</b>" not in page and "&lt;b&gt;1&lt;/b&gt;" in page
    assert "0 of 1 differ" in page
    assert re.search(r"<tr class='diff'><td>m</td><td class='num'>0.5</td>", page)
    with pytest.raises(ValueError, match="empty"):
        build_report_html([])


def _noise_png(seed: int, size: tuple[int, int]) -> bytes:
    """Incompressible pixels: the worst case for a report's byte budget."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def test_report_of_two_runs_with_many_large_figures_stays_under_3_mb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("train", artifact_location=(tmp_path / "art").as_uri())
    runs, raw = [], 0
    for i in range(2):
        rid = client.create_run(exp_id, run_name=f"big-{i}").info.run_id
        for folder, n in (("explain", 6), ("manifold", 2)):
            d = tmp_path / "src" / rid / folder
            d.mkdir(parents=True)
            for k in range(n):
                data = _noise_png(100 * i + k, (900, 700))
                raw += len(data)
                (d / f"fig_{k}.png").write_bytes(data)
            client.log_artifacts(rid, str(d), artifact_path=folder)
        client.set_terminated(rid)
        runs.append(rid)
    assert raw > 4 * MAX_REPORT_BYTES  # embedding every figure as is would not fit
    out = tmp_path / "big.html"
    compare_runs(runs, out, tracking_uri=uri, mlflow_ui="http://127.0.0.1:5000/")
    page = out.read_text()
    assert out.stat().st_size < MAX_REPORT_BYTES
    uris = re.findall(r"src='data:(image/[a-z]+);base64,([^']+)'", page)
    assert len(uris) == 16  # every figure of both runs, as a thumbnail
    for mime, b64 in uris:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert mime == "image/jpeg" and 48 <= max(im.size) <= THUMB_SIDE
    # The full-size figures stay in the runs: named, and linked to the UI's artifact route.
    assert f"runs:/{runs[1]}/explain/fig_5.png</code> (900x700, thumbnail)" in page
    assert (
        f"href='http://127.0.0.1:5000/get-artifact?path=explain%2Ffig_0.png&amp;run_uuid={runs[0]}'"
        in page
    )
