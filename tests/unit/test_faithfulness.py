"""Tests of facelens.explain.faithfulness: localization, randomisation sanity check, deletion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from facelens._io import flatten_metrics
from facelens.constants import EXPRESSIONS, REGION_BITS, REGIONS
from facelens.explain.cams.compute import compute_cam_batch
from facelens.explain.cams.targets import make_targets
from facelens.explain.faithfulness.deletion import deletion_report
from facelens.explain.faithfulness.localization import (
    CLASS_REGIONS,
    localization_lift,
    localization_report,
    pointing_hit,
    region_mask,
)
from facelens.explain.faithfulness.sanity import (
    randomized_copy,
    sanity_check,
    sanity_figure,
    top_layer_names,
)
from facelens.explain.faithfulness.summary import faithfulness_summary

# ------------------------------------------------------------------------- localization


def test_class_regions_cover_expressions() -> None:
    assert set(CLASS_REGIONS) == set(EXPRESSIONS)
    assert all(set(r) <= set(REGIONS) for r in CLASS_REGIONS.values())
    assert CLASS_REGIONS["neutral"] == ()
    assert set(CLASS_REGIONS["disgust"]) == {"nose", "mouth"}


def test_region_mask_bits() -> None:
    mask = np.array([[1, 1 | 16], [1 | 4, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(region_mask(mask, ["mouth"]), [[False, True], [False, False]])
    np.testing.assert_array_equal(
        region_mask(mask, ["mouth", "eyes"]), [[False, True], [True, False]]
    )
    np.testing.assert_array_equal(region_mask(mask, ["face"]), [[True, True], [True, False]])
    assert not region_mask(mask, []).any()
    with pytest.raises(ValueError, match="Unknown region"):
        region_mask(mask, ["chin"])


def test_localization_lift_known_values() -> None:
    region = np.zeros((10, 10), dtype=bool)
    region[:5, :5] = True  # area fraction 0.25
    inside = region.astype(float)
    assert localization_lift(inside, region) == pytest.approx(4.0)  # all energy in 1/4 area
    assert localization_lift(np.ones((10, 10)), region) == pytest.approx(1.0)  # chance
    assert localization_lift(1.0 - inside, region) == pytest.approx(0.0)
    half = np.ones((10, 10)) + 2.0 * inside  # 75 of 150 energy inside
    assert localization_lift(half, region) == pytest.approx(2.0)
    face = np.zeros((10, 10), dtype=bool)
    face[:, :5] = True  # region is half of the face
    on_face = face.astype(float)
    assert localization_lift(on_face, region) == pytest.approx(2.0)
    assert localization_lift(on_face, region, within=face) == pytest.approx(1.0)
    assert math.isnan(localization_lift(np.zeros((10, 10)), region))
    assert math.isnan(localization_lift(inside, np.zeros((10, 10), dtype=bool)))
    with pytest.raises(ValueError, match="same shape"):
        localization_lift(inside[:, :4], region)
    with pytest.raises(ValueError, match="non-negative"):
        localization_lift(-inside, region)


def test_pointing_hit() -> None:
    region = np.zeros((4, 4), dtype=bool)
    region[0, 0] = True
    cam = np.zeros((4, 4))
    cam[0, 0] = 1.0
    assert pointing_hit(cam, region)
    cam[3, 3] = 2.0
    assert not pointing_hit(cam, region)


def _face_masks() -> np.ndarray:
    """Two 8x8 masks: face everywhere, mouth in rows 6-7, eyes in rows 2-3, brows row 1."""
    mask = np.full((8, 8), REGION_BITS["face"], dtype=np.uint8)
    mask[6:] |= REGION_BITS["mouth"]
    mask[2:4] |= REGION_BITS["eyes"]
    mask[1] |= REGION_BITS["brows"]
    return np.stack([mask, mask, mask, mask])


def test_localization_report_known_values() -> None:
    masks = _face_masks()
    mouth_cam = np.zeros((8, 8), dtype=np.float32)
    mouth_cam[6:] = 1.0
    cams = np.stack([mouth_cam, np.ones((8, 8)), mouth_cam, mouth_cam])
    happy, neutral, sad = (EXPRESSIONS.index(n) for n in ("happy", "neutral", "sad"))
    labels = [happy, happy, neutral, sad]
    report = localization_report(cams, masks, labels)
    # happy = mouth + eyes = rows 2,3,6,7 = half the image; sad = brows + mouth = 3/8.
    assert report["per_class"]["happy"]["n"] == 2
    assert report["per_class"]["happy"]["lift"] == pytest.approx((2.0 + 1.0) / 2)
    assert report["per_class"]["happy"]["pointing"] == pytest.approx(1.0)
    assert report["per_class"]["sad"]["lift"] == pytest.approx(8 / 3)
    assert report["per_class"]["sad"]["lift_in_face"] == pytest.approx(8 / 3)
    assert "neutral" not in report["per_class"]
    assert report["n_images"] == 3 and report["n_skipped"] == 1
    assert report["mean_lift"] == pytest.approx((1.5 + 8 / 3) / 2)


def test_localization_report_resizes_and_skips_unlabelled() -> None:
    masks = _face_masks()[:2]
    cam = np.zeros((16, 16), dtype=np.float32)
    cam[12:] = 1.0  # mouth rows at twice the mask resolution
    report = localization_report(np.stack([cam, cam]), masks, [EXPRESSIONS.index("sad"), -1])
    assert report["n_images"] == 1 and report["n_skipped"] == 1
    assert report["per_class"]["sad"]["lift"] == pytest.approx(8 / 3, rel=0.05)
    with pytest.raises(ValueError, match="one CAM, mask and label"):
        localization_report(np.stack([cam]), masks, [0, 1])


# ------------------------------------------------------------------ model randomisation


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Identity(),  # 0: the input itself
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),  # 6: last conv block output
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(EXPRESSIONS)),
    ).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_randomized_copy_reinitialises_only_top_layers() -> None:
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert top_layer_names(model, 3) == ["4", "5", "9"]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    copy_a = randomized_copy(model, 2, seed=5)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG untouched
    copy_b = randomized_copy(model, ["5", "9"], seed=5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # original untouched
        assert torch.equal(copy_a.state_dict()[key], copy_b.state_dict()[key])  # seeded
    assert not torch.equal(copy_a[9].weight, model[9].weight)
    assert torch.equal(copy_a[4].weight, model[4].weight)
    assert not copy_a.training
    copy_c = randomized_copy(model, 2, seed=6)
    assert not torch.equal(copy_a[9].weight, copy_c[9].weight)
    with pytest.raises(ValueError, match="Unknown module"):
        randomized_copy(model, ["head"], seed=0)
    with pytest.raises(ValueError, match="n must be in"):
        top_layer_names(model, 99)


def test_sanity_flags_weight_independent_cam(images: torch.Tensor) -> None:
    model = _net()
    randomized = randomized_copy(model, top_layers=3, seed=1)
    targets = make_targets("class", None, [0] * 6, EXPRESSIONS, name="happy")
    # EigenCAM on the input (an Identity layer) is the first principal component of the
    # pixels: the same map whatever the weights.
    trained = compute_cam_batch(model, model[0], images, targets, "eigencam").cams
    random = compute_cam_batch(randomized, randomized[0], images, targets, "eigencam").cams
    flagged = sanity_check(trained, random)
    assert flagged["spearman_mean"] == pytest.approx(1.0)
    assert flagged["insensitive"] and not flagged["passed"]
    # Grad-CAM on the last conv block depends on the weights it explains. This toy net is
    # untrained, so its maps and its randomized copy's share more image structure than a
    # trained VGG's (benchmarks/sanity_threshold.py): it is checked against 0.5, not 0.3.
    trained = compute_cam_batch(model, model[6], images, targets, "gradcam")
    random = compute_cam_batch(randomized, randomized[6], images, targets, "gradcam")
    for a, b in ((trained.cams, random.cams), (trained.raw, random.raw)):
        report = sanity_check(a, b, threshold=0.5)
        assert report["spearman_mean"] < 0.5
        assert report["passed"] and not report["insensitive"]
        assert report["n_images"] == 6 and len(report["spearman_per_image"]) == 6


def test_sanity_catches_eigencam_ignoring_the_head(images: torch.Tensor) -> None:
    # Randomising only the classifier head cannot change a class-agnostic EigenCAM, while a
    # gradient-based map of the same layer changes.
    model = _net()
    head_only = randomized_copy(model, ["9"], seed=2)
    targets = make_targets("class", None, [0] * 6, EXPRESSIONS, name="happy")
    eig = sanity_check(
        compute_cam_batch(model, model[6], images, targets, "eigencam").cams,
        compute_cam_batch(head_only, head_only[6], images, targets, "eigencam").cams,
    )
    grad = sanity_check(
        compute_cam_batch(model, model[6], images, targets, "gradcam").raw,
        compute_cam_batch(head_only, head_only[6], images, targets, "gradcam").raw,
    )
    assert eig["insensitive"]
    assert grad["spearman_mean"] < eig["spearman_mean"] - 0.3


def test_sanity_check_edge_cases() -> None:
    zeros = np.zeros((2, 4, 4))
    assert sanity_check(zeros, zeros)["spearman_mean"] == 1.0
    ramp = np.arange(16.0).reshape(1, 4, 4)
    report = sanity_check(np.concatenate([ramp, zeros[:1]]), np.concatenate([-ramp, ramp]))
    assert report["spearman_per_image"][0] == pytest.approx(-1.0)
    assert math.isnan(report["spearman_per_image"][1]) and report["n_undefined"] == 1
    assert report["spearman_mean"] == pytest.approx(-1.0) and report["passed"]
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        sanity_check(zeros, zeros[:1])


def test_sanity_figure() -> None:
    imgs = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    cams = np.random.default_rng(0).random((2, 8, 8))
    fig = sanity_figure(imgs, cams, cams[::-1], rhos=[0.1, 0.2], title="sanity")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[5].get_title() == "randomized (rho=0.20)"


# ----------------------------------------------------------------------------- deletion


class _RegionSum(nn.Module):
    """Output 0 = sum of the input inside a fixed square; output 1 = its negative."""

    def __init__(self, size: int) -> None:
        super().__init__()
        weight = torch.zeros(size, size)
        weight[4:10, 4:10] = 1.0  # 36 of 256 pixels: 14 %
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bn = nn.BatchNorm1d(1)  # lets the test see whether train mode leaks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).sum(dim=(1, 2, 3))[:, None]
        return torch.cat([s, -s], dim=1) + 0.0 * self.bn(s)


def test_deletion_report_prefers_the_true_evidence() -> None:
    size = 16
    model = _RegionSum(size)
    model.train()
    x = torch.zeros(2, 3, size, size)
    x[:, :, 4:10, 4:10] = 1.0
    good = np.zeros((2, size, size), dtype=np.float32)
    good[:, 4:10, 4:10] = 1.0
    bad = np.zeros((2, size, size), dtype=np.float32)
    bad[:, 10:, 10:] = 1.0
    targets = make_targets("class", None, [0, 0], ["in", "out"], name="in")
    kwargs = {"removal_fractions": (0.15, 0.5), "seed": 0}
    bn_before = model.bn.running_mean.clone()
    r_good = deletion_report(model, x, good, targets, **kwargs)
    r_bad = deletion_report(model, x, bad, targets, **kwargs)
    assert model.training  # previous mode restored
    assert torch.equal(model.bn.running_mean, bn_before)  # ran in eval mode
    assert r_good["score_before"] == pytest.approx(108.0)
    # Removing the pixels the good map points at destroys the evidence...
    assert r_good["road_morf_15"] < -50.0
    assert r_bad["road_morf_15"] > -20.0
    # ...removing its least relevant pixels keeps it.
    assert abs(r_good["road_lerf_50"]) < abs(r_bad["road_lerf_50"])
    assert r_good["road_combined"] > r_bad["road_combined"]
    assert r_good["confidence_change"] == pytest.approx(0.0, abs=1e-4)
    assert r_bad["confidence_drop"] == pytest.approx(108.0)
    assert r_good == deletion_report(model, x, good, targets, **kwargs)  # seeded
    assert set(r_good) >= {"road_morf_50", "road_lerf_15", "n_images", "confidence_increase_rate"}


def test_deletion_report_on_cnn_and_errors(images: torch.Tensor) -> None:
    model = _net()
    targets = make_targets("predicted", model(images), None, EXPRESSIONS, softmax=True)
    cams = compute_cam_batch(model, model[6], images, targets, "gradcam").cams
    report = deletion_report(model, images[:2], cams[:2], targets[:2], removal_fractions=(0.5,))
    assert all(math.isfinite(v) for v in report.values())
    assert 0.0 < report["score_before"] < 1.0  # probabilities
    no_road = deletion_report(model, images[:2], cams[:2], targets[:2], road=False)
    assert "road_combined" not in no_road
    with pytest.raises(ValueError, match="same B, H, W"):
        deletion_report(model, images, cams[:, :8], targets)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        deletion_report(model, images, cams, targets, removal_fractions=(1.0,))


# ------------------------------------------------------------------------------ summary


def test_summary_is_json_and_flattens() -> None:
    summary = faithfulness_summary(
        localization={"mean_lift": np.float32(1.5), "per_class": {"happy": {"lift": math.nan}}},
        sanity={"spearman_mean": 0.2, "spearman_per_image": np.array([0.1, 0.3]), "passed": True},
        deletion={"road_combined": 0.1, "n_images": np.int64(4)},
        meta={"method": "gradcam", "layer": "block5"},
    )
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["localization"]["per_class"]["happy"]["lift"] is None
    assert summary["sanity"]["spearman_per_image"] == [pytest.approx(0.1), pytest.approx(0.3)]
    metrics = flatten_metrics(summary, sep=".", bools=True, lists=False)
    assert metrics == {
        "localization.mean_lift": 1.5,
        "sanity.spearman_mean": 0.2,
        "sanity.passed": 1.0,
        "deletion.road_combined": 0.1,
        "deletion.n_images": 4.0,
    }
    assert "deletion" not in faithfulness_summary(sanity={"a": 1})
