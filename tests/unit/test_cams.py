"""Tests of facelens.explain.cams: methods, targets, hook release, overlays, probe set, figures."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.models import vgg16_bn

from facelens.constants import ATTRIBUTES, EXPRESSIONS
from facelens.errors import CamError
from facelens.explain.cams.compute import compute_cam_batch
from facelens.explain.cams.figures import attribute_grid, cam_grid, method_grid
from facelens.explain.cams.guided import guided_saliency, normalise_maps
from facelens.explain.cams.methods import METHODS, resolve_method
from facelens.explain.cams.overlays import overlay
from facelens.explain.cams.probes import probe_set
from facelens.explain.cams.targets import SignedOutputTarget, make_targets

SIZE = 32


def _tiny_cnn(n_out: int = 7, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),  # index 4: target layer (8x8 map at 32 px)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, n_out),
    )


@pytest.fixture
def model() -> nn.Sequential:
    return _tiny_cnn()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
        for m in model.modules()
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_shape_and_range(
    model: nn.Sequential, images: torch.Tensor, method: str
) -> None:
    batch = compute_cam_batch(model, model[4], images, None, method, batch_size=3)
    assert batch.method == method
    assert batch.cams.shape == (4, SIZE, SIZE)
    assert batch.cams.dtype == np.float32
    assert batch.cams.min() >= 0.0
    assert batch.cams.max() <= 1.0
    assert batch.cams.max() > 0.5  # normalised, not all zero
    assert batch.raw.shape == (4, SIZE, SIZE)
    assert np.isfinite(batch.raw).all()
    assert _no_hooks(model)


def test_regression_target_shape_range_and_sign() -> None:
    net = _tiny_cnn(n_out=len(ATTRIBUTES), seed=3)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    outputs = net(x)
    name = ATTRIBUTES[5]
    up = make_targets("attribute", outputs, None, ATTRIBUTES, name=name, sign=1)
    down = make_targets("attribute", outputs, None, ATTRIBUTES, name=name, sign=-1)
    assert all(isinstance(t, SignedOutputTarget) and t.index == 5 for t in up)
    torch.testing.assert_close(down[0](outputs[0]), -outputs[0, 5])
    plus = compute_cam_batch(net, net[4], x, up, "gradcam")
    minus = compute_cam_batch(net, net[4], x, down, "gradcam")
    for batch in (plus, minus):
        assert batch.cams.shape == (3, SIZE, SIZE)
        assert batch.cams.min() >= 0.0 and batch.cams.max() <= 1.0
    # Grad-CAM is linear in the target: the raw map of -y is exactly minus the map of +y.
    np.testing.assert_allclose(minus.raw, -plus.raw, rtol=1e-5, atol=1e-7)
    assert not np.allclose(plus.cams, minus.cams)


def test_vgg16_bn_block_layer_at_64px() -> None:
    torch.manual_seed(0)
    net = vgg16_bn(weights=None, num_classes=len(EXPRESSIONS))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    layer = net.features[42]  # last ReLU of block 5 (4x4 at 64 px)
    for method in ("gradcam", "eigencam"):
        cams = compute_cam_batch(net, layer, x, None, method).cams
        assert cams.shape == (2, 64, 64)
        assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert _no_hooks(net)


def test_model_left_in_eval_mode_with_gradients_untouched(
    model: nn.Sequential, images: torch.Tensor
) -> None:
    model.train()
    marker = torch.full_like(model[0].weight, 7.0)
    model[0].weight.grad = marker
    compute_cam_batch(model, model[4], images, None, "gradcam")
    assert not model.training
    assert model[0].weight.grad is marker
    assert model[3].weight.grad is None


def test_hooks_released_on_exception(model: nn.Sequential, images: torch.Tensor) -> None:
    def failing(_: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compute_cam_batch(model, model[4], images, [failing] * 4, "gradcam")
    assert not model[4]._forward_hooks and not model[4]._backward_hooks
    assert _no_hooks(model)


def test_index_error_is_raised_not_swallowed(model: nn.Sequential, images: torch.Tensor) -> None:
    # pytorch_grad_cam's __exit__ swallows IndexError; facelens must not return garbage.
    targets = [ClassifierOutputTarget(99)] * 4
    with pytest.raises(CamError, match="IndexError"):
        compute_cam_batch(model, model[4], images, targets, "gradcam")
    assert _no_hooks(model)


def test_frozen_model_under_no_grad(images: torch.Tensor) -> None:
    net = _tiny_cnn()
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        cams = compute_cam_batch(net, net[4], images, None, "gradcam").cams
    assert cams.shape == (4, SIZE, SIZE) and cams.max() > 0.5
    assert all(p.grad is None for p in net.parameters())


def test_batching_does_not_change_results(model: nn.Sequential, images: torch.Tensor) -> None:
    one = compute_cam_batch(model, model[4], images, None, "gradcam++", batch_size=1)
    all_ = compute_cam_batch(model, model[4], images, None, "gradcam++", batch_size=4)
    np.testing.assert_allclose(one.cams, all_.cams, atol=1e-5)
    np.testing.assert_allclose(one.raw, all_.raw, rtol=1e-4, atol=1e-7)


def test_predicted_targets_match_default(model: nn.Sequential, images: torch.Tensor) -> None:
    outputs = model(images)
    targets = make_targets("predicted", outputs, None, EXPRESSIONS)
    assert [t.category for t in targets] == outputs.argmax(1).tolist()
    np.testing.assert_allclose(
        compute_cam_batch(model, model[4], images, targets).cams,
        compute_cam_batch(model, model[4], images).cams,
    )
    other = make_targets("class", outputs, None, EXPRESSIONS, name="disgust")
    assert [t.category for t in other] == [1] * 4
    true = make_targets("true", None, [0, 3, 6, 2], EXPRESSIONS)
    assert [t.category for t in true] == [0, 3, 6, 2]
    soft = make_targets("true", None, [3], EXPRESSIONS, softmax=True)
    probs = torch.softmax(outputs[0], -1)
    torch.testing.assert_close(soft[0](outputs[0]), probs[3])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "nope"}, "Unknown target kind"),
        ({"kind": "class", "name": "bored"}, "needs name="),
        ({"kind": "true", "labels": [0, 7]}, "class indices"),
        ({"kind": "true", "labels": [0, float("nan")]}, "class indices"),
        ({"kind": "predicted", "outputs": None}, "needs the model outputs"),
        ({"kind": "attribute", "name": "happy", "sign": 2}, "sign"),
        ({"kind": "attribute", "name": "happy", "softmax": True}, "softmax"),
    ],
)
def test_make_targets_errors(kwargs: dict, match: str) -> None:
    args = {"outputs": torch.zeros(2, 7), "labels": None, "names": EXPRESSIONS} | kwargs
    with pytest.raises(ValueError, match=match):
        make_targets(**args)


def test_argument_errors(model: nn.Sequential, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="Unknown CAM method"):
        compute_cam_batch(model, model[4], images, method="gradcam3")
    with pytest.raises(ValueError, match="targets for 4 images"):
        compute_cam_batch(model, model[4], images, make_targets("true", None, [0], EXPRESSIONS))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        compute_cam_batch(model, model[4], images[:, :1])
    with pytest.raises(ValueError, match="not a submodule"):
        compute_cam_batch(model, nn.ReLU(), images)
    with pytest.raises(ValueError, match="max_scorecam_images"):
        compute_cam_batch(model, model[4], images, method="scorecam", max_scorecam_images=2)
    assert resolve_method("Grad-CAM++") == "gradcam++"
    assert resolve_method("gradcampp") == "gradcam++"


def test_overlay() -> None:
    image = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    cam = np.zeros((SIZE, SIZE), dtype=np.float32)
    cam[:8] = 1.0
    out = overlay(image, cam)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0, 0], out[-1, -1])  # hot vs cold pixel
    assert overlay(image[..., 0], cam).shape == (SIZE, SIZE, 3)  # grey accepted
    with pytest.raises(ValueError, match="differs from image"):
        overlay(image, cam[:-1])
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), cam)


def _rows(n_per_class: int = 6) -> pd.DataFrame:
    labels = [c for c in range(len(EXPRESSIONS)) for _ in range(n_per_class)]
    ids = [f"{i:05d}" for i in range(len(labels))]
    return pd.DataFrame({"id": ids, "file": [f"images/{i}.png" for i in ids], "label": labels})


def test_probe_set_deterministic_and_order_free() -> None:
    rows = _rows()
    before = rows.copy()
    a = probe_set(rows, per_class=2, seed=7)
    b = probe_set(rows.sample(frac=1.0, random_state=3), per_class=2, seed=7)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(rows, before)  # input untouched
    assert list(a.columns) == list(rows.columns)
    assert a["label"].value_counts().to_dict() == dict.fromkeys(range(7), 2)
    assert a["label"].is_monotonic_increasing
    c = probe_set(rows, per_class=2, seed=8)
    assert set(a["id"]) != set(c["id"])


def test_probe_set_stable_when_other_classes_grow() -> None:
    rows = _rows()
    extra = pd.DataFrame({"id": ["x1", "x2", "x3"], "file": ["a", "b", "c"], "label": [0, 0, 0]})
    a = probe_set(rows, per_class=2, seed=1)
    b = probe_set(pd.concat([rows, extra], ignore_index=True), per_class=2, seed=1)
    pd.testing.assert_frame_equal(
        a[a["label"] != 0].reset_index(drop=True), b[b["label"] != 0].reset_index(drop=True)
    )


def test_probe_set_unlabelled_and_errors() -> None:
    rows = _rows().assign(label=np.nan)
    picked = probe_set(rows, per_class=5, seed=0)
    assert len(picked) == 5
    mixed = _rows().astype({"label": float})
    mixed.loc[:3, "label"] = np.nan
    assert probe_set(mixed, per_class=100, seed=0)["label"].notna().all()
    with pytest.raises(ValueError, match="unique"):
        probe_set(pd.concat([_rows(), _rows()]), per_class=1, seed=0)
    with pytest.raises(ValueError, match="lack column"):
        probe_set(_rows().drop(columns="label"), per_class=1, seed=0)


def _png_bytes(fig: Figure) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return len(buf.getvalue())


def test_figures() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    cams = rng.random((2, 16, 16)).astype(np.float32)
    fig = cam_grid(imgs, cams, [3, None], [3, 4], [0.9, 0.4], EXPRESSIONS, title="probe")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert fig.axes[0].get_title() == "true: happy"
    assert fig.axes[4].get_title() == "pred: sad (0.40)"
    assert _png_bytes(fig) > 0
    fig = method_grid(imgs[0], {"gradcam": cams[0], "eigencam": cams[1]})
    assert len(fig.axes) == 6
    fig = attribute_grid(imgs, {"happy +": cams, "happy -": cams}, {"happy +": [5.0, 6.5]})
    assert len(fig.axes) == 6 and fig.axes[1].get_title() == "happy + 5.00"
    with pytest.raises(ValueError, match="one cam"):
        cam_grid(imgs, cams[:1], None, [0, 1], [0.5, 0.5], EXPRESSIONS)


def test_methods_are_exactly_the_names_params_accept() -> None:
    from typing import get_args

    from facelens.explain.params import CamMethod

    assert list(METHODS) == list(get_args(CamMethod))


def test_guided_saliency_is_the_plain_gradient_without_relus(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * SIZE**2, 7))
    x = images.clone().requires_grad_(True)
    out = net(x)
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    plain = x.grad.abs().amax(dim=1).numpy()
    np.testing.assert_allclose(guided_saliency(net, images, None, 3), plain, rtol=1e-5, atol=1e-8)


def test_guided_backprop_blocks_negative_gradients(
    model: nn.Sequential, images: torch.Tensor
) -> None:
    # Through ReLUs the guided rule only lets positive gradients pass: it differs from the
    # plain gradient, and the ReLU modules themselves are left as they were (in-place too).
    model[1] = nn.ReLU(inplace=True)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    x = images.clone().requires_grad_(True)
    out = model(x)
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    plain = x.grad.abs().amax(dim=1).numpy()
    guided = guided_saliency(model, images, None, 4)
    assert guided.shape == (4, SIZE, SIZE) and (guided >= 0).all() and guided.max() > 0
    assert not np.allclose(guided, plain)
    assert [m for m in model.modules() if isinstance(m, nn.ReLU)] == relus
    assert model[1].inplace and _no_hooks(model)


def test_guided_gradcam_is_gradcam_times_guided_saliency(
    model: nn.Sequential, images: torch.Tensor
) -> None:
    marker = torch.full_like(model[0].weight, 7.0)
    model[0].weight.grad = marker
    grad = compute_cam_batch(model, model[4], images, None, "gradcam")
    guided = compute_cam_batch(model, model[4], images, None, "guided-gradcam")
    saliency = guided_saliency(model, images, None, 4)
    assert guided.method == "guidedgradcam"
    np.testing.assert_allclose(guided.cams, normalise_maps(grad.cams * saliency), atol=1e-5)
    np.testing.assert_allclose(guided.raw, grad.raw * saliency, rtol=1e-5, atol=1e-8)
    assert guided.cams.reshape(4, -1).max(1) == pytest.approx(1.0, abs=1e-4)
    assert model[0].weight.grad is marker and model[3].weight.grad is None
    assert _no_hooks(model)


def test_guided_gradcam_signed_targets_and_hooks_released_on_error(images: torch.Tensor) -> None:
    net = _tiny_cnn(n_out=len(ATTRIBUTES), seed=3)
    outputs = net(images)
    up = make_targets("attribute", outputs, None, ATTRIBUTES, name=ATTRIBUTES[5], sign=1)
    down = make_targets("attribute", outputs, None, ATTRIBUTES, name=ATTRIBUTES[5], sign=-1)
    plus = compute_cam_batch(net, net[4], images, up, "guidedgradcam")
    minus = compute_cam_batch(net, net[4], images, down, "guidedgradcam")
    assert not np.allclose(plus.cams, minus.cams)

    def failing(_: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        guided_saliency(net, images, [failing] * 4, 2)
    assert _no_hooks(net)


def test_tile_and_chart_image_keys() -> None:
    from facelens.explain.chart_images import cam_image_key, tile

    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    out = tile([[red, red], [red]], min_cell=96)
    assert out.shape == (2 * 96 + 2, 2 * 96 + 2, 3) and out.dtype == np.uint8
    assert (out[:96, :96, 0] == 255).all() and (out[96:98] == 255).all()  # white gap rows
    assert (out[98:, 98:] == 255).all()  # the missing cell stays white
    assert cam_image_key("gradcam++", "happy") == "cam/gradcampp/happy"
    assert cam_image_key("guidedgradcam", "emot:stable?") == "cam/guidedgradcam/emot_stable_"
    with pytest.raises(ValueError, match="at least one"):
        tile([])
