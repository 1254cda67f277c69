"""Does tuning pay? Trains the final model twice per seed — once with the study's best
parameters (``models/best_params.json``, as the ``train`` stage does) and once with the
untuned base recipe (the ``train`` section of ``params.yaml``) — from the same backbone,
with the same epochs, and prints validation and test metric (macro-F1 or mean r) of each as
mean and spread over the seeds, with the difference.

    python benchmarks/tuning_pays.py --prepared data/prepared --splits data/splits \\
        --best-params models/best_params.json --seeds 0 1 2

``--epochs N`` trains both arms for N epochs instead of ``train.epochs``; ``--arms base``
trains only the base recipe (e.g. how far longer training takes it).

Nothing is asserted; benchmarks/README.md records the figures with the command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _stats import mean_spread
from facelens.config import load_params
from facelens.data.dataset import FaceDataset
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy
from facelens.training.evaluation import evaluate
from facelens.training.recipe import make_recipe, train_model


def _one(params, prepared: Path, rows, overrides: dict[str, Any], seed: int, policy):
    train_rows, val_rows, test_rows = rows
    train = params.train.model_copy(update={"seed": seed})
    recipe = make_recipe(params.task, params.model, train, overrides, keep_epochs=True)
    trained = train_model(recipe, train_rows, val_rows, prepared, progress=False, policy=policy)
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
    return float(trained.history.best_val_metric), float(metric), meta.weights_source


ARMS = ("tuned", "base")


def _best_params(path: Path) -> dict[str, Any]:
    """The study's choice from ``best_params.json`` (the tune stage's output)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (run the tune stage, or use --arms base)")
    try:
        best = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: not a best_params.json the tune stage wrote ({exc})") from None
    return best.get("params", best) if isinstance(best, dict) else best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits"))
    ap.add_argument("--best-params", type=Path, default=Path("models/best_params.json"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, help="epochs of both arms (default: train.epochs)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    args = ap.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        ap.error(f"--epochs must be at least 1, got {args.epochs}")
    params = load_params(args.params)
    if args.epochs is not None:
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"epochs": args.epochs})}
        )
    rows = load_splits(args.prepared, args.splits, ("train", "val", "test"))
    best = _best_params(args.best_params) if "tuned" in args.arms else {}
    policy = DevicePolicy.resolve(params.device, params.train.precision)
    results: dict[str, dict[str, list[float]]] = {}
    print(f"{params.task}, {params.train.epochs} epochs, seeds {args.seeds}", flush=True)
    for arm, overrides in (("tuned", best), ("base", {})):
        if arm not in args.arms:
            continue
        for seed in args.seeds:
            val, test, source = _one(params, args.prepared, rows, overrides, seed, policy)
            got = results.setdefault(arm, {"val": [], "test": []})
            got["val"].append(val)
            got["test"].append(test)
            print(f"{arm} seed {seed}: val {val:.3f} test {test:.3f} ({source})", flush=True)
    for arm, got in results.items():
        print(f"{arm}: val {mean_spread(got['val'])}, test {mean_spread(got['test'])}")
    if len(results) == len(ARMS):
        pairs = zip(results["tuned"]["test"], results["base"]["test"], strict=True)
        print(f"tuned - base (test, same seed): {mean_spread([t - b for t, b in pairs])}")


if __name__ == "__main__":
    main()
