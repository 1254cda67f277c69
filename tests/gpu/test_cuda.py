"""CUDA paths: training on the GPU (bf16 / fp16 with its scaler), models and checkpoints that
load on the CPU, CAMs and embeddings on the GPU equal to the CPU's. Only torch, grad-cam and
facelens' own layers below ``tracking`` are imported, so ``benchmarks/gpu_check.sh`` runs this
file on a GPU machine that has no MLflow, DVC or Optuna. Without CUDA every test skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facelens.data.dataset import FaceDataset
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy, resolve_precision
from facelens.explain.cams.compute import compute_cam_batch
from facelens.explain.cams.targets import SignedOutputTarget
from facelens.models.build import build_model
from facelens.models.export import export_model, load_exported
from facelens.models.meta import ModelMeta
from facelens.models.params import ModelParams
from facelens.training.evaluation import predict
from facelens.training.fit import fit
from facelens.training.params import TrainParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SIZE = 32
NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _data(n: int = 24) -> tuple[FaceDataset, FaceDataset]:
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(n) % 2) * 3
    x = torch.randint(0, 100, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    x[y == 3, :, 8:24, 8:24] += 150
    tf = make_transform(SIZE, train=False, augment=0.0, norm_mean=NORM[0], norm_std=NORM[1])
    ds = FaceDataset.from_tensors(x, y, "expression", transform=tf)
    return ds, ds


def _model():
    params = ModelParams(arch="vgg16_bn", weights="none", input_size=SIZE)
    model, source = build_model(params, num_outputs=7, seed=0)
    return model, source


@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_trained_on_cuda_loads_and_predicts_on_the_cpu(tmp_path: Path, precision: str) -> None:
    train, val = _data()
    policy = DevicePolicy.resolve("cuda", precision)
    assert policy.precision == resolve_precision(precision, torch.device("cuda"))
    params = TrainParams(epochs=3, batch_size=8, augment=0.0, precision=precision)
    model, source = _model()
    history = fit(
        model,
        train,
        val,
        params,
        "expression",
        progress=False,
        policy=policy,
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert next(model.parameters()).is_cuda
    losses = [e.train_loss for e in history.epochs]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    on_gpu = predict(model, val)
    meta = ModelMeta.for_model(
        model,
        task="expression",
        output_names=[str(i) for i in range(7)],
        input_size=SIZE,
        weights_source=source,
        norm=NORM,
    )
    export_model(model, meta, tmp_path / "model")
    cpu_model, _ = load_exported(tmp_path / "model", "cpu")
    np.testing.assert_allclose(predict(cpu_model, val), on_gpu, atol=2e-3, rtol=1e-3)
    blob = torch.load(tmp_path / "ckpt" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in blob["model"].values())
    assert ("scaler" in blob) == policy.needs_scaler


def test_cams_on_cuda_match_the_cpu() -> None:
    model, _ = _model()
    model.eval()
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    targets = [SignedOutputTarget(i % 7, 1) for i in range(4)]
    layer = model.gradcam_layers()["block4"]
    on_cpu = compute_cam_batch(model, layer, x, targets).cams
    model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):  # CAMs stay fp32 regardless
        on_gpu = compute_cam_batch(model, model.gradcam_layers()["block4"], x, targets).cams
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3)
