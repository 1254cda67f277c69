"""The ``facelens`` CLI: help, version, predict / explain / runs / compare with real files.

A tiny random VGG16 is logged once per module into a private MLflow store (a run plus a
registered ``champion``), and SynthFACS PNGs are the inputs.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from facelens.cli.app import app
from facelens.constants import EXPRESSIONS
from facelens.explain.cams.methods import METHODS as _METHODS
from facelens.serving import faces

runner = CliRunner()
NAME = "facelens-expression"  # the model the cli_store fixture registers (conftest.py)


@pytest.fixture
def env(cli_env):
    """The store the CLI uses, the test running in an empty folder (conftest.py)."""
    return cli_env


def _pyfunc_row(store, data: bytes, **params: object) -> dict:
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{store.run_id}/model")
    frame = pd.DataFrame({"image": [base64.b64encode(data).decode()]})
    return model.predict(frame, params=params or None).to_dict(orient="records")[0]


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------ help, version


@pytest.mark.parametrize(
    "command",
    [[], ["data", "synth"], ["data", "check"], ["predict"], ["explain"], ["runs"], ["compare"]],
    ids=lambda c: " ".join(c) or "facelens",
)
def test_help_of_every_command(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if command:
        assert "Examples" in result.output
    else:
        for name in ("data", "predict", "explain", "runs", "compare"):
            assert f" {name} " in result.output


def test_version():
    from facelens import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_usage_errors_exit_2(env, synth_png):
    assert runner.invoke(app, ["predict"]).exit_code == 2  # missing argument
    result = runner.invoke(app, ["predict", str(synth_png), "--task", "age"])
    assert result.exit_code == 2 and "expression" in result.output
    result = runner.invoke(app, ["explain", str(synth_png), "--method", "magic"])
    assert result.exit_code == 2 and "gradcam++" in result.output
    result = runner.invoke(app, ["explain", str(synth_png), "--out", "cam.jpg"])
    assert result.exit_code == 2 and ".png" in result.output


# ------------------------------------------------------------------------------ predict


def test_predict_json_matches_the_served_pyfunc(env, synth_png):
    result = runner.invoke(app, ["predict", str(synth_png), "--model", env.run_id, "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 1 and records[0]["file"] == str(synth_png)
    row = records[0]
    probs = np.array([row[f"p_{n}"] for n in EXPRESSIONS])
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    assert row["label"] == EXPRESSIONS[int(np.argmax(probs))]
    direct = _pyfunc_row(env, synth_png.read_bytes())
    np.testing.assert_allclose(probs, [direct[f"p_{n}"] for n in EXPRESSIONS], rtol=1e-9)


def test_predict_device_option(env, synth_png, monkeypatch):
    from facelens.device import DEVICE_ENV

    monkeypatch.setenv(DEVICE_ENV, "auto")  # --device sets it; restored after the test
    result = runner.invoke(app, ["predict", str(synth_png), "-m", env.run_id, "--device", "gpu"])
    assert result.exit_code == 2 and "--device" in result.output and "cuda:N" in result.output
    result = runner.invoke(
        app, ["predict", str(synth_png), "-m", env.run_id, "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    direct = _pyfunc_row(env, synth_png.read_bytes())
    assert row["label"] == direct["label"]
    if not torch.cuda.is_available():
        result = runner.invoke(
            app, ["predict", str(synth_png), "-m", env.run_id, "--device", "cuda"]
        )
        assert result.exit_code == 1
        (line,) = _error_lines(result)
        assert "could not load the model" in line and "no CUDA device" in line


def test_predict_table_uses_the_champion_by_default(env, synth_png):
    result = runner.invoke(app, ["predict", str(synth_png)])
    assert result.exit_code == 0, result.output
    assert f"models:/{NAME}@champion" in result.stdout
    assert "synth_face.png" in result.stdout
    label = _pyfunc_row(env, synth_png.read_bytes())["label"]
    assert label in result.stdout


def test_predict_bad_inputs_exit_1_with_one_line_per_file(env, synth_png, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(synth_png.read_bytes()[:300])
    missing = tmp_path / "missing.png"
    result = runner.invoke(
        app, ["predict", str(synth_png), str(text), str(cut), str(missing), "-m", env.run_id]
    )
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 3, result.stderr
    assert any(str(text) in line and "unsupported_format" in line for line in lines)
    assert any(str(cut) in line and "truncated" in line for line in lines)
    assert any(str(missing) in line and "no such file" in line for line in lines)
    assert not any(line.count("row ") for line in lines)  # rows are renamed to files
    assert "synth_face.png" in result.stdout  # the good image is still answered


def test_predict_unknown_model_exit_1(env, synth_png):
    result = runner.invoke(app, ["predict", str(synth_png), "--model", "runs:/0123abcd/model"])
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1 and "runs:/0123abcd/model" in lines[0]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------ explain


def test_explain_writes_the_overlay(env, synth_png):
    out = Path("figures/cam.png")
    result = runner.invoke(
        app, ["explain", str(synth_png), "--target", "happy", "--out", str(out), "-m", env.run_id]
    )
    assert result.exit_code == 0, result.output
    assert "happy" in result.stdout and str(out) in result.stdout
    with Image.open(out) as im:
        written = np.asarray(im.convert("RGB"))
    direct = _pyfunc_row(env, synth_png.read_bytes(), explain=True, target="happy")
    with Image.open(io.BytesIO(base64.b64decode(direct["cam_png"]))) as im:
        np.testing.assert_array_equal(written, np.asarray(im.convert("RGB")))


def test_explain_unknown_target_is_a_usage_error(env, synth_png):
    result = runner.invoke(app, ["explain", str(synth_png), "--target", "smug", "-m", env.run_id])
    assert result.exit_code == 2
    assert "surprise" in result.stderr
    assert not Path("cam.png").exists()


def test_explain_negative_target(env, synth_png):
    result = runner.invoke(app, ["explain", str(synth_png), "--target=-sad", "-m", env.run_id])
    assert result.exit_code == 0, result.output
    assert "-sad" in result.stdout and Path("cam.png").is_file()


@pytest.fixture
def few_methods(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Three fast methods instead of all eight (ScoreCAM alone takes ~20 s on CPU)."""
    methods = {k: _METHODS[k] for k in ("gradcam", "gradcam++", "eigencam")}
    _patch_methods(monkeypatch, methods)
    return methods


