"""The project's own cores at a given input size on a given device, without DVC or MLflow:
SynthFACS generation, training (``facelens.training.fit``), batched prediction, Grad-CAM and
the manifold embeddings. Prints one line per figure.

    python benchmarks/gpu_cores.py --device cuda --size 224 --identities 40
    python benchmarks/gpu_cores.py --device cpu --size 64 --identities 10 --epochs 1   # smoke

Run by ``benchmarks/gpu_check.sh`` on a GPU machine; figures go to benchmarks/README.md with
the command that made them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facelens.constants import EXPRESSIONS
from facelens.data.dataset import FaceDataset
from facelens.data.synthfacs.generate import generate
from facelens.data.synthfacs.params import SynthParams
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy, device_tags
from facelens.explain.cams.compute import compute_cam_batch
from facelens.explain.cams.targets import SignedOutputTarget
from facelens.manifold.features import manifold_features
from facelens.models.build import build_model
from facelens.models.meta import ModelMeta
from facelens.models.norm import DEFAULT_NORM
from facelens.models.params import ModelParams
from facelens.training.evaluation import evaluate, predict
from facelens.training.fit import fit
from facelens.training.params import TrainParams


def _timed(label: str, n: int, fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"{label:34} {seconds:8.2f} s  {n / seconds:9.1f} img/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="fp32 | bf16 | fp16 | auto")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--identities", type=int, default=40, help="7 images each")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cams", type=int, default=64, help="images explained with Grad-CAM")
    args = ap.parse_args(argv)
    if min(args.size, args.identities, args.epochs, args.batch, args.cams) < 1:
        ap.error("sizes and counts must be positive")
    policy = DevicePolicy.resolve(args.device, args.precision)
    print(" | ".join(f"{k}={v}" for k, v in device_tags(policy).items()), flush=True)

    synth = SynthParams(n_identities=args.identities, expressions_per_identity=7, seed=0)
    data = _timed(
        "SynthFACS generation (CPU)", synth.n_identities * 7, lambda: generate(synth, args.size)
    )
    images = torch.from_numpy(np.stack([s.image for s in data.samples])).permute(0, 3, 1, 2)
    labels = torch.tensor([s.label for s in data.samples])
    n_val = len(labels) // 5
    tf = make_transform(
        args.size, train=True, augment=0.5, norm_mean=DEFAULT_NORM[0], norm_std=DEFAULT_NORM[1]
    )
    vt = make_transform(
        args.size, train=False, augment=0.0, norm_mean=DEFAULT_NORM[0], norm_std=DEFAULT_NORM[1]
    )
    train = FaceDataset.from_tensors(images[n_val:], labels[n_val:], "expression", transform=tf)
    val = FaceDataset.from_tensors(images[:n_val], labels[:n_val], "expression", transform=vt)

    model_params = ModelParams(arch="vgg16_bn", weights="none", input_size=args.size)
    model, source = build_model(model_params, num_outputs=len(EXPRESSIONS), seed=0)
    params = TrainParams(
        epochs=args.epochs, batch_size=args.batch, augment=0.5, precision=policy.precision
    )
    n_train = len(train) * args.epochs
    _timed(
        f"train {args.epochs} epochs ({policy.precision})",
        n_train,
        lambda: fit(model, train, val, params, "expression", progress=False, policy=policy),
    )
    report = evaluate(model, val, "expression")
    print(f"{'val macro-F1 / accuracy':34} {report['macro_f1']:.3f} / {report['accuracy']:.3f}")
    _timed("predict (fp32, batch 128)", len(val), lambda: predict(model, val))

    x = vt(images[: args.cams])
    targets = [SignedOutputTarget(int(i), 1) for i in labels[: args.cams]]
    layer = model.gradcam_layers()["block5"]
    _timed(
        "Grad-CAM (fp32)",
        len(x),
        lambda: compute_cam_batch(model, layer, x, targets, batch_size=32),
    )

    meta = ModelMeta.for_model(
        model,
        task="expression",
        output_names=list(EXPRESSIONS),
        input_size=args.size,
        weights_source=source,
        norm=DEFAULT_NORM,
    )
    plain = FaceDataset.from_tensors(images, labels, "expression")
    _timed("manifold embeddings", len(plain), lambda: manifold_features(model, meta, plain))
    if torch.cuda.is_available():
        print(f"{'peak GPU memory':34} {torch.cuda.max_memory_allocated() / 2**30:8.2f} GiB")


if __name__ == "__main__":
    main()
