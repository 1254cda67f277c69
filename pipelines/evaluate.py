"""DVC stage `evaluate`: test-split metrics for `dvc metrics`, plot data for `dvc plots`, logged to the train run."""

from __future__ import annotations

import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stages import evaluate
from facelens.stages.common import headline_text, read_run_id, run_stage, stage_parser


def main(argv: list[str] | None = None) -> str:
    ap = stage_parser(__doc__, data=True, model=True)
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    ap.add_argument("--plots", type=Path, required=True, help="plots data directory")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    run_id = read_run_id(args.run_file)
    metrics = evaluate.run(
        params, args.prepared, args.splits, args.model_dir, run_id, args.metrics, args.plots
    )
    headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
    return f"{headline_text(headline)} -> {args.metrics}"


if __name__ == "__main__":
    sys.exit(run_stage(main, "evaluate"))
