"""The out-of-distribution detector: Mahalanobis math, shrinkage, calibration, saved with the
model and loaded back (models exported without one stay loadable, with no detector)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from facelens.errors import ModelFileError
from facelens.models.export import attach_ood, export_model, load_exported
from facelens.models.ood import (
    OOD_FILE,
    OodDetector,
    fit_ood,
    ledoit_wolf_shrinkage,
    load_ood,
)

D = 12


def _features(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features around ``classes`` well separated means, correlated dimensions."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(D, D)) / np.sqrt(D)  # same for every call
    centres = np.random.default_rng(7).normal(scale=4.0, size=(classes, D))
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(size=(n, D)) @ mix, labels


def test_scores_are_the_distance_to_the_nearest_class_mean_under_the_shrunk_covariance():
    x, y = _features(300, 0)
    val, _ = _features(200, 1)
    det = fit_ood(x, y, val)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    centred = x - means[y]
    cov = centred.T @ centred / len(x)
    shrunk = (1 - det.shrinkage) * cov + det.shrinkage * np.trace(cov) / D * np.eye(D)
    precision = np.linalg.inv(shrunk)
    probe, _ = _features(20, 2)
    probe[:5] += 10.0  # a few far away
    diffs = probe[:, None, :] - means[None, :, :]
    expected = np.sqrt(np.einsum("nkd,de,nke->nk", diffs, precision, diffs).min(1))
    np.testing.assert_allclose(det.scores(probe), expected, rtol=1e-8)
    assert 0.0 < det.shrinkage < 1.0 and det.n_fit == 300
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        det.scores(probe[:, :5])


def test_shrinkage_is_ledoit_wolf():
    sklearn_covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(3)
    for n, d in ((50, 8), (30, 80)):
        x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d)
        x -= x.mean(0)
        want = sklearn_covariance.ledoit_wolf_shrinkage(x, assume_centered=True)
        assert ledoit_wolf_shrinkage(x) == pytest.approx(want, rel=1e-9)


def test_threshold_flags_the_false_alarm_share_of_validation_and_far_points():
    x, y = _features(600, 0)
    val, _ = _features(2000, 1)
    det = fit_ood(x, y, val, false_alarm=0.05)
    val_share = float(det.flags(det.scores(val)).mean())
    assert 0.045 <= val_share <= 0.05 and det.val_flagged == pytest.approx(val_share)
    fresh, _ = _features(4000, 5)
    assert 0.03 <= float(det.flags(det.scores(fresh)).mean()) <= 0.07  # generalises
    far = fresh[:100] + np.random.default_rng(8).normal(scale=8.0, size=(100, D))
    assert det.flags(det.scores(far)).mean() > 0.95
    assert fit_ood(x, y, val, false_alarm=0.2).threshold < det.threshold


def test_more_features_than_images_and_dead_features_stay_finite():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(20, 64)), 0.0)
    x[:, :10] = 0.0  # features that never fire (post-ReLU)
    det = fit_ood(x, None, np.maximum(rng.normal(size=(10, 64)), 0.0))
    assert det.means.shape == (1, 64) and det.shrinkage > 0.0
    probe = np.maximum(rng.normal(size=(5, 64)), 0.0)
    probe[:, 0] = 5.0  # a dead feature firing
    scores = det.scores(probe)
    assert np.isfinite(scores).all() and (scores > det.threshold).all()


def test_unlabelled_rows_are_left_out_and_bad_inputs_are_refused():
    x, y = _features(100, 0)
    val, _ = _features(50, 1)
    y_masked = y.copy()
    y_masked[:40] = -1
    det = fit_ood(x, y_masked, val)
    assert det.n_fit == 60
    np.testing.assert_allclose(det.means, fit_ood(x[40:], y[40:], val).means)
    with pytest.raises(ValueError, match="false_alarm"):
        fit_ood(x, y, val, false_alarm=0.0)
    with pytest.raises(ValueError, match="labels"):
        fit_ood(x, y[:10], val)
    with pytest.raises(ValueError, match="val"):
        fit_ood(x, y, val[:0])


def _exported(tmp_path: Path):
    from facelens.constants import EXPRESSIONS
    from facelens.models.build import build_model
    from facelens.models.meta import ModelMeta
    from facelens.models.params import ModelParams

    model, source = build_model(
        ModelParams(arch="vgg16", weights="none", input_size=32), num_outputs=7, seed=0
    )
    meta = ModelMeta.for_model(
        model, task="expression", output_names=EXPRESSIONS, input_size=32, weights_source=source
    )
    export_model(model, meta, tmp_path / "model")
    return tmp_path / "model", meta


def test_detector_is_saved_with_the_model_and_loaded_back(tmp_path: Path):
    model_dir, meta = _exported(tmp_path)
    x, y = _features(200, 0)
    det = fit_ood(np.tile(x, (1, 512 // D + 1))[:, :512], y, np.tile(x[:50], (1, 43))[:, :512])
    new_meta = attach_ood(model_dir, meta, det)
    _, loaded_meta = load_exported(model_dir)
    assert loaded_meta == new_meta and loaded_meta.ood_threshold == pytest.approx(det.threshold)
    assert loaded_meta.ood_false_alarm == 0.05
    loaded = load_ood(model_dir, loaded_meta.ood_threshold)
    assert isinstance(loaded, OodDetector)
    np.testing.assert_allclose(loaded.means, det.means, rtol=1e-6)
    probe = np.tile(_features(10, 4)[0], (1, 43))[:, :512]
    np.testing.assert_allclose(loaded.scores(probe), det.scores(probe), rtol=1e-4)
    assert loaded.threshold == det.threshold and loaded.n_fit == 200


def test_models_exported_without_a_detector_still_load(tmp_path: Path):
    model_dir, _ = _exported(tmp_path)
    data = json.loads((model_dir / "meta.json").read_text())
    for key in ("ood_threshold", "ood_false_alarm"):  # meta.json as written before the field
        data.pop(key)
    (model_dir / "meta.json").write_text(json.dumps(data))
    _, loaded = load_exported(model_dir)
    assert loaded.ood_threshold is None and load_ood(model_dir, loaded.ood_threshold) is None


def test_a_missing_or_mismatched_detector_file_is_a_model_file_error(tmp_path: Path):
    model_dir, meta = _exported(tmp_path)
    x, y = _features(100, 0)
    det = fit_ood(x, y, x[:30])
    attach_ood(model_dir, meta, det)
    with pytest.raises(ModelFileError, match="different exports"):
        load_ood(model_dir, det.threshold + 1.0)
    (model_dir / OOD_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a facelens OOD file"):
        load_ood(model_dir, det.threshold)
    (model_dir / OOD_FILE).unlink()
    with pytest.raises(ModelFileError, match=r"ood\.npz is missing"):
        load_ood(model_dir, det.threshold)
    with pytest.raises(FileNotFoundError, match="no exported model"):
        attach_ood(tmp_path / "elsewhere", dataclasses.replace(meta), det)
