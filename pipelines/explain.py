"""DVC stage `explain`: Grad-CAM grids, raw maps and faithfulness checks, logged to the train run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# pytorch_grad_cam's ScoreCAM draws a tqdm bar per image; keep the stage log to one line each.
os.environ.setdefault("TQDM_DISABLE", "1")

from facelens.config import load_params
from facelens.explain.stages import explain_stage
from facelens.stage import run_stage


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--run-file", type=Path, required=True, help="JSON with the train run id")
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
    run_id = json.loads(args.run_file.read_text())["run_id"]
    summary = explain_stage(
        params,
        args.prepared,
        args.splits,
        args.model_dir,
        run_id,
        figures_dir=args.figures,
        maps_dir=args.maps,
        metrics_path=args.metrics,
    )
    print(f"explain: {json.dumps(summary['headline'])}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
