"""VGG16 builder: shapes, prefix/suffix split, weights policy, freeze policy, export."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from facelens.errors import WeightsUnavailable
from facelens.models.build import build_model
from facelens.models.export import export_model, load_exported
from facelens.models.layers import default_cam_layer, resolve_cam_layer
from facelens.models.meta import ModelMeta
from facelens.models.norm import DEFAULT_NORM, IMAGENET_NORM, norm_stats
from facelens.models.params import ModelParams
from facelens.models.vgg import FaceVGG, apply_freeze, vgg16_features
from facelens.models.weights import resolve_weights, weights_file


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and no downloads."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("FACELENS_OFFLINE", "1")
    return tmp_path / "hub"


def _torchvision_features_state(batch_norm: bool, seed: int = 1) -> dict[str, torch.Tensor]:
    """The ``features.*`` part of a torchvision VGG state dict, randomly initialised."""
    torch.manual_seed(seed)
    feats = make_layers(cfgs["D"], batch_norm=batch_norm)
    for m in feats.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight)
            m.running_mean.uniform_()
    return {f"features.{k}": v for k, v in feats.state_dict().items()}


def _meta(model: FaceVGG, names: tuple[str, ...]) -> ModelMeta:
    return ModelMeta.for_model(
        model, task="expression", output_names=names, input_size=32, weights_source="none"
    )


@pytest.mark.parametrize("batch_norm", [False, True])
def test_features_are_torchvisions_layer_for_layer(batch_norm: bool) -> None:
    """The torchvision-free rebuild has torchvision's layers, keys and (seeded) initial values."""
    torch.manual_seed(7)
    ours = vgg16_features(batch_norm)
    torch.manual_seed(7)
    theirs = make_layers(cfgs["D"], batch_norm=batch_norm)
    assert repr(ours) == repr(theirs)
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(ref)
    for key, value in ref.items():
        assert torch.equal(mine[key], value), key


@pytest.mark.parametrize(
    ("arch", "head", "dim"), [("vgg16_bn", "pooled", 512), ("vgg16", "classifier", 4096)]
)
def test_shapes_and_prefix_split(arch: str, head: str, dim: int) -> None:
    torch.manual_seed(0)
    model = FaceVGG(arch, num_outputs=5, head=head, dropout=0.2).eval()  # type: ignore[arg-type]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        assert full.shape == (2, 5)
        assert model.embed(x).shape == (2, dim)
        assert model.forward_prefix(x, 4).shape == (2, 512, 2, 2)
        for k in range(6):
            torch.testing.assert_close(model.forward_from(model.forward_prefix(x, k), k), full)
    with pytest.raises(ValueError, match=r"0\.\.5"):
        model.forward_prefix(x, 6)


def test_gradcam_layers_are_last_relu_of_each_block() -> None:
    model = FaceVGG("vgg16_bn", num_outputs=3)
    layers = model.gradcam_layers()
    assert list(layers) == ["block1", "block2", "block3", "block4", "block5"]
    for b, (_, layer) in enumerate(layers.items()):
        assert isinstance(layer, nn.ReLU) and not layer.inplace
        assert layer is model.blocks[b][-2]  # just before the block's MaxPool


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="arch must be one of"):
        FaceVGG("resnet", num_outputs=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="head"):
        FaceVGG("vgg16", num_outputs=3, head="mlp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra"):
        ModelParams(arch="vgg16", wieghts="none")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="input_size"):
        ModelParams(input_size=16)


def test_weights_none(hub_dir: Path) -> None:
    assert resolve_weights("vgg16_bn", "none") == (None, "none")
    model, source = build_model(ModelParams(weights="none"), num_outputs=7, seed=3)
    again, _ = build_model(ModelParams(weights="none"), num_outputs=7, seed=3)
    assert source == "none"
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # seeded init is reproducible


def test_imagenet_from_local_hub_cache(hub_dir: Path) -> None:
    target = weights_file("vgg16_bn")
    assert target == hub_dir / "checkpoints" / "vgg16_bn-6c64b313.pth"
    target.parent.mkdir(parents=True)
    state = _torchvision_features_state(batch_norm=True)
    torch.save(state, target)
    loaded, source = resolve_weights("vgg16_bn", "imagenet")
    assert source == "imagenet" and loaded is not None
    model, source = build_model(ModelParams(arch="vgg16_bn", weights="auto"), num_outputs=7)
    assert source == "imagenet"
    # torchvision features.0 -> blocks.0.0, features.44 does not exist, features.41 -> blocks.4.7
    assert torch.equal(model.blocks[0][0].weight, state["features.0.weight"])
    assert torch.equal(model.blocks[4][7].running_mean, state["features.41.running_mean"])
    assert norm_stats(source) == IMAGENET_NORM


def test_auto_without_weights_warns_and_falls_back(hub_dir: Path) -> None:
    with pytest.warns(UserWarning, match="random-fallback"):
        state, source = resolve_weights("vgg16", "auto")
    assert state is None and source == "random-fallback"
    assert norm_stats(source) == DEFAULT_NORM


