"""DVC stage `tune`: an Optuna study over the VGG16 fine-tuning space, every trial in MLflow.

The study lives in the Optuna storage of `params.tune.storage` (default sqlite:///optuna.db),
so a killed `dvc repro` resumes it: trials already done are kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from facelens.config import load_params
from facelens.stage import StageError, run_stage, stage_parser
from facelens.workflows import tune_study


def main(argv: list[str] | None = None) -> None:
    ap = stage_parser(__doc__, data=True)
    ap.add_argument("--best-params", type=Path, required=True, help="best_params.json to write")
    ap.add_argument("--reports", type=Path, required=True, help="tuning report directory")
    ap.add_argument("--cache", type=Path, default=Path("cache/activations"))
    args = ap.parse_args(argv)
    params = load_params(args.params)
    result = tune_study(params, args.prepared, args.splits, cache_dir=args.cache)
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "study.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    summary = (
        f"tune: study {result.study_name}: {result.n_complete} complete, "
        f"{result.n_pruned} pruned, {result.n_failed} failed"
    )
    if result.best_value is None:
        raise StageError(f"{summary}; no trial completed, so there are no best params")
    args.best_params.parent.mkdir(parents=True, exist_ok=True)
    best = {"params": result.best_params, "value": result.best_value, "study": result.study_name}
    args.best_params.write_text(json.dumps(best, indent=2) + "\n")
    print(f"{summary}; best {result.best_value:.4f} with {result.best_params}")
    for note in result.notes:
        print(f"tune: note: {note}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
