"""Trials per hour of `facelens tune worker`: 1 vs 2 workers, SQLite defaults vs PostgreSQL
study + a remote MLflow tracking server (itself on PostgreSQL).

Reuses the e2e test's throwaway PostgreSQL cluster, mlflow server and tiny prepared project
(32 px, 1-epoch trials, random sampler). Each arm runs one fresh study of ``--trials`` trials
and reports wall time, trials/hour and seconds per trial (process start included once per
worker). Usage: ``python benchmarks/tune_workers.py --trials 6``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from test_tune_workers_postgres import (  # noqa: E402
    prepared_project,
    running_mlflow_server,
    running_postgres,
    start_worker,
    study_params,
)


def _arm(proj: Path, name: str, storage: str, url: str, workers: int, trials: int) -> dict:
    params = study_params(proj, name, storage, n_trials=trials)
    logs = [proj / f"{name}-{i}.log" for i in range(workers)]
    start = time.monotonic()
    procs = [start_worker(proj, params, url, i, logs[i]) for i in range(workers)]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - start
    if any(codes):
        raise SystemExit(f"{name}: worker exit codes {codes}: {logs[0].read_text()[-2000:]}")
    return {
        "arm": name,
        "workers": workers,
        "trials": trials,
        "wall_s": round(wall, 1),
        "trials_per_hour": round(3600 * trials / wall, 1),
        "s_per_trial": round(wall / trials, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=6)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        proj = prepared_project(Path(tmp))
        sqlite = f"sqlite:///{proj / 'optuna.db'}"
        results.append(
            _arm(proj, "sqlite-1", sqlite, f"sqlite:///{proj / 'mlflow.db'}", 1, args.trials)
        )
        with running_postgres() as pg, running_mlflow_server(pg) as url:
            for workers in (1, 2):
                storage = pg.create_db(f"optuna{workers}")
                results.append(
                    _arm(proj, f"postgres-{workers}", storage, url, workers, args.trials)
                )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