def _patch_methods(monkeypatch: pytest.MonkeyPatch, methods: dict) -> None:
    """Replace the method table where the CLI, the model and the CAM code look it up."""
    import facelens.explain.cams.compute as compute
    import facelens.explain.cams.methods as names

    monkeypatch.setattr(names, "METHODS", methods)
    monkeypatch.setattr(compute, "METHODS", methods)


def test_explain_all_methods_writes_named_files_inside_out(env, synth_png, few_methods):
    result = runner.invoke(
        app, ["explain", str(synth_png), "--all-methods", "--out", "cams", "-m", env.run_id]
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in Path("cams").iterdir())
    assert written == ["eigencam.png", "gradcam.png", "gradcampp.png", "methods.png"]
    assert sorted(p.name for p in Path(".").iterdir()) == ["cams"]
    with Image.open("cams/methods.png") as grid, Image.open("cams/gradcam.png") as one:
        assert grid.size[0] > 3 * one.size[0] / 2  # input + 3 overlays side by side


def test_explain_all_methods_cannot_escape_out(env, synth_png, monkeypatch):
    hostile = {"gradcam": _METHODS["gradcam"], "../../escaped": _METHODS["gradcam"]}
    _patch_methods(monkeypatch, hostile)
    Path("deep/er").mkdir(parents=True)
    result = runner.invoke(
        app, ["explain", str(synth_png), "--all-methods", "--out", "deep/er/out", "-m", env.run_id]
    )
    assert result.exit_code == 0, result.output
    files = sorted(str(p) for p in Path(".").rglob("*") if p.is_file())
    assert files == [
        "deep/er/out/escaped.png",
        "deep/er/out/gradcam.png",
        "deep/er/out/methods.png",
    ]


def test_explain_all_methods_needs_a_folder(env, synth_png):
    result = runner.invoke(app, ["explain", str(synth_png), "--all-methods", "--out", "grid.png"])
    assert result.exit_code == 2
    assert "folder" in result.output


def test_explain_bad_image_exit_1(env, tmp_path):
    bad = tmp_path / "tiny.png"
    bad.write_bytes(_png_bytes(np.zeros((8, 8, 3), np.uint8)))
    result = runner.invoke(app, ["explain", str(bad), "-m", env.run_id])
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1 and str(bad) in lines[0] and "too_small" in lines[0]


# ------------------------------------------------------------------------------ --detect-face


