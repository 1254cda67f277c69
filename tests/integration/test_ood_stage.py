"""Out-of-distribution scores end to end: a tiny VGG trained on SynthFACS faces the way the
train stage trains it, its detector calibrated on the validation split and saved with the
export, the served ``ood_score`` / ``ood`` columns and the CLI's warning line."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams
from facelens.models.export import export_model, load_exported
from facelens.models.ood import load_ood
from facelens.models.params import ModelParams
from facelens.serving.pyfunc import FaceLensModel
from facelens.serving.schema import OOD_COLUMNS, model_signature, output_columns
from facelens.training.ood import calibrate_ood, fit_split_ood
from facelens.training.params import TrainParams
from facelens.training.recipe import make_recipe, train_model

SIZE = 32
pytestmark = pytest.mark.slow  # trains a tiny VGG for 3 epochs (about 30 s on 2 cores)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _b64(img: np.ndarray) -> str:
    return base64.b64encode(_png(img)).decode("ascii")


def _noise(seed: int) -> list[np.ndarray]:
    """Uniform noise and a checkerboard: nothing like a face. (A smooth colour gradient is
    not flagged by this 3-epoch model; benchmarks/ood.py measures such images on a real one.)"""
    rng = np.random.default_rng(seed)
    uniform = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    check = ((np.indices((SIZE, SIZE)).sum(0) // 4) % 2 * 255).astype(np.uint8)
    return [uniform, np.repeat(check[..., None], 3, -1)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """SynthFACS split by identity (train 24 people, val 8, test 4), 3 epochs of the train
    stage's recipe, exported and calibrated like the train stage does it."""
    root = tmp_path_factory.mktemp("ood")
    samples = generate(SynthParams(n_identities=36, seed=0), image_size=SIZE).samples
    rows = []
    for s in samples:
        Image.fromarray(s.image).save(root / f"{s.id}.png")
        rows.append({"id": s.id, "file": f"{s.id}.png", "label": s.label, "who": s.identity})
    table = pd.DataFrame(rows)
    people = sorted(table["who"].unique())
    split = {p: "train" if i < 24 else "val" if i < 32 else "test" for i, p in enumerate(people)}
    parts = {name: table[table["who"].map(split) == name] for name in ("train", "val", "test")}
    recipe = make_recipe(
        "expression",
        ModelParams(arch="vgg16_bn", weights="none", input_size=SIZE),
        TrainParams(epochs=3, batch_size=16, augment=0.0, dropout=0.0, seed=0, precision="fp32"),
    )
    model = train_model(recipe, parts["train"], parts["val"], root, progress=False)
    export_model(model.model, model.meta, root / "model")
    model = calibrate_ood(model, parts["train"], parts["val"], root, root / "model")
    test_images = [s.image for s in samples if split[s.identity] == "test"]
    return root, model, parts, test_images


def _served(model_dir: Path) -> FaceLensModel:
    served = FaceLensModel()
    served.load_context(mlflow.pyfunc.PythonModelContext({"model_dir": str(model_dir)}, {}))
    return served


def test_the_detector_is_exported_and_flags_about_five_percent_of_validation(trained):
    root, model, parts, _ = trained
    _, meta = load_exported(root / "model")
    assert meta == model.meta and meta.ood_false_alarm == 0.05
    detector = load_ood(root / "model", meta.ood_threshold)
    assert detector is not None and detector.n_fit == len(parts["train"])
    assert detector.means.shape == (7, 512)  # one mean per expression, pooled features
    assert 0.0 < detector.val_flagged <= 0.05
    again = fit_split_ood(model.model, meta, parts["train"], parts["val"], root)
    assert again.threshold == pytest.approx(detector.threshold, rel=1e-4)


