"""Do tuning trials rank configurations the way full training does? Draws ``--configs``
configurations from ``tune.space`` (Optuna's random sampler, seeded), scores each the way a
trial does and the way the ``train`` stage does (the whole train split, ``train.epochs``),
and prints the Spearman rank correlation between the two validation scores with its 95%
confidence interval (Fieller standard error), plus each pair.

A trial design is ``EPOCHSxFRACTION`` (``2x0.35``: 2 epochs on 35% of the train split, the
trial seed); ``--designs`` scores several at once (default: the params' own design,
``tune.space.epochs`` x ``tune.train_fraction``). Every full training also records its
validation score after each epoch, so the fidelity of *truncated* full runs (what a pruner
rung sees) is printed for free.

    python benchmarks/tuning_fidelity.py --prepared data/prepared --splits data/splits \\
        --configs 10 --designs 2x1.0 6x0.35 --out fidelity.json

Long: one full training plus one run per design per configuration. Nothing is asserted;
benchmarks/README.md records the figures with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import spearmanr

from facelens.config import load_params
from facelens.data.manifest import data_version
from facelens.data.split import stratified_subset
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy
from facelens.models.cache import ActivationCache
from facelens.stages.tune import study_name
from facelens.tracking.fidelity import read_record
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


def _design(text: str) -> tuple[int, float]:
    epochs, _, fraction = text.partition("x")
    try:
        out = int(epochs), float(fraction)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a trial design is EPOCHSxFRACTION, e.g. 2x0.35; got {text!r}"
        ) from None
    if out[0] < 1 or not 0 < out[1] <= 1:
        raise argparse.ArgumentTypeError(f"epochs >= 1 and 0 < fraction <= 1; got {text!r}")
    return out


def _run(params, config, rows, prepared, design, *, cache, policy) -> dict[str, Any]:
    train_rows, val_rows = rows
    overrides = dict(config)
    if design is None:  # the train stage: whole split, train.epochs
        recipe = make_recipe(params.task, params.model, params.train, overrides, keep_epochs=True)
    else:
        epochs, fraction = design
        train_rows = stratified_subset(train_rows, fraction, params.tune.seed)
        overrides["epochs"] = epochs
        recipe = make_recipe(params.task, params.model, params.train, overrides)
    start = time.perf_counter()
    trained = train_model(
        recipe, train_rows, val_rows, prepared, progress=False, cache=cache, policy=policy
    )
    return {
        "score": float(trained.history.best_val_metric),
        "curve": [float(e.val_metric) for e in trained.history.epochs],
        "seconds": time.perf_counter() - start,
    }


def _fidelity(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Spearman rank correlation and its 95% confidence interval."""
    rho = float(spearmanr(xs, ys).statistic)
    lo, hi = correlation_ci(np.array([rho]), len(xs), spearman=True)[0]
    return rho, float(lo), float(hi)


def _rho(xs: list[float], ys: list[float]) -> str:
    rho, lo, hi = _fidelity(xs, ys)
    return f"Spearman {rho:.2f} (95% CI {lo:.2f} .. {hi:.2f})"


def _report(pairs: list[dict[str, Any]], designs: list[str], epochs: int) -> None:
    full = [p["full"]["score"] for p in pairs]
    for name in designs:
        trial = [p["trials"][name]["score"] for p in pairs]
        secs = np.mean([p["trials"][name]["seconds"] for p in pairs])
        print(f"fidelity of trials {name}: {_rho(trial, full)}; {secs:.0f} s per trial")
    curved = [p for p in pairs if p["full"].get("curve")]
    for k in range(1, epochs):
        at_k = [max(p["full"]["curve"][:k]) for p in curved]
        final = [p["full"]["score"] for p in curved]
        if len(curved) > 2:
            print(
                f"fidelity of the full run truncated after epoch {k}: {_rho(at_k, final)}"
                f" ({len(curved)} configurations with a recorded curve)"
            )
    secs = np.mean([p["full"]["seconds"] for p in pairs])
    print(f"over {len(pairs)} configurations; full training {epochs} epochs, {secs:.0f} s each")


