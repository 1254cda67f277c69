"""Frozen-prefix activation cache: the same small Optuna study tuned with and without it.

Prints trials per hour for each (with the one-off cache build included, and in steady
state), their ratio, and the best validation metric of each (they must agree within noise:
both train exactly the same layers on exactly the same inputs).

The study freezes blocks 1-4 (``trainable_blocks: [1]``) and does not augment, as a tuning
run on ImageNet weights would; offline the weights are random, which does not change the cost.

Usage::

    python benchmarks/cache_speedup.py [--identities 60] [--trials 6] [--epochs 3] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from facelens.config import parse_params
from facelens.data.prepare import prepare_dataset
from facelens.data.split import split_prepared
from facelens.workflows import tune_study


def _params(identities: int, trials: int, epochs: int, size: int) -> dict:
    return {
        "data": {"image_size": size, "synth": {"n_identities": identities}},
        "model": {"arch": "vgg16_bn", "weights": "none", "input_size": size},
        "train": {"trainable_blocks": 1, "augment": 0.0},
        "tune": {
            "study_name": "bench-cache",
            "storage": None,  # in memory: each arm starts its own study
            "n_trials": trials,
            "pruner": "none",
            "space": {
                "lr": {"low": 3e-4, "high": 3e-3, "log": True},
                "weight_decay": {"low": 1e-5, "high": 1e-3, "log": True},
                "optimizer": ["adamw"],
                "batch_size": [32, 64],
                "trainable_blocks": [1],
                "head": ["pooled"],
                "dropout": {"low": 0.0, "high": 0.5},
                "label_smoothing": {"low": 0.0, "high": 0.1},
                "augment": [0.0],
                "epochs": [epochs],
                "arch": ["vgg16_bn"],
            },
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--identities", type=int, default=60, help="SynthFACS identities (x7 images)")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()

    params = parse_params(_params(args.identities, args.trials, args.epochs, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        prepared, splits = root / "prepared", root / "splits"
        prepare_dataset(params.data, prepared)
        split_prepared(prepared, splits, params.split)
        results = {}
        for arm, use_cache in (("cached", True), ("uncached", False)):
            cache_dir = root / "cache"
            t0 = time.perf_counter()
            result = tune_study(
                params, prepared, splits, cache_dir=cache_dir, use_cache=use_cache, progress=False
            )
            seconds = time.perf_counter() - t0
            results[arm] = {
                "seconds": seconds,
                "trials": result.n_complete,
                "trials_per_hour": 3600.0 * result.n_complete / seconds,
                "best_value": result.best_value,
            }
            print(
                f"{arm:>9}: {result.n_complete} trials in {seconds:7.1f} s "
                f"-> {results[arm]['trials_per_hour']:8.1f} trials/h, best val {result.best_value:.4f}"
            )
    ratio = results["cached"]["trials_per_hour"] / results["uncached"]["trials_per_hour"]
    diff = abs(results["cached"]["best_value"] - results["uncached"]["best_value"])
    print(f"speed-up (cache build included): {ratio:.1f}x; best-value difference {diff:.4f}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"args": vars(args) | {"out": str(args.out)}, "results": results, "ratio": ratio},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
