"""DVC stage `explain`: Grad-CAM grids, raw maps and faithfulness checks, logged to the train run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# pytorch_grad_cam's ScoreCAM draws a tqdm bar per image; keep the stage log to one line each.
os.environ.setdefault("TQDM_DISABLE", "1")

from facelens.config import load_params
from facelens.stages import explain
from facelens.stages.common import headline_text, read_run_id, run_stage, stage_parser


def main(argv: list[str] | None = None) -> str:
    ap = stage_parser(__doc__, data=True, model=True)
    ap.add_argument("--figures", type=Path, required=True, help="figure directory to write")
    ap.add_argument("--maps", type=Path, required=True, help="raw CAM directory to write")
    ap.add_argument(
        "--metrics",
        type=Path,
        required=True,
        help="compact faithfulness JSON (dvc metrics) to write; the full one goes beside it",
    )
    args = ap.parse_args(argv)
    params = load_params(args.params)
    run_id = read_run_id(args.run_file)
    summary = explain.run(
        params,
        args.prepared,
        args.splits,
        args.model_dir,
        run_id,
        figures_dir=args.figures,
        maps_dir=args.maps,
        metrics_path=args.metrics,
    )
    return f"{headline_text(summary['headline'])} -> {args.metrics}"


if __name__ == "__main__":
    sys.exit(run_stage(main, "explain"))
