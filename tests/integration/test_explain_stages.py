"""The ``explain`` and ``manifold`` stage cores on a tiny SynthFACS set and a random VGG16-BN.

Everything runs offline on 32 px images: the data is generated, the model is a random
``build_model(..., weights="none")`` export, MLflow tracks to a private sqlite store.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from facelens._io import flatten_metrics
from facelens.config import Params
from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.data.manifest import data_version as data_version_of
from facelens.data.params import DataParams, SplitParams
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.data.split_csv import load_splits
from facelens.data.synthfacs.params import SynthParams
from facelens.explain.cams.methods import METHODS, method_slug
from facelens.explain.params import CamMethod, ExplainParams
from facelens.explain.report import (
    explain_probes,
    faithfulness_metrics,
    randomized_layers,
    select_probes,
)
from facelens.manifold.features import compact_metrics as manifold_metrics
from facelens.manifold.features import manifold_features
from facelens.manifold.params import ManifoldParams
from facelens.manifold.quality import knn_accuracy
from facelens.models.build import build_model
from facelens.models.export import export_model, load_exported
from facelens.models.meta import ModelMeta
from facelens.models.params import ModelParams
from facelens.stages.explain import run as explain_stage
from facelens.stages.manifold import run as manifold_stage
from facelens.tracking.runs import configure, tracked_run

SIZE = 32


@dataclass(frozen=True)
class Tiny:
    prepared: Path
    splits: Path
    model: Path
    other_model: Path
    attr_model: Path


def _export(out: Path, task: str, names: tuple[str, ...], seed: int, rows: pd.DataFrame) -> Path:
    model, source = build_model(
        ModelParams(input_size=SIZE, weights="none"), num_outputs=len(names), seed=seed
    )
    stats = None
    if task == "attributes":
        values = rows[[f"attr_{a}" for a in names]].to_numpy(dtype=float)
        stats = (tuple(values.mean(axis=0)), tuple(values.std(axis=0) + 1e-3))
    meta = ModelMeta.for_model(
        model,
        task=task,
        output_names=names,
        input_size=SIZE,
        weights_source=source,
        norm=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        target_stats=stats,
    )
    export_model(model.eval(), meta, out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny_explain")
    prepared, splits = root / "prepared", root / "splits"
    prepare_dataset(DataParams(image_size=SIZE, synth=SynthParams(n_identities=8)), prepared)
    split_prepared(prepared, splits, SplitParams(val_fraction=0.2, test_fraction=0.4))
    (train,) = load_splits(prepared, splits, ("train",))
    return Tiny(
        prepared=prepared,
        splits=splits,
        model=_export(root / "model", "expression", tuple(EXPRESSIONS), 1, train),
        other_model=_export(root / "model2", "expression", tuple(EXPRESSIONS), 2, train),
        attr_model=_export(root / "attr_model", "attributes", tuple(ATTRIBUTES), 3, train),
    )


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    configure(None, "facelens", artifact_location=str(tmp_path / "artifacts"))
    return uri


def _train_run() -> str:
    with tracked_run("train expression", tags={"facelens.stage": "train"}) as run:
        mlflow.log_metric("best_val_metric", 0.5)
    return run.info.run_id


def _artifacts(run_id: str, path: str) -> set[str]:
    return {a.path for a in MlflowClient().list_artifacts(run_id, path)}


def _image_keys(run_id: str) -> dict[str, list[int]]:
    """MLflow image key -> steps, from the files ``mlflow.log_image(key=...)`` writes
    (``images/<key with / as ~>+step+<step>+timestamp+...png``; the client has no reader)."""
    keys: dict[str, list[int]] = {}
    for path in _artifacts(run_id, "images"):
        name = path.removeprefix("images/")
        if name.endswith(".png") and "+step+" in name:
            key, rest = name.split("+step+", 1)
            keys.setdefault(key.replace("~", "/"), []).append(int(rest.split("+", 1)[0]))
    return keys


def _params(**explain: object) -> Params:
    base = {
        "methods": ("gradcam", "eigencam"),  # ScoreCAM (slow) runs in the slow script test
        "per_class": 1,
        "scorecam_images": 1,
        "target": "true",
        "removal_fractions": (0.5,),
    }
    return Params(explain=ExplainParams(**{**base, **explain}))


# ------------------------------------------------------------------------------ contracts


def test_params_cam_methods_match_the_library() -> None:
    assert set(get_args(CamMethod)) == set(METHODS)


@pytest.mark.parametrize(
    ("layer", "randomize", "expected"),
    [
        ("block5", ("auto",), ["classifier", "blocks.4"]),
        ("block4", ("auto",), ["classifier", "blocks.4", "blocks.3"]),
        ("block5", ("head",), ["classifier"]),
        ("block5", ("head", "block5", "block4"), ["classifier", "blocks.4", "blocks.3"]),
    ],
)
def test_randomized_layers(layer: str, randomize: tuple[str, ...], expected: list[str]) -> None:
    params = ExplainParams(layer=layer, randomize=randomize)
    assert randomized_layers(params) == expected


def test_randomized_layers_need_a_resolved_layer() -> None:
    with pytest.raises(ValueError, match="resolve layer 'auto'"):
        randomized_layers(ExplainParams(layer="auto"))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"target": "smiling"}, "target"),
        ({"attributes": ("trusty",)}, "attributes"),
        ({"randomize": ("auto", "head")}, "randomize"),
        ({"removal_fractions": (0.5, 1.0)}, "removal_fractions"),
        ({"methods": ("gradcam", "gradcam")}, "methods"),
        ({"methods": ("gradcam", "smoothgrad")}, "methods"),
    ],
)
def test_explain_params_reject_bad_values_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        ExplainParams(**kwargs)


def test_metric_keys_are_mlflow_safe() -> None:
    assert method_slug("gradcam++") == "gradcampp"
    doc = {"sanity": {"gradcam++": {"spearman_mean": 0.5}}, "a(b)": 1}
    assert flatten_metrics(doc, "explain", sep=".") == {
        "explain.sanity.gradcampp.spearman_mean": 0.5,
        "explain.a_b_": 1.0,
    }


def test_probe_set_is_stable_under_row_order(tiny: Tiny) -> None:
    (test,) = load_splits(tiny.prepared, tiny.splits, ("test",))
    params = ExplainParams(per_class=2)
    a = select_probes(test, "expression", params)
    b = select_probes(test.sample(frac=1.0, random_state=3), "expression", params)
    assert a["id"].tolist() == b["id"].tolist()
    assert a.groupby("label").size().max() <= 2
    assert set(a["label"]) == set(test["label"])
    other = select_probes(test, "expression", params.model_copy(update={"seed": 1}))
    assert other["id"].tolist() != a["id"].tolist()


# ------------------------------------------------------------------------------- explain


def test_explain_stage_writes_reports_and_logs_them_to_the_train_run(
    tiny: Tiny, store: str, tmp_path: Path
) -> None:
    run_id = _train_run()
    figures, maps, metrics = tmp_path / "figures", tmp_path / "maps", tmp_path / "f.json"
    summary = explain_stage(
        _params(),
        tiny.prepared,
        tiny.splits,
        tiny.model,
        run_id,
        figures_dir=figures,
        maps_dir=maps,
        metrics_path=metrics,
    )
    (test,) = load_splits(tiny.prepared, tiny.splits, ("test",))
    classes = sorted({int(v) for v in test["label"]})
    n_probes = len(classes)

    # Files: one grid and sanity figure per method, one grid per class, raw maps per method.
    written = {p.name for p in figures.iterdir()}
    for method in ("gradcam", "eigencam"):
        assert {f"cam_grid_{method}.png", f"sanity_{method}.png"} <= written
    assert {f"class_{EXPRESSIONS[c]}.png" for c in classes} <= written
    assert sum(n.startswith("method_grid_") for n in written) == n_probes
    cams = np.load(maps / "cams_gradcam.npz")
    assert cams["cams"].shape == (n_probes, SIZE, SIZE)
    assert float(cams["cams"].min()) >= 0.0 and float(cams["cams"].max()) <= 1.0
    assert sorted(cams["ids"].tolist()) == sorted(summary["meta"]["probe_ids"])
    assert [EXPRESSIONS.index(n) for n in cams["target_name"]] == cams["target_index"].tolist()

    # faithfulness_details.json: what the stage returned, strict JSON, every check present;
    # faithfulness.json: the headline method's numbers only, for `dvc metrics`; every method's
    # in the details' `methods` table.
    assert json.loads((tmp_path / "f_details.json").read_text()) == summary
    compact = json.loads(metrics.read_text())
    assert compact == faithfulness_metrics(summary)
    assert set(compact) == {"lift", "sanity_rho", "road"}
    assert compact["sanity_rho"] == pytest.approx(summary["sanity"]["gradcam"]["spearman_mean"])
    assert compact["lift"] == pytest.approx(summary["localization"]["gradcam"]["mean_lift"])
    assert set(summary["methods"]) == set(summary["sanity"])
    assert summary["methods"]["eigencam"]["sanity_spearman"] == pytest.approx(
        summary["sanity"]["eigencam"]["spearman_mean"]
    )
    # layer auto at 32 px: block 5's maps would be 2x2, so block 4 (and up) is explained
    assert summary["meta"]["layer"] == "block4"
    assert summary["meta"]["randomized_layers"] == ["classifier", "blocks.4", "blocks.3"]
    assert summary["meta"]["data_version"] == data_version_of(tiny.prepared)
    loc = summary["localization"]["gradcam"]
    # neutral has no defining regions; a random model's map may also be empty (skipped)
    n_scored = sum(1 for c in classes if EXPRESSIONS[c] != "neutral")
    assert 1 <= loc["n_images"] <= n_scored
    assert loc["n_images"] + loc["n_skipped"] == n_probes
    assert "neutral" not in loc["per_class"]
    assert math.isfinite(loc["mean_lift"]) and loc["mean_lift"] > 0
    sanity = summary["sanity"]["gradcam"]
    assert sanity["n_images"] == n_probes
    per_image = [r for r in sanity["spearman_per_image"] if r is not None]
    assert sanity["spearman_mean"] == pytest.approx(float(np.mean(per_image)))
    assert sanity["passed"] == (sanity["spearman_mean"] <= _params().explain.sanity_threshold)
    deletion = summary["deletion"]["eigencam"]
    assert {"road_morf_50", "road_lerf_50", "road_combined", "confidence_drop"} <= set(deletion)
    assert summary["headline"]["method"] == "gradcam"
    assert summary["headline"]["sanity_spearman"] == pytest.approx(sanity["spearman_mean"])

    # MLflow: the train run holds the files under explain/ and the numbers as metrics.
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    got = run.data.metrics
    assert got["explain.sanity.gradcam.spearman_mean"] == pytest.approx(sanity["spearman_mean"])
    assert got["explain.localization.gradcam.mean_lift"] == pytest.approx(loc["mean_lift"])
    assert got["best_val_metric"] == 0.5  # the train run's own metrics are untouched
    assert run.data.tags["facelens.explain.device"] == "cpu"  # where this stage ran
    assert run.data.tags["facelens.explain.precision"] == "fp32"  # maps are always fp32
    assert all("+" not in k for k in got)
    top = _artifacts(run_id, "explain")
    assert {
        "explain/cam_grid_gradcam.png",
        "explain/faithfulness.json",
        "explain/faithfulness_details.json",
        "explain/maps",
    } <= top
    assert "explain/maps/cams_gradcam.npz" in _artifacts(run_id, "explain/maps")
    # One chart-view image per (method, true class of the probes), keys stable across runs.
    want = {f"cam/{m}/{EXPRESSIONS[c]}" for m in ("gradcam", "eigencam") for c in classes}
    assert _image_keys(run_id) == {k: [0] for k in want}
    assert run.data.tags["mlflow.loggedImages"] == "True"


def test_guided_gradcam_runs_every_check_like_the_other_methods(tiny: Tiny) -> None:
    from facelens.data.dataset import FaceDataset

    model, meta = load_exported(tiny.model)
    (test,) = load_splits(tiny.prepared, tiny.splits, ("test",))
    params = _params(methods=("gradcam", "guidedgradcam")).explain
    rows = select_probes(test, "expression", params)
    probes = FaceDataset(rows, tiny.prepared, "expression", SIZE)
    result = explain_probes(model, meta, probes, params)
    summary = result.summary
    for check in ("sanity", "deletion", "localization"):
        assert "guidedgradcam" in summary[check], check
    assert summary["sanity"]["guidedgradcam"]["n_images"] == len(rows)
    assert {"cam_grid_guidedgradcam.png", "sanity_guidedgradcam.png"} <= set(result.figures)
    guided = result.arrays["cams_guidedgradcam.npz"]["cams"]
    grad = result.arrays["cams_gradcam.npz"]["cams"]
    assert guided.shape == grad.shape and float(guided.max()) == pytest.approx(1.0, abs=1e-3)
    assert not np.allclose(guided, grad)  # pixel-level, not the coarse Grad-CAM map
    assert summary["methods"]["guidedgradcam"]["sanity_passed"] in (True, False)


def test_explain_without_masks_skips_localization_with_a_note(tiny: Tiny, tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    shutil.copytree(tiny.splits, splits)
    test = pd.read_csv(splits / "test.csv", dtype=str, keep_default_na=False)
    test.assign(mask="").to_csv(splits / "test.csv", index=False)
    summary = explain_stage(
        _params(methods=("gradcam",)),
        tiny.prepared,
        splits,
        tiny.model,
        None,
        figures_dir=tmp_path / "fig",
        maps_dir=tmp_path / "maps",
        metrics_path=tmp_path / "f.json",
    )
    assert "localization" not in summary
    assert any("localization skipped" in n for n in summary["meta"]["notes"])
    assert summary["headline"]["localization_lift"] is None
    assert "lift" not in json.loads((tmp_path / "f.json").read_text())  # absent, not null
    assert summary["sanity"]["gradcam"]["n_images"] > 0


def test_explain_attributes_task_uses_signed_attribute_targets(tiny: Tiny) -> None:
    from facelens.data.dataset import FaceDataset

    model, meta = load_exported(tiny.attr_model)
    (test,) = load_splits(tiny.prepared, tiny.splits, ("test",))
    params = ExplainParams(
        methods=("gradcam",),
        attribute_probes=3,
        attributes=("trustworthy", "happy"),
        removal_fractions=(0.5,),
    )
    rows = select_probes(test, "attributes", params)
    assert len(rows) == 3
    probes = FaceDataset(rows, tiny.prepared, "attributes", SIZE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = explain_probes(model, meta, probes, params)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    arrays = result.arrays["cams_gradcam.npz"]
    assert arrays["targets"].tolist() == ["trustworthy +", "trustworthy -", "happy +", "happy -"]
    assert arrays["cams"].shape == (4, 3, SIZE, SIZE)
    # Localization of the primary attribute against the regions that drive it in SynthFACS.
    loc = result.summary["localization"]["gradcam"]
    assert loc["attribute"] == "trustworthy" and loc["regions"] == ["eyes", "mouth"]
    assert loc["n_images"] == 3 and isinstance(loc["passed"], bool)
    assert loc["passed"] == (loc["mean_lift_in_face"] > 1.0)
    row = result.summary["methods"]["gradcam"]
    assert row["localization_passed"] == loc["passed"]
    assert row["localization_lift_in_face"] == loc["mean_lift_in_face"]
    assert result.summary["meta"]["target"] == arrays["targets"].tolist()
    assert {"cam_grid_gradcam.png", "sanity_gradcam.png"} <= set(result.figures)
    assert sum(name.startswith("method_grid_") for name in result.figures) == 3
    assert "explain.deletion.gradcam.road_combined" in result.metrics()
    # Chart-view images: one per (method, attribute): images, + overlays, - overlays.
    assert set(result.images) == {"cam/gradcam/trustworthy", "cam/gradcam/happy"}
    composite = result.images["cam/gradcam/happy"]
    scale = -(-96 // SIZE)  # cells upscaled to >= 96 px
    assert composite.dtype == np.uint8
    assert composite.shape == (3 * SIZE * scale + 4, 3 * SIZE * scale + 4, 3)
    feats = manifold_features(model, meta, probes)
    assert feats["penultimate"].shape == (3, 512)
    assert feats["attributes"].shape == (3, len(ATTRIBUTES))
    # predictions come back on the rating scale (de-standardised with the export's stats)
    assert np.allclose(feats["attributes"].mean(axis=0), meta.target_mean, atol=3.0)


# ------------------------------------------------------------------------------ manifold


def _manifold(tiny: Tiny, model: Path, run_id: str | None, out: Path, ref: Path) -> dict:
    params = Params(manifold=ManifoldParams(methods=("pca", "tsne"), max_points=20, anchors=12))
    return manifold_stage(
        params,
        tiny.prepared,
        tiny.splits,
        model,
        run_id,
        plots_dir=out / "plots",
        metrics_path=out / "metrics.json",
        reference_dir=ref,
    )


def test_manifold_stage_writes_logs_and_aligns_later_runs(
    tiny: Tiny, store: str, tmp_path: Path
) -> None:
    ref_dir = tmp_path / "cache" / "manifold_reference"
    run_id = _train_run()
    first = _manifold(tiny, tiny.model, run_id, tmp_path / "a", ref_dir)

    ref_file = ref_dir / f"{data_version_of(tiny.prepared)}.json"
    assert ref_file.is_file()
    assert first["meta"]["aligned"] == {"penultimate/pca": False, "penultimate/tsne": False}
    assert first["meta"]["n_points"] == 20
    assert set(first["layouts"]) == {"penultimate/pca", "penultimate/tsne"}
    table = pd.read_csv(tmp_path / "a" / "plots" / "layouts.csv")
    for key, met in first["layouts"].items():  # the numbers are those of the written layouts
        layout = table[[f"{key}/0", f"{key}/1"]].to_numpy()
        assert met["knn_accuracy"] == pytest.approx(knn_accuracy(layout, table["expression"]))
    plots = {p.name for p in (tmp_path / "a" / "plots").iterdir()}
    assert {"penultimate_pca.png", "penultimate_tsne.png", "manifold.html", "layouts.csv"} <= plots
    assert json.loads((tmp_path / "a" / "metrics_details.json").read_text()) == first
    compact = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert compact == manifold_metrics(first)  # the main layout (first method) only
    assert compact == {"trust": first["layouts"]["penultimate/pca"]["trustworthiness"]}
    html = (tmp_path / "a" / "plots" / "manifold.html").read_text()
    thumbs = json.loads(html.split("var FL_THUMBS=", 1)[1].split(";var FL_INFO=", 1)[0])
    assert len(thumbs) == first["meta"]["n_points"]  # one hover thumbnail per point
    assert all(base64.b64decode(t)[:8] == b"\x89PNG\r\n\x1a\n" for t in thumbs)

    run = MlflowClient().get_run(run_id)
    pca_tw = first["layouts"]["penultimate/pca"]["trustworthiness"]
    assert run.data.metrics["manifold.penultimate.pca.trustworthiness"] == pytest.approx(pca_tw)
    assert run.data.tags["facelens.manifold.device"] == "cpu"
    logged = _artifacts(run_id, "manifold")
    assert {"manifold/penultimate_pca.png", "manifold/manifold.html"} <= logged
    assert {"manifold/metrics.json", "manifold/metrics_details.json"} <= logged
    keys = _image_keys(run_id)
    assert keys == {"manifold/penultimate_pca": [0], "manifold/penultimate_tsne": [0]}

    # The same model again: aligned to the reference, so the layout is reproduced exactly.
    ref_before = ref_file.read_text()
    second = _manifold(tiny, tiny.model, None, tmp_path / "b", ref_dir)
    assert all(second["meta"]["aligned"].values())
    a = pd.read_csv(tmp_path / "a" / "plots" / "layouts.csv")
    b = pd.read_csv(tmp_path / "b" / "plots" / "layouts.csv")
    cols = [c for c in a.columns if c.startswith("penultimate/")]
    assert np.allclose(a[cols].to_numpy(), b[cols].to_numpy(), atol=1e-6)
    assert ref_file.read_text() == ref_before  # the reference stays the first run's

    # Another model: aligned too; alignment moves its anchors close to the reference's.
    third = _manifold(tiny, tiny.other_model, None, tmp_path / "c", ref_dir)
    assert all(third["meta"]["aligned"].values())
    c = pd.read_csv(tmp_path / "c" / "plots" / "layouts.csv")
    pca = ["penultimate/pca/0", "penultimate/pca/1"]
    resid = np.linalg.norm(c[pca].to_numpy() - a[pca].to_numpy())
    flipped = np.linalg.norm(-c[pca].to_numpy() - a[pca].to_numpy())
    assert resid <= flipped + 1e-9


# ----------------------------------------------------------------------- pipeline scripts


@pytest.mark.slow
def test_pipeline_scripts_run_with_default_methods(tiny: Tiny, store: str, tmp_path: Path) -> None:
    """The thin scripts as ``dvc repro`` runs them (UMAP included: numba compiles ~15 s)."""
    import importlib.util

    import yaml

    root = Path(__file__).resolve().parents[2]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    methods = ["gradcam", "gradcam++", "scorecam"]  # a '+' name and the slow ScoreCAM
    raw["explain"].update(methods=methods, per_class=1, scorecam_images=1, removal_fractions=[0.5])
    raw["manifold"].update(max_points=20, anchors=10)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    run_id = _train_run()
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"run_id": run_id}))
    common = [
        "--params", str(params_file), "--prepared", str(tiny.prepared),
        "--splits", str(tiny.splits), "--model-dir", str(tiny.model),
        "--run-file", str(run_file),
    ]  # fmt: skip

    def script(name: str):
        spec = importlib.util.spec_from_file_location(name, root / "pipelines" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    out = tmp_path / "reports"
    script("explain").main(
        [*common, "--figures", str(out / "explain/figures"), "--maps", str(out / "explain/maps"),
         "--metrics", str(out / "explain/faithfulness.json")]
    )  # fmt: skip
    script("manifold").main(
        [*common, "--plots", str(out / "manifold/plots"),
         "--metrics", str(out / "manifold/metrics.json"),
         "--reference-dir", str(tmp_path / "cache/manifold_reference")]
    )  # fmt: skip
    faith = json.loads((out / "explain/faithfulness_details.json").read_text())
    assert list(faith["sanity"]) == methods
    assert faith["sanity"]["scorecam"]["n_images"] == 1  # ScoreCAM only on scorecam_images
    assert np.load(out / "explain/maps/cams_scorecam.npz")["cams"].shape == (1, SIZE, SIZE)
    assert (out / "explain/figures/cam_grid_gradcampp.png").is_file()
    manifold = json.loads((out / "manifold/metrics_details.json").read_text())
    assert set(manifold["layouts"]) == {f"penultimate/{m}" for m in raw["manifold"]["methods"]}
    assert (out / "manifold/plots/penultimate_umap.png").is_file()
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert "explain.sanity.gradcampp.spearman_mean" in metrics
    assert "manifold.penultimate.umap3d.trustworthiness" in metrics