def _reused(path: Path) -> list[dict[str, Any]]:
    try:
        return json.loads(path.read_text())["pairs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--reuse {path}: not a previous --out of this script ({exc})") from None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--splits", type=Path, default=Path("data/splits"))
    ap.add_argument("--configs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--designs", type=_design, nargs="*", default=None, metavar="ExF")
    ap.add_argument("--cache-dir", type=Path, default=Path("cache/fidelity"))
    ap.add_argument("--out", type=Path, default=None, help="write the pairs as JSON here")
    ap.add_argument(
        "--record",
        type=Path,
        default=None,
        help="add the measured designs to the fidelity record the tune stage shows on its "
        "parent run (reports/tuning_fidelity.json; other tasks' and backbones' designs are kept)",
    )
    ap.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a previous --out of the same configurations: only missing designs are run",
    )
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(args.params)
    designs = args.designs
    if designs is None:
        designs = [(max(params.tune.space.epochs), params.tune.train_fraction)]
    names = [f"{e}x{f:g}" for e, f in designs]
    rows = load_splits(args.prepared, args.splits, ("train", "val"))
    policy = DevicePolicy.resolve(params.device, params.train.precision)
    cache = ActivationCache(args.cache_dir)
    old = _reused(args.reuse) if args.reuse else []
    pairs = []
    for i, config in enumerate(_configs(params, args.configs, args.seed)):
        pair: dict[str, Any] = {"config": config, "trials": {}}
        if i < len(old):
            if old[i]["config"] != config:
                raise SystemExit(f"--reuse {args.reuse}: configuration {i} differs; same --seed?")
            pair = old[i]
        for name, design in zip(names, designs, strict=True):
            if name not in pair["trials"]:
                pair["trials"][name] = _run(
                    params, config, rows, args.prepared, design, cache=cache, policy=policy
                )
        if "full" not in pair:
            pair["full"] = _run(
                params, config, rows, args.prepared, None, cache=cache, policy=policy
            )
        pairs.append(pair)
        shown = ", ".join(f"{n} {v['score']:.3f}" for n, v in pair["trials"].items())
        print(
            f"config {i}: {shown}, full {pair['full']['score']:.3f} {json.dumps(config)}",
            flush=True,
        )
        if args.out:
            every = sorted({n for p in pairs for n in p["trials"]})
            args.out.write_text(json.dumps({"designs": every, "pairs": pairs}, indent=1))
    scored = [n for n in pairs[0]["trials"] if all(n in p["trials"] for p in pairs)]
    _report(pairs, scored, params.train.epochs)
    if args.record:
        _record(args.record, params, args.prepared, pairs, scored)


def _record(path: Path, params, prepared: Path, pairs: list[dict[str, Any]], names) -> None:
    """Add each design to the record the ``tune`` stage shows, keyed ``<task> <design>`` and
    holding the study it makes and the command that measured it. Designs of other studies
    already in the record (another task, backbone or data version) are kept; one of the same
    study is replaced."""
    designs = {}
    version = data_version(prepared)
    measured_by = "python benchmarks/tuning_fidelity.py " + " ".join(sys.argv[1:])
    for name in names:
        epochs, fraction = _design(name)
        space = params.tune.space.model_copy(update={"epochs": [epochs]})
        tune = params.tune.model_copy(update={"space": space, "train_fraction": fraction})
        xy = [[p["trials"][name]["score"], p["full"]["score"]] for p in pairs]
        rho, lo, hi = _fidelity([trial for trial, _ in xy], [full for _, full in xy])
        designs[f"{params.task} {name}"] = {
            "study": study_name(params.model_copy(update={"tune": tune}), version),
            "spearman": rho,
            "ci": [lo, hi],
            "pairs": xy,
            "measured_by": measured_by,
        }
    kept = {}
    if path.exists():
        old = read_record(path)
        if isinstance(old, str):
            raise SystemExit(f"--record: {old}")
        studies = {d["study"] for d in designs.values()}
        by = old.get("measured_by")
        for key, design in old["designs"].items():
            if design["study"] not in studies and key not in designs:
                kept[key] = {**design, "measured_by": design.get("measured_by") or by}
    record = {"designs": {**kept, **designs}}
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"fidelity record {path}: {', '.join(designs)} written, {len(kept)} other designs kept")


if __name__ == "__main__":
    main()
