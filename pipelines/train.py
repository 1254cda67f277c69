"""DVC stage `train`: retrain with the best params, checkpointed and resumable, tracked in MLflow."""

from __future__ import annotations

import sys
from pathlib import Path

from facelens._io import write_json
from facelens.config import load_params
from facelens.stages import train
from facelens.stages.common import read_json_file, run_stage, stage_parser


def main(argv: list[str] | None = None) -> str:
    ap = stage_parser(__doc__, data=True)
    ap.add_argument("--best-params", type=Path, required=True)
    ap.add_argument("--model-dir", type=Path, required=True, help="exported model directory")
    ap.add_argument("--run-file", type=Path, required=True, help="JSON with the MLflow run id")
    ap.add_argument("--checkpoints", type=Path, default=Path("cache/checkpoints"))
    ap.add_argument("--curves", type=Path, help="CSV of the per-epoch training curves to write")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    best = read_json_file(args.best_params, made_by="tune", key="params")
    info = train.run(
        params,
        args.prepared,
        args.splits,
        best,
        args.model_dir,
        checkpoint_root=args.checkpoints,
        curves_path=args.curves,
    )
    if info["resumed_from_epoch"]:
        print(
            f"train: resumed run {info['run_id']} from its epoch-{info['resumed_from_epoch']} "
            "checkpoint",
            file=sys.stderr,
        )
    write_json(args.run_file, info)
    metric = "macro-F1" if info["task"] == "expression" else "mean r"
    return (
        f"run {info['run_id']}: best val {metric} {info['best_val_metric']:.4f} at epoch "
        f"{info['best_epoch']} -> {args.model_dir}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, "train"))
