"""Do tuning trials rank configurations the way full training does? Draws ``--configs``
configurations from ``tune.space`` (Optuna's random sampler, seeded), scores each the way a
trial does (``tune.train_fraction`` of the train split, the trial's epoch cap, the trial
seed) and the way the ``train`` stage does (the whole train split, ``train.epochs``), and
prints the Spearman rank correlation between the two validation scores with its 95%
confidence interval (Fieller standard error), plus each pair.

    python benchmarks/tuning_fidelity.py --prepared data/prepared --splits data/splits \\
        --configs 10

Long: one trial plus one full training per configuration. Nothing is asserted;
benchmarks/README.md records the figures with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import spearmanr

from facelens.config import load_params
from facelens.data.split import stratified_subset
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy
from facelens.models.cache import ActivationCache
from facelens.training.metrics import correlation_ci
from facelens.training.recipe import make_recipe, train_model
from facelens.tuning.space import suggest


def _configs(params, n: int, seed: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest(trial, params.tune.space))
        study.tell(trial, 0.0)
    return out


def _score(params, config, rows, prepared, *, full: bool, cache, policy) -> tuple[float, float]:
    train_rows, val_rows = rows
    if not full:
        train_rows = stratified_subset(train_rows, params.tune.train_fraction, params.tune.seed)
    recipe = make_recipe(params.task, params.model, params.train, config, keep_epochs=full)
    start = time.perf_counter()
    trained = train_model(
        recipe, train_rows, val_rows, prepared, progress=False, cache=cache, policy=policy
    )
    return float(trained.history.best_val_metric), time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits"))
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path("cache/fidelity"))
    ap.add_argument("--out", type=Path, default=None, help="write the pairs as JSON here")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(args.params)
    rows = load_splits(args.prepared, args.splits, ("train", "val"))
    policy = DevicePolicy.resolve(params.device, params.train.precision)
    cache = ActivationCache(args.cache_dir)
    pairs = []
    for i, config in enumerate(_configs(params, args.configs, args.seed)):
        trial, t_s = _score(
            params, config, rows, args.prepared, full=False, cache=cache, policy=policy
        )
        final, f_s = _score(
            params, config, rows, args.prepared, full=True, cache=cache, policy=policy
        )
        pairs.append({"config": config, "trial": trial, "full": final, "seconds": [t_s, f_s]})
        print(
            f"config {i}: trial {trial:.3f} ({t_s:.0f} s), full {final:.3f} ({f_s:.0f} s) {json.dumps(config)}",
            flush=True,
        )
    trial_scores = np.array([p["trial"] for p in pairs])
    full_scores = np.array([p["full"] for p in pairs])
    rho = float(spearmanr(trial_scores, full_scores).statistic)
    lo, hi = correlation_ci(np.array([rho]), len(pairs), spearman=True)[0]
    print(
        f"fidelity: Spearman {rho:.2f} (95% CI {lo:.2f} .. {hi:.2f}) over {len(pairs)} "
        f"configurations; trial {params.tune.train_fraction:g} of the train split, full "
        f"{params.train.epochs} epochs"
    )
    if args.out:
        args.out.write_text(json.dumps({"spearman": rho, "ci": [lo, hi], "pairs": pairs}, indent=1))


if __name__ == "__main__":
    main()
