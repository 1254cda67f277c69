"""Does ``train.precision: bf16`` (what ``auto`` picks on a CPU with bf16 units) keep the
default quality? Trains the train stage's recipe on the prepared SynthFACS split once per
(precision, seed) and scores the test split, printing the mean and spread of test macro-F1
(or mean r) and the training time of each precision.

    python benchmarks/precision_quality.py --prepared data/prepared --splits data/splits \\
        --best-params models/best_params.json --seeds 0 1 2

Without ``--best-params`` the base recipe of ``params.yaml`` trains. Nothing is asserted;
benchmarks/README.md records the figures with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from facelens.config import load_params
from facelens.data.dataset import FaceDataset
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy
from facelens.training.evaluation import evaluate
from facelens.training.recipe import make_recipe, train_model


def _one(params, prepared: Path, rows, best: dict[str, Any], precision: str, seed: int, device):
    train_rows, val_rows, test_rows = rows
    train = params.train.model_copy(update={"seed": seed, "precision": precision})
    recipe = make_recipe(params.task, params.model, train, best, keep_epochs=True)
    policy = DevicePolicy.resolve(device, precision)
    start = time.perf_counter()
    trained = train_model(recipe, train_rows, val_rows, prepared, progress=False, policy=policy)
    seconds = time.perf_counter() - start
    meta = trained.meta
    test = FaceDataset(
        test_rows,
        prepared,
        meta.task,
        meta.input_size,
        meta.eval_transform(),
        target_stats=meta.target_stats(),
    )
    report = evaluate(trained.model, test, meta.task)
    metric = report["macro_f1"] if meta.task == "expression" else report["mean_pearson"]
    return float(metric), seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits"))
    ap.add_argument("--best-params", type=Path, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    best = json.loads(args.best_params.read_text())["params"] if args.best_params else {}
    rows = load_splits(args.prepared, args.splits, ("train", "val", "test"))
    print(f"task {params.task} | epochs {params.train.epochs} | overrides {best}", flush=True)
    for precision in args.precisions:
        scores, times = [], []
        for seed in args.seeds:
            metric, seconds = _one(params, args.prepared, rows, best, precision, seed, args.device)
            scores.append(metric)
            times.append(seconds)
            print(f"{precision} seed {seed}: test {metric:.4f} in {seconds:.0f} s", flush=True)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(
            f"{precision}: mean {statistics.mean(scores):.4f} +/- {spread:.4f} (sd, n="
            f"{len(scores)}), training {statistics.mean(times):.0f} s per run",
            flush=True,
        )


if __name__ == "__main__":
    main()