def test_served_rows_carry_the_score_and_noise_is_flagged(trained):
    root, model, _, test_images = trained
    served = _served(root / "model")
    noise = _noise(0)
    frame = pd.DataFrame({"image": [_b64(im) for im in [*test_images, *noise]] + ["bad!"]})
    out = served.predict(None, frame)
    assert list(out.columns) == output_columns(model.meta)
    assert set(OOD_COLUMNS) <= set(out.columns)
    faces, rest, bad = out.iloc[: len(test_images)], out.iloc[len(test_images) : -1], out.iloc[-1]
    assert rest["ood"].tolist() == [True] * len(noise)
    assert faces["ood"].astype(bool).mean() <= 0.25  # unseen people, mostly in distribution
    assert rest["ood_score"].astype(float).min() > faces["ood_score"].astype(float).median()
    assert bad["error"] == "invalid_base64" and bad["ood_score"] is None and bad["ood"] is None
    sig = {c.name: c.type.name for c in model_signature(model.meta).outputs.inputs}
    assert sig["ood_score"] == "double" and sig["ood"] == "boolean"


def test_cli_prints_a_warning_line_for_flagged_images(trained, tmp_path, monkeypatch):
    import facelens.cli.explain as explain_cli
    import facelens.cli.predict as predict_cli
    from facelens.cli.app import app

    root, _, _, test_images = trained
    served = _served(root / "model")

    class Loaded:  # what mlflow.pyfunc.load_model returns, minus the MLflow store
        def predict(self, frame, params=None):
            return served.predict(None, frame, params=params or None)

    for module in (predict_cli, explain_cli):
        monkeypatch.setattr(module, "load_model", lambda uri, device=None: Loaded())
    face, noise = tmp_path / "face.png", tmp_path / "noise.png"
    face.write_bytes(_png(test_images[0]))
    noise.write_bytes(_png(_noise(1)[0]))
    flagged = served.predict(None, pd.DataFrame({"image": [_b64(test_images[0])]}))["ood"][0]
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(face), str(noise), "--model", str(root)])
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert any(str(noise) in ln and "out of distribution" in ln for ln in warnings)
    assert any(str(face) in ln for ln in warnings) == bool(flagged)
    result = runner.invoke(
        app, ["explain", str(noise), "--model", str(root), "--out", str(tmp_path / "c.png")]
    )
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "out of distribution" in result.stderr
    result = runner.invoke(app, ["predict", str(face), str(noise), "-m", str(root), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["ood"] for r in records] == [bool(flagged), True]
    assert all(isinstance(r["ood_score"], float) for r in records)


@pytest.mark.parametrize("task", ["expression", "attributes"])
def test_the_train_stage_logs_a_model_that_serves_ood_columns(
    task, tmp_path, sqlite_store, pipeline_params
):
    """prepare -> split -> the train stage (tiny params, 1 epoch): the logged pyfunc, loaded
    back through MLflow with the code it ships, answers with the OOD columns."""
    from facelens.config import parse_params
    from facelens.stages import prepare, split, train

    sqlite_store("ood-stage")
    raw = pipeline_params()
    raw["task"] = task
    params = parse_params(raw)
    prepare.run(params, tmp_path / "prepared")
    split.run(params, tmp_path / "prepared", tmp_path / "splits")
    info = train.run(
        params,
        tmp_path / "prepared",
        tmp_path / "splits",
        {},
        tmp_path / "model",
        checkpoint_root=tmp_path / "ckpt",
    )
    _, meta = load_exported(tmp_path / "model")
    assert meta.ood_threshold is not None and (tmp_path / "model" / "ood.npz").is_file()
    detector = load_ood(tmp_path / "model", meta.ood_threshold)
    assert detector is not None and detector.means.shape[0] == (7 if task == "expression" else 1)
    logged = mlflow.pyfunc.load_model(info["model_uri"])
    names = {c.name for c in logged.metadata.get_output_schema().inputs}
    assert set(OOD_COLUMNS) <= names
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = logged.predict(pd.DataFrame({"image": [_b64(noise)]}))
    assert set(OOD_COLUMNS) <= set(out.columns) and out.loc[0, "error"] == ""
    assert out.loc[0, "ood_score"] > 0