def _fake_detector(box: tuple[int, int, int, int] | None):
    def detect(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
        assert gray.ndim == 2 and gray.dtype == np.uint8
        return [] if box is None else [(5, 5, 10, 10), box]

    return detect


def test_detect_face_crops_the_largest_face_before_predicting(env, monkeypatch, tmp_path):
    photo = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    path.write_bytes(_png_bytes(photo))
    monkeypatch.setattr(faces, "haar_detector", lambda: _fake_detector((60, 30, 40, 40)))
    result = runner.invoke(
        app, ["predict", str(path), "--detect-face", "--margin", "0.25", "-m", env.run_id, "--json"]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    expected_crop = photo[20:80, 50:110]  # 40 px face + 25 % margin per side = 60 px square
    direct = _pyfunc_row(env, _png_bytes(expected_crop))
    for name in EXPRESSIONS:
        assert row[f"p_{name}"] == pytest.approx(direct[f"p_{name}"], rel=1e-9)
    whole = _pyfunc_row(env, path.read_bytes())
    assert row["p_happy"] != pytest.approx(whole["p_happy"], rel=1e-9)


def test_detect_face_without_a_face_exit_1(env, monkeypatch, synth_png):
    monkeypatch.setattr(faces, "haar_detector", lambda: _fake_detector(None))
    for command in ("predict", "explain"):
        result = runner.invoke(app, [command, str(synth_png), "--detect-face", "-m", env.run_id])
        assert result.exit_code == 1
        lines = _error_lines(result)
        assert len(lines) == 1 and str(synth_png) in lines[0] and "no face" in lines[0]


def _grace_hopper(tmp_path: Path) -> Path:
    """Matplotlib's bundled sample photo (US Navy portrait of Grace Hopper, public domain)."""
    from matplotlib import cbook

    path = tmp_path / "grace_hopper.jpg"
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), path)
    return path


@pytest.mark.skipif(not faces.haar_available(), reason="this OpenCV has no Haar cascade")
def test_detect_face_with_the_real_haar_cascade(env, tmp_path):
    photo = _grace_hopper(tmp_path)
    result = runner.invoke(app, ["explain", str(photo), "--detect-face", "-m", env.run_id])
    assert result.exit_code == 0, result.output
    with Image.open("cam.png") as im:
        width, height = im.size
    assert width == height and 200 <= width <= 256  # the face square, not the 512x600 photo
    noise = tmp_path / "noise.png"
    noise.write_bytes(_png_bytes(np.full((96, 96, 3), 128, np.uint8)))
    result = runner.invoke(app, ["predict", str(noise), "--detect-face", "-m", env.run_id])
    assert result.exit_code == 1 and "no face" in result.stderr


@pytest.mark.skipif(faces.haar_available(), reason="this OpenCV has the Haar cascade")
def test_detect_face_without_haar_says_what_to_install(env, tmp_path):
    photo = _grace_hopper(tmp_path)
    result = runner.invoke(app, ["predict", str(photo), "--detect-face", "-m", env.run_id])
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1 and "opencv-python-headless" in lines[0]


# ------------------------------------------------------------------------------ runs, compare


def test_runs_json_and_table(env):
    result = runner.invoke(app, ["runs", "--json", "--limit", "5"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    mine = [r for r in records if r["run_id"] == env.run_id]
    assert len(mine) == 1
    assert mine[0]["metrics"]["best_val_metric"] == 0.25
    assert mine[0]["experiment"] == "cli-test" and mine[0]["status"] == "FINISHED"
    result = runner.invoke(app, ["runs", "--experiment", "cli-test"])
    assert result.exit_code == 0, result.output
    assert env.run_id in result.stdout and "0.2500" in result.stdout
    result = runner.invoke(app, ["runs", "--experiment", "nope"])
    assert result.exit_code == 1 and "cli-test" in result.stderr


def test_compare_writes_html_and_refuses_bad_refs(env):
    result = runner.invoke(
        app, ["compare", env.run_id, f"models:/{NAME}@champion", "--out", "r.html"]
    )
    assert result.exit_code == 0, result.output
    html = Path("r.html").read_text()
    assert env.run_id[:8] in html and "best_val_metric" in html
    result = runner.invoke(app, ["compare", f"models:/{NAME}@nobody", "--out", "x.html"])
    assert result.exit_code == 1
    assert len(_error_lines(result)) == 1 and "nobody" in result.stderr
    assert runner.invoke(app, ["compare", env.run_id, "--out", "r.txt"]).exit_code == 2
