"""DVC stage `evaluate`: test-split metrics for `dvc metrics`, plot data for `dvc plots`, logged to the train run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stage import run_stage
from facelens.workflows import evaluate_model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--run-file", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    ap.add_argument("--plots", type=Path, required=True, help="plots data directory")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    run_id = json.loads(args.run_file.read_text())["run_id"]
    metrics = evaluate_model(
        params, args.prepared, args.splits, args.model_dir, run_id, args.metrics, args.plots
    )
    headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
    print(f"evaluate: {json.dumps(headline)}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