def test_auto_tries_imagenet_then_the_pretrained_backbone_then_random(
    hub_dir: Path, tmp_path: Path
) -> None:
    """``weights: auto`` resolves ImageNet when present, else the ``pretrain`` stage's
    backbone, else random initialisation; each fallback warns and names what it used."""
    pre = tmp_path / "pretrained"
    pre.mkdir()
    with pytest.warns(
        UserWarning, match=r"(?s)No SynthFACS-pretrained backbone at .*random-fallback"
    ):
        assert resolve_weights("vgg16_bn", "auto", pre) == (None, "random-fallback")
    torch.manual_seed(1)
    src = FaceVGG("vgg16_bn", num_outputs=5)
    backbone = {k: v for k, v in src.state_dict().items() if k.startswith("blocks.")}
    torch.save(backbone, pre / "vgg16_bn.pt")
    with pytest.warns(UserWarning, match="weights: auto -> the SynthFACS-pretrained backbone"):
        _, source = resolve_weights("vgg16_bn", "auto", pre)
    label = rf"pretrained:{re.escape(pre.as_posix())}/vgg16_bn\.pt#sha256:[0-9a-f]{{12}}"
    assert re.fullmatch(label, source)
    assert norm_stats(source) == DEFAULT_NORM  # pretraining normalises like random init
    with pytest.warns(UserWarning, match="SynthFACS-pretrained backbone"):
        model, built = build_model(ModelParams(pretrained=str(pre)), num_outputs=7)
    assert built == source
    assert torch.equal(model.blocks[3][0].weight, src.blocks[3][0].weight)
    assert resolve_weights("vgg16_bn", "pretrained", pre)[1] == source
    with pytest.raises(WeightsUnavailable, match="dvc repro pretrain"):
        resolve_weights("vgg16", "pretrained", pre)  # only vgg16_bn was pretrained
    target = weights_file("vgg16_bn")
    target.parent.mkdir(parents=True)
    torch.save(_torchvision_features_state(batch_norm=True), target)
    assert resolve_weights("vgg16_bn", "auto", pre)[1] == "imagenet"  # ImageNet first


def test_imagenet_without_weights_raises_with_path(hub_dir: Path) -> None:
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights("vgg16", "imagenet")
    msg = str(info.value)
    assert str(hub_dir / "checkpoints" / "vgg16-397923af.pth") in msg
    assert "FACELENS_OFFLINE=1" in msg and "weights: none" in msg


def test_weights_from_file(tmp_path: Path, hub_dir: Path) -> None:
    torch.manual_seed(0)
    src = FaceVGG("vgg16", num_outputs=7)
    path = tmp_path / "backbone.pt"
    torch.save(src.state_dict(), path)
    model, source = build_model(ModelParams(arch="vgg16", weights=str(path)), num_outputs=7)
    assert re.fullmatch(rf"file:{re.escape(str(path.resolve()))}#sha256:[0-9a-f]{{12}}", source)
    for a, b in zip(model.state_dict().values(), src.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # same head width: head loads too
    other, _ = build_model(ModelParams(arch="vgg16", weights=str(path)), num_outputs=3)
    assert torch.equal(other.blocks[2][0].weight, src.blocks[2][0].weight)
    assert other.classifier[-1].out_features == 3  # different width: head skipped
    tv = tmp_path / "tv.pth"
    torch.save(_torchvision_features_state(batch_norm=False), tv)
    assert resolve_weights("vgg16", str(tv))[1].startswith("file:")


def test_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="is not a file"):
        resolve_weights("vgg16", str(tmp_path / "missing.pt"))
    path = tmp_path / "plain.pt"
    torch.save(FaceVGG("vgg16", num_outputs=2).state_dict(), path)
    with pytest.raises(WeightsUnavailable, match=r"missing key\(s\).*blocks\.0\.1"):
        resolve_weights("vgg16_bn", str(path))  # BN keys missing
    junk = tmp_path / "junk.pt"
    torch.save({"a": 1}, junk)
    with pytest.raises(WeightsUnavailable, match="state dict"):
        resolve_weights("vgg16", str(junk))


def test_apply_freeze_requires_grad_and_bn_eval() -> None:
    model = FaceVGG("vgg16_bn", num_outputs=3)
    assert apply_freeze(model, 2) == 3
    model.train()
    for b, block in enumerate(model.blocks):
        frozen = b < 3
        assert all(p.requires_grad != frozen for p in block.parameters())
        bns = [m for m in block if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(bn.training != frozen for bn in bns)
    assert all(p.requires_grad for p in model.classifier.parameters())
    # frozen BN statistics do not move in train mode
    before = model.blocks[0][1].running_mean.clone()
    model(torch.randn(2, 3, 32, 32) + 3)
    assert torch.equal(model.blocks[0][1].running_mean, before)
    assert apply_freeze(model, 5) == 0
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"0\.\.5"):
        apply_freeze(model, 6)


def test_meta_json_round_trip_and_validation() -> None:
    meta = _meta(FaceVGG("vgg16", num_outputs=2), ("a", "b"))
    assert ModelMeta.from_json(meta.to_json()) == meta
    with pytest.raises(ValueError, match="unknown ModelMeta field"):
        ModelMeta.from_json(meta.to_json().replace('"task"', '"tsk"'))
    with pytest.raises(ValueError, match="one name per output"):
        ModelMeta(**{**meta.__dict__, "output_names": ("a",)})


def test_export_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FaceVGG("vgg16_bn", num_outputs=2, head="pooled").to(memory_format=torch.channels_last)
    model.eval()
    meta = _meta(model, ("x", "y"))
    export_model(model, meta, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["meta.json", "state_dict.pt"]
    loaded, meta2 = load_exported(tmp_path / "m")
    assert meta2 == meta and not loaded.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nothing"))):
        load_exported(tmp_path / "nothing")
    with pytest.raises(ValueError, match="num_outputs"):
        export_model(model, _meta(FaceVGG("vgg16_bn", num_outputs=3), ("a", "b", "c")), tmp_path)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(32, "block4"), (64, "block4"), (96, "block4"), (112, "block5"), (224, "block5")],
)
def test_auto_cam_layer_needs_block5_maps_of_at_least_7x7(size: int, expected: str) -> None:
    assert default_cam_layer(size) == expected
    assert resolve_cam_layer("auto", size) == expected
    assert resolve_cam_layer("block3", size) == "block3"  # a named layer is kept
