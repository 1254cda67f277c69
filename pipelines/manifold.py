"""DVC stage `manifold`: PCA / t-SNE / UMAP layouts of the test split, logged to the train run."""

from __future__ import annotations

import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stages import manifold
from facelens.stages.common import headline_text, read_run_id, run_stage, stage_parser


def main(argv: list[str] | None = None) -> str:
    ap = stage_parser(__doc__, data=True, model=True)
    ap.add_argument("--plots", type=Path, required=True, help="plot directory to write")
    ap.add_argument(
        "--metrics",
        type=Path,
        required=True,
        help="compact metrics JSON (dvc metrics) to write; the full one goes beside it",
    )
    ap.add_argument(
        "--reference-dir",
        type=Path,
        required=True,
        help="reference layouts per data version (outside DVC outputs, e.g. cache/...)",
    )
    args = ap.parse_args(argv)
    params = load_params(args.params)
    run_id = read_run_id(args.run_file)
    doc = manifold.run(
        params,
        args.prepared,
        args.splits,
        args.model_dir,
        run_id,
        plots_dir=args.plots,
        metrics_path=args.metrics,
        reference_dir=args.reference_dir,
    )
    headline = {
        key: {m: doc["layouts"][key].get(m) for m in ("trustworthiness", "knn_accuracy")}
        for key in doc["layouts"]
    }
    return f"{headline_text(headline)} -> {args.metrics}"


if __name__ == "__main__":
    sys.exit(run_stage(main, "manifold"))
