"""The project's own paths against the hardware: batched forward passes of ``predict``
(evaluate), the manifold embeddings and the served model, as img/s and as a share of the
matrix-multiply peak measured in the same run; and the training input pipeline (slice,
resize, augment, normalise) against the training step it feeds.

    python benchmarks/paths.py                          # 64, 112 and 224 px, fp32 + bf16
    python benchmarks/paths.py --sizes 224 --precisions fp32 --batch 8 32

Targets (issue 11): forward at 224 px >= 55% of the fp32 GEMM peak and >= 50% of the bf16
one; input pipeline >= 2x the training step. Nothing is asserted: figures vary with the
machine and its load; benchmarks/README.md records them with the command that made them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facelens.data.dataset import FaceDataset
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy, autocast
from facelens.manifold.features import manifold_features
from facelens.models.build import build_model
from facelens.models.export import export_model, load_exported
from facelens.models.meta import ModelMeta
from facelens.models.norm import DEFAULT_NORM
from facelens.models.params import ModelParams
from facelens.training.loop import collect_outputs
from facelens.training.sources import ImageSource
from throughput import _timed, forward_flops, measured_peaks, train_rate

_EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _exported(size: int, root: Path, device: torch.device):
    """A model exported and loaded back the way evaluate, explain and manifold load it."""
    model, source = build_model(
        ModelParams(arch="vgg16_bn", weights="none", input_size=size), num_outputs=7, seed=0
    )
    meta = ModelMeta.for_model(
        model, task="expression", output_names=_EXPRESSIONS, input_size=size, weights_source=source
    )
    export_model(model, meta, root / f"model{size}")
    return load_exported(root / f"model{size}", device)


def _images(n: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _dataset(images: torch.Tensor, augment: float) -> FaceDataset:
    size = images.shape[-1]
    tf = make_transform(
        size,
        train=augment > 0,
        augment=augment,
        norm_mean=DEFAULT_NORM[0],
        norm_std=DEFAULT_NORM[1],
    )
    labels = torch.arange(len(images)) % 7
    return FaceDataset.from_tensors(images, labels, "expression", transform=tf)


def path_rates(size, batch, precision, device, root, min_s) -> dict[str, float]:
    """img/s of predict (evaluate), the manifold embeddings and the served model's forward."""
    model, meta = _exported(size, root, device)
    images = _images(batch * 2, size)
    ds = _dataset(images, 0.0)
    policy = DevicePolicy(device, precision)  # type: ignore[arg-type]
    n = len(images)
    rates = {
        "predict": n
        / _timed(
            lambda: collect_outputs(model, ImageSource(ds), batch, policy), device, min_s, warmup=1
        ),
    }
    feats_ds = _dataset(images, 0.0)

    def embed() -> None:
        with autocast(device, precision):  # type: ignore[arg-type]
            manifold_features(model, meta, feats_ds, batch_size=batch)

    rates["embed"] = n / _timed(embed, device, min_s, warmup=1)
    served = _served(root / f"model{size}", batch)
    if served is not None:
        hwc = [im.permute(1, 2, 0).numpy() for im in images]

        def serve() -> None:
            with autocast(device, precision):  # type: ignore[arg-type]
                served._infer(hwc)

        rates["serve"] = n / _timed(serve, device, min_s, warmup=1)
    return rates


def _served(model_dir: Path, batch: int):
    """The pyfunc as ``mlflow models serve`` loads it (``None`` without MLflow installed)."""
    try:
        import mlflow.pyfunc

        from facelens.serving.pyfunc import FaceLensModel
    except ImportError:  # the GPU machine has no MLflow
        return None
    served = FaceLensModel()
    ctx = mlflow.pyfunc.PythonModelContext({"model_dir": str(model_dir)}, {"batch_size": batch})
    served.load_context(ctx)
    return served


def pipeline_rate(size, batch, device, min_s) -> float:
    """img/s of the training input pipeline: a shuffled batch sliced from the staged uint8
    images, augmented and normalised on ``device`` (what ``fit`` does before each step)."""
    ds = _dataset(_images(512, size), 0.5)
    src = ImageSource(ds, device)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(ds), generator=gen)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % (len(ds) // batch)
        src.batch(order[i * batch : (i + 1) * batch], gen)
        state["i"] += 1

    return batch / _timed(step, device, min_s, warmup=2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="forward batch sizes")
    ap.add_argument("--train-batch", type=int, default=64, help="batch of the pipeline check")
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32 + bf16")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--no-pipeline", action="store_true", help="skip the input pipeline check")
    ap.add_argument("--only-pipeline", action="store_true", help="skip the forward paths")
    args = ap.parse_args(argv)
    device = DevicePolicy.resolve(args.device).device
    precisions = args.precisions or ["fp32", "bf16"]
    peaks = measured_peaks(device, precisions, args.gemm_n, args.min_seconds)
    print(f"{'path':8} {'size':>4} {'batch':>5} {'prec':>5} {'img/s':>8} {'% peak':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            probe, _ = build_model(
                ModelParams(arch="vgg16_bn", weights="none", input_size=size), num_outputs=7
            )
            flops = forward_flops(probe.to(device), size, device)
            for batch in [] if args.only_pipeline else args.batch:
                for p in precisions:
                    rates = path_rates(size, batch, p, device, Path(tmp), args.min_seconds)
                    for path, rate in rates.items():
                        share = 100 * rate * flops / peaks[p]
                        print(
                            f"{path:8} {size:>4} {batch:>5} {p:>5} {rate:>8.1f} {share:>6.1f}%",
                            flush=True,
                        )
            if not args.no_pipeline:
                pipe = pipeline_rate(size, args.train_batch, device, args.min_seconds)
                model, _ = build_model(
                    ModelParams(arch="vgg16_bn", weights="none", input_size=size), num_outputs=7
                )
                model = model.to(device, memory_format=torch.channels_last)
                best = max(
                    train_rate(model, size, args.train_batch, device, p, args.min_seconds)
                    for p in precisions
                )
                print(
                    f"pipeline {size:>4} {args.train_batch:>5}   aug {pipe:>8.1f} img/s = "
                    f"{pipe / best:.1f}x the fastest training step ({best:.1f} img/s)",
                    flush=True,
                )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
