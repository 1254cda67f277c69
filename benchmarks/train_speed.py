"""Training throughput of the facelens loop on this machine (random images, no data needed).

Measures images/second of one training epoch (after a warm-up epoch) for:

- ``full``: VGG16-BN, all blocks trainable, augmentation on (the default recipe);
- ``cached``: block 5 + head trained on cached block-4 activations (``trainable_blocks=1``,
  ``augment=0``); the one-off activation computation is timed separately;
- ``tail3``: blocks 3-5 + head on cached block-2 activations (the paper's setting in the
  README fine-tunes this deep).

``--arch``, ``--precision`` and ``--compile`` set the model and the ``train`` params of the same
names (compilation happens in the warm-up epoch, reported as ``compile_s``).

Usage: ``python benchmarks/train_speed.py --n 256 --sizes 64 112 [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from facelens.data.dataset import FaceDataset
from facelens.data.transforms import make_transform
from facelens.models.build import build_model
from facelens.models.cache import ActivationCache
from facelens.models.norm import DEFAULT_NORM
from facelens.models.params import ModelParams
from facelens.training.fit import fit
from facelens.training.params import TrainParams

__all__ = ["measure"]


def _dataset(n: int, size: int, augment: float) -> FaceDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    tf = make_transform(
        size, train=True, augment=augment, norm_mean=DEFAULT_NORM[0], norm_std=DEFAULT_NORM[1]
    )
    return FaceDataset.from_tensors(images, torch.arange(n) % 7, "expression", transform=tf)


_TRAINABLE = {"full": 5, "cached": 1, "tail3": 3}


def measure(
    mode: str,
    n: int,
    size: int,
    batch_size: int = 64,
    *,
    arch: str = "vgg16_bn",
    precision: str = "fp32",
    compile: bool = False,
) -> dict[str, Any]:
    """Train 2 epochs (the first is warm-up) and return the second epoch's throughput.

    Args:
        mode: ``full``, ``cached`` or ``tail3``.
        n: number of training images.
        size: input side in pixels.
        batch_size: training batch size.
        arch: ``vgg16_bn`` or ``vgg16``.
        precision: ``train.precision`` (``fp32``, ``bf16``, ``auto``).
        compile: ``train.compile``.
    """
    augment = 0.5 if mode == "full" else 0.0
    trainable = _TRAINABLE[mode]
    ds = _dataset(n, size, augment)
    model, _ = build_model(
        ModelParams(arch=arch, weights="none", input_size=size),
        num_outputs=7,
        trainable_blocks=trainable,
        seed=0,
    )
    params = TrainParams(
        epochs=2,
        batch_size=batch_size,
        augment=augment,
        trainable_blocks=trainable,
        precision=precision,
        compile=compile,
    )
    out: dict[str, Any] = {
        "mode": mode,
        "arch": arch,
        "precision": precision,
        "compile": compile,
        "n": n,
        "input_size": size,
        "batch_size": batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        cache = ActivationCache(Path(tmp)) if mode != "full" else None
        if cache is not None:
            t0 = time.perf_counter()
            cache.get_or_compute(
                model, 5 - trainable, ds, key_fields={"split": "train", "bench": True}
            )
            out["cache_compute_img_per_s"] = round(n / (time.perf_counter() - t0), 1)
        history = fit(
            model,
            ds,
            None,
            params,
            "expression",
            cache=cache,
            cache_key_fields={"bench": True},
            progress=False,
        )
    out["used_cache"] = history.used_cache
    out["train_img_per_s"] = round(history.epochs[-1].metrics["train_img_per_s"], 1)
    warm, steady = (e.metrics["train_img_per_s"] for e in history.epochs)
    out["compile_s"] = round(n / warm - n / steady, 1) if compile else 0.0
    return out


def main() -> None:
    """Parse arguments, run the measurements, print (and optionally save) JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    parser.add_argument("--modes", nargs="+", default=["full", "cached"], choices=_TRAINABLE)
    parser.add_argument("--arch", default="vgg16_bn", choices=["vgg16_bn", "vgg16"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--compile", nargs="+", type=int, default=[0], help="0 and/or 1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "runs": [
            measure(m, args.n, s, args.batch_size, arch=args.arch, precision=p, compile=bool(c))
            for m in args.modes
            for s in args.sizes
            for p in args.precisions
            for c in args.compile
        ],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
