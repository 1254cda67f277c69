"""Frozen-prefix activation cache: the same small Optuna study tuned with and without it.

For each ``--blocks`` value (trainable trailing blocks; the rest of VGG16-BN is frozen) the
same seeded study runs twice through the real ``tune`` stage core (``facelens.stages.tune.run``) (MLflow nested runs included):
once training on cached activations of the frozen prefix, once recomputing the prefix every
step. Printed per study: trials per hour of each arm with the one-off cache build included and
in steady state (trials after the first), their ratios, the best validation metric of each
(with ``--cache-dtype float32`` both arms train on the same numbers, so they must agree within
floating-point noise), and the ratio that convolution arithmetic alone allows:
``(prefix forward + 3 x suffix forward) / (3 x suffix forward)`` multiply-accumulates per image
(a training step costs about three forwards of the trained part).

No augmentation (augmenting trials bypass the cache by design). Offline the weights are random,
which does not change the cost; tuning on ImageNet weights freezes the same way.

Usage::

    python benchmarks/cache_speedup.py [--blocks 0 1] [--identities 60] [--trials 8]
        [--epochs 4] [--size 64] [--cache-dtype float32] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import optuna
import torch
from torch import nn

from facelens.config import parse_params
from facelens.data.manifest import data_version
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.models.build import build_model
from facelens.models.params import ModelParams
from facelens.stages import tune


def _params(identities: int, trials: int, epochs: int, size: int, blocks: int, root: Path) -> dict:
    return {
        "data": {"image_size": size, "synth": {"n_identities": identities}},
        "model": {"arch": "vgg16_bn", "weights": "none", "input_size": size},
        "train": {"trainable_blocks": blocks, "augment": 0.0},
        "tracking": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "bench-cache"},
        "tune": {
            "study_name": f"bench-cache-b{blocks}",
            "storage": None,  # set per arm below
            "n_trials": trials,
            "pruner": "none",
            "train_fraction": 1.0,
            "space": {
                "lr": {"low": 3e-4, "high": 3e-3, "log": True},
                "weight_decay": {"low": 1e-5, "high": 1e-3, "log": True},
                "optimizer": ["adamw"],
                "batch_size": [32, 64],
                "trainable_blocks": [blocks],
                "head": ["pooled"],
                "dropout": {"low": 0.0, "high": 0.5},
                "label_smoothing": {"low": 0.0, "high": 0.1},
                "augment": [0.0],
                "epochs": [epochs],
                "arch": ["vgg16_bn"],
            },
        },
    }


def conv_macs(size: int, blocks: int) -> tuple[float, float]:
    """Multiply-accumulates per image of the frozen prefix and of the trained suffix."""
    model, _ = build_model(
        ModelParams(arch="vgg16_bn", weights="none", input_size=size),
        num_outputs=7,
        head="pooled",
        trainable_blocks=blocks,
    )
    macs: list[float] = []

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs.append(float(out.shape[1] * out.shape[2] * out.shape[3] * k))
        elif isinstance(mod, nn.Linear):
            macs.append(float(mod.in_features * mod.out_features))

    per_block = []
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        model.eval()
        for b in range(5):
            macs.clear()
            x = model.blocks[b](x)
            per_block.append(sum(macs))
        macs.clear()
        model.classifier(torch.flatten(model.avgpool(x), 1))
        head = sum(macs)
    for h in handles:
        h.remove()
    k = 5 - blocks
    return sum(per_block[:k]), sum(per_block[k:]) + head


def _trial_seconds(storage: str) -> list[float]:
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.trials
        if t.datetime_complete is not None and t.datetime_start is not None
    ]


def run_study_arms(args: argparse.Namespace, blocks: int, root: Path) -> dict:
    raw = _params(args.identities, args.trials, args.epochs, args.size, blocks, root)
    params = parse_params(raw)
    prepared, splits = root / "prepared", root / "splits"
    if not (splits / "train.csv").is_file():
        prepare_dataset(params.data, prepared)
        split_prepared(prepared, splits, params.split)
    results: dict[str, dict] = {}
    for arm, use_cache in (("cached", True), ("uncached", False)):
        storage = f"sqlite:///{root}/optuna-b{blocks}-{arm}.db"
        arm_params = params.model_copy(
            update={"tune": params.tune.model_copy(update={"storage": storage})}
        )
        t0 = time.perf_counter()
        result = tune.run(
            arm_params,
            prepared,
            splits,
            cache_dir=root / f"cache-b{blocks}",  # empty: the build is part of the cached arm
            use_cache=use_cache,
            cache_dtype=args.cache_dtype,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        trial_s = _trial_seconds(storage)
        steady = trial_s[1:] or trial_s
        results[arm] = {
            "seconds": seconds,
            "trials": result.n_complete,
            "trial_seconds": trial_s,
            "trials_per_hour": 3600.0 * result.n_complete / seconds,
            "steady_trials_per_hour": 3600.0 * len(steady) / max(sum(steady), 1e-9),
            "best_value": result.best_value,
        }
    prefix, suffix = conv_macs(args.size, blocks)
    results["arithmetic_bound"] = (prefix + 3 * suffix) / (3 * suffix)
    results["study_name"] = tune.study_name(params, data_version(prepared))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--blocks",
        type=int,
        nargs="+",
        default=[0, 1],
        help="trainable trailing blocks per study: 0 = head only (blocks 1-5 cached), "
        "1 = block 5 + head (blocks 1-4 cached)",
    )
    ap.add_argument("--identities", type=int, default=60, help="SynthFACS identities (x7 images)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="image and input size (px)")
    ap.add_argument(
        "--cache-dtype",
        choices=("float16", "float32"),
        default="float32",
        help="float32: both arms see identical activations (exact comparison); "
        "float16 is what `dvc repro` uses (half the memory)",
    )
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    if any(not 0 <= b <= 4 for b in args.blocks):
        ap.error("--blocks values must be in 0..4 (5 trains everything: nothing to cache)")
    for name in ("identities", "trials", "epochs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if args.size < 32:
        ap.error(f"--size must be >= 32 (VGG16 halves it five times); got {args.size}")

    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.manual_seed(0)
    all_results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
        for blocks in args.blocks:
            res = run_study_arms(args, blocks, root)
            all_results[f"trainable_blocks={blocks}"] = res
            c, u = res["cached"], res["uncached"]
            print(
                f"\nstudy: trainable_blocks={blocks} ({5 - blocks} frozen blocks cached), "
                f"{args.trials} trials x {args.epochs} epochs, {args.identities * 7} images "
                f"at {args.size} px, cache {args.cache_dtype}"
            )
            print(f"  {'arm':<9} {'seconds':>8} {'trials/h':>9} {'steady/h':>9} {'best val':>9}")
            for arm, r in (("cached", c), ("uncached", u)):
                print(
                    f"  {arm:<9} {r['seconds']:8.1f} {r['trials_per_hour']:9.1f} "
                    f"{r['steady_trials_per_hour']:9.1f} {r['best_value']:9.4f}"
                )
            res["ratio"] = c["trials_per_hour"] / u["trials_per_hour"]
            res["steady_ratio"] = c["steady_trials_per_hour"] / u["steady_trials_per_hour"]
            res["best_value_difference"] = abs(c["best_value"] - u["best_value"])
            print(
                f"  speed-up: {res['ratio']:.1f}x with the cache build, "
                f"{res['steady_ratio']:.1f}x steady state; "
                f"arithmetic bound {res['arithmetic_bound']:.1f}x; "
                f"best-value difference {res['best_value_difference']:.4f}"
            )
    if args.out:
        args.out.write_text(
            json.dumps(
                {"args": {**vars(args), "out": str(args.out)}, "studies": all_results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
