"""Do the default settings hold on other draws of SynthFACS? For each data seed (the
generator's ``data.synth.seed`` with a matching ``split.seed`` and ``train.seed``), at the
default nuisance and at one harder nuisance setting, runs the stages a user runs after
tuning — ``prepare``, ``split``, ``train`` (with the study's ``models/best_params.json``, as
``dvc repro`` does), ``evaluate`` and ``explain`` (Grad-CAM only, for the localization lift)
— in a scratch directory, and prints test macro-F1 and lift per draw, with each draw's gap
to the default draw (seed 0, default nuisance).

    python benchmarks/robust_defaults.py --seeds 0 7 13 --work /tmp/robust \\
        --harder lighting=0.6 noise_std=0.08 occlusion_prob=0.35

Long (one prepare + train + explain per draw, about 4 min each here); runs the stages as
subprocesses from the repository root, tracked in the MLflow experiment
``facelens-robust-defaults``. Nothing is
asserted; benchmarks/README.md records the figures with the command.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from _stats import mean_spread


def _setting(text: str) -> tuple[str, float]:
    key, _, value = text.partition("=")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, got {text!r}") from None


def _params(base: dict[str, Any], seed: int, nuisance: dict[str, float]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out["data"]["synth"].update({"seed": seed, **nuisance})
    out["split"]["seed"] = seed
    out["train"]["seed"] = seed
    out["explain"].update({"methods": ["gradcam"], "road": False})
    out["tracking"]["experiment"] = "facelens-robust-defaults"  # apart from the pipeline's runs
    return out


def _stage(name: str, *args: str, env: dict[str, str]) -> None:
    cmd = [sys.executable, f"pipelines/{name}.py", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name} failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")


def _draw(work: Path, params: dict[str, Any], best: Path, env: dict[str, str]) -> dict[str, float]:
    work.mkdir(parents=True, exist_ok=True)
    p = work / "params.yaml"
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    data = [
        "--params",
        str(p),
        "--prepared",
        str(work / "prepared"),
        "--splits",
        str(work / "splits"),
    ]
    model = [*data, "--model-dir", str(work / "model"), "--run-file", str(work / "run.json")]
    _stage("prepare", "--params", str(p), "--out", str(work / "prepared"), env=env)
    _stage("split", *data[:4], "--out", str(work / "splits"), env=env)
    _stage(
        "train", *model, "--best-params", str(best), "--checkpoints", str(work / "ckpt"), env=env
    )
    _stage(
        "evaluate",
        *model,
        "--metrics",
        str(work / "metrics.json"),
        "--plots",
        str(work / "plots"),
        env=env,
    )
    faith = work / "faithfulness.json"
    _stage(
        "explain",
        *model,
        "--figures",
        str(work / "fig"),
        "--maps",
        str(work / "maps"),
        "--metrics",
        str(faith),
        env=env,
    )
    metrics = json.loads((work / "metrics.json").read_text())
    return {
        "macro_f1": float(metrics["macro_f1"]),
        "lift": float(json.loads(faith.read_text())["lift"]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--best-params", type=Path, default=Path("models/best_params.json"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 7, 13])
    ap.add_argument("--harder", type=_setting, nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--work", type=Path, required=True, help="scratch directory")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    base = yaml.safe_load(args.params.read_text())
    env = dict(os.environ)
    env.setdefault("FACELENS_PROGRESS", "off")
    settings = {"default": {}, **({"harder": dict(args.harder)} if args.harder else {})}
    results: list[dict[str, Any]] = []
    for name, nuisance in settings.items():
        for seed in args.seeds:
            got = _draw(
                args.work / f"{name}-{seed}", _params(base, seed, nuisance), args.best_params, env
            )
            results.append({"setting": name, "seed": seed, **got})
            print(
                f"{name} seed {seed}: test macro-F1 {got['macro_f1']:.3f}, lift {got['lift']:.2f}",
                flush=True,
            )
            if args.out:
                args.out.write_text(
                    json.dumps({"harder": dict(args.harder), "draws": results}, indent=1)
                )
    ref = next(r for r in results if r["setting"] == "default" and r["seed"] == args.seeds[0])
    for name in settings:
        rows = [r for r in results if r["setting"] == name]
        gaps = [ref["macro_f1"] - r["macro_f1"] for r in rows if r is not ref]
        print(
            f"{name}: macro-F1 {mean_spread([r['macro_f1'] for r in rows])}, lift "
            f"{mean_spread([r['lift'] for r in rows])}; largest drop below seed {args.seeds[0]}: "
            f"{max(gaps, default=float('nan')):.3f}"
        )


if __name__ == "__main__":
    main()
