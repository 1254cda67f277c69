"""DVC stage `tune`: an Optuna study over the VGG16 fine-tuning space, every trial in MLflow.

The study lives in the Optuna storage of `params.tune.storage` (default sqlite:///optuna.db),
so a killed `dvc repro` resumes it: trials already done are kept. With `tune.workers: N` the
stage starts N copies of this script with `--worker-number i`, which share the study.
"""

from __future__ import annotations

import sys
from pathlib import Path

from facelens import progress
from facelens._io import write_json
from facelens.config import load_params
from facelens.errors import StageError
from facelens.stages import tune
from facelens.stages.common import run_stage, stage_parser
from facelens.tracking.fidelity import log_fidelity
from facelens.tuning.study import StudyResult


def main(argv: list[str] | None = None) -> str:
    ap = stage_parser(__doc__, data=True)
    ap.add_argument("--best-params", type=Path, required=True, help="best_params.json to write")
    ap.add_argument("--reports", type=Path, required=True, help="tuning report directory")
    ap.add_argument("--cache", type=Path, default=Path("cache/activations"))
    ap.add_argument(
        "--fidelity",
        type=Path,
        default=Path("reports/tuning_fidelity.json"),
        help="measured trial fidelity (benchmarks/tuning_fidelity.py --record), shown on the "
        "study's parent run when it was measured for this study",
    )
    ap.add_argument(
        "--worker-number",
        type=int,
        default=None,
        help="run as worker <n> of the study and write nothing (the stage starts these "
        "when tune.workers > 1)",
    )
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if args.worker_number is not None:
        progress.configure(f"tune worker {args.worker_number}")
        mine = tune.run_worker(
            params, args.prepared, args.splits, cache_dir=args.cache, worker=args.worker_number
        )
        return f"worker {args.worker_number} left; {_counts(mine)}"
    worker = [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])]
    result = tune.run(
        params, args.prepared, args.splits, cache_dir=args.cache, worker_command=worker
    )
    write_json(args.reports / "study.json", result.to_dict())
    summary = f"study {result.study_name}: {_counts(result)}"
    if result.best_value is None:
        raise StageError(f"tune: {summary}; no trial completed, so there are no best params")
    best = {"params": result.best_params, "value": result.best_value, "study": result.study_name}
    write_json(args.best_params, best)
    if result.parent_run_id:
        unmeasured = log_fidelity(result.parent_run_id, result.study_name, args.fidelity)
        if unmeasured:
            result.notes.append(unmeasured)
    for note in result.notes:
        print(f"tune: note: {note}")
    metric = "macro-F1" if params.task == "expression" else "mean r"
    chosen = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.best_params.items()
    )
    return f"{summary}, best val {metric} {result.best_value:.4f} with {chosen}"


def _counts(result: StudyResult) -> str:
    """``"20 trials (14 complete, 6 pruned, 0 failed)"``."""
    n = result.n_complete + result.n_pruned + result.n_failed
    return (
        f"{n} trials ({result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.n_failed} failed)"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main, "tune"))
