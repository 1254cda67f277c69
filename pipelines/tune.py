"""DVC stage `tune`: an Optuna study over the VGG16 fine-tuning space, every trial in MLflow.

The study lives in the Optuna storage of `params.tune.storage` (default sqlite:///optuna.db),
so a killed `dvc repro` resumes it: trials already done are kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

from facelens._io import write_json
from facelens.config import load_params
from facelens.errors import StageError
from facelens.stages import tune
from facelens.stages.common import run_stage, stage_parser


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, data=True)
    ap.add_argument("--best-params", type=Path, required=True, help="best_params.json to write")
    ap.add_argument("--reports", type=Path, required=True, help="tuning report directory")
    ap.add_argument("--cache", type=Path, default=Path("cache/activations"))
    args = ap.parse_args(argv)
    params = load_params(args.params)
    result = tune.run(params, args.prepared, args.splits, cache_dir=args.cache)
    write_json(args.reports / "study.json", result.to_dict())
    summary = (
        f"tune: study {result.study_name}: {result.n_complete} complete, "
        f"{result.n_pruned} pruned, {result.n_failed} failed"
    )
    if result.best_value is None:
        raise StageError(f"{summary}; no trial completed, so there are no best params")
    best = {"params": result.best_params, "value": result.best_value, "study": result.study_name}
    write_json(args.best_params, best)
    print(f"{summary}; best {result.best_value:.4f} with {result.best_params}")
    for note in result.notes:
        print(f"tune: note: {note}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
