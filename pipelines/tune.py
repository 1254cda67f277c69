"""DVC stage `tune`: an Optuna study over the VGG16 fine-tuning space, every trial in MLflow.

The study lives in the Optuna storage of `params.tune.storage` (default sqlite:///optuna.db),
so a killed `dvc repro` resumes it: trials already done are kept. With `tune.workers: N` the
stage starts N copies of this script with `--worker-number i`, which share the study.
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
        tune.run_worker(
            params, args.prepared, args.splits, cache_dir=args.cache, worker=args.worker_number
        )
        return
    worker = [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])]
    result = tune.run(
        params, args.prepared, args.splits, cache_dir=args.cache, worker_command=worker
    )
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
