"""``facelens tune worker``: one more process working on the project's Optuna study."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from facelens.cli.console import fail, out

__all__ = ["tune_app"]

tune_app = typer.Typer(
    help="Hyper-parameter tuning: join the study of the `tune` stage from any host.",
    no_args_is_help=True,
)


@tune_app.command("worker")
def worker(
    params_file: Annotated[
        Path, typer.Option("--params", help="params.yaml (the same on every worker).")
    ] = Path("params.yaml"),
    prepared: Annotated[
        Path, typer.Option("--prepared", help="Prepared dataset (`dvc pull` / `dvc repro split`).")
    ] = Path("data/prepared"),
    splits: Annotated[Path, typer.Option("--splits", help="Split CSV folder.")] = Path(
        "data/splits"
    ),
    cache: Annotated[
        Path, typer.Option("--cache", help="Frozen-prefix activation cache of this host.")
    ] = Path("cache/activations"),
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            envvar="FACELENS_TUNE_STORAGE",
            help="Optuna storage URL instead of tune.storage (e.g. postgresql://...).",
        ),
    ] = None,
    n_trials: Annotated[
        int | None,
        typer.Option("--n-trials", min=1, help="At most this many trials of this worker."),
    ] = None,
    worker_number: Annotated[
        int | None,
        typer.Option("--worker-number", min=0, help="Seeds this worker's sampler (default: pid)."),
    ] = None,
) -> None:
    """Work on the study of the `tune` stage until it holds tune.n_trials finished trials.

    Start as many as you like, on any hosts that share tune.storage (PostgreSQL, MySQL or a
    journal file) and MLFLOW_TRACKING_URI: every trial is a nested run under the study's
    one parent run, and the last worker out closes it.

    Examples:

        facelens tune worker

        facelens tune worker --storage postgresql://optuna:secret@db:5432/optuna --n-trials 4
    """
    from facelens import progress
    from facelens.config import load_params
    from facelens.errors import FaceLensError
    from facelens.stages import tune

    try:
        progress.configure("tune worker")  # trials and epochs on stderr (facelens.progress)
        params = load_params(params_file)
        if storage is not None:
            update = {"tune": params.tune.model_copy(update={"storage": storage})}
            params = params.model_copy(update=update)
        result = tune.run_worker(
            params,
            prepared,
            splits,
            cache_dir=cache,
            worker=os.getpid() if worker_number is None else worker_number,
            max_trials=n_trials,
        )
    except FaceLensError as exc:
        fail(str(exc).splitlines()[0])
    best = "none yet" if result.best_value is None else f"{result.best_value:.4f}"
    out.print(
        f"study {result.study_name}: {result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.n_failed} failed; best {best}",
        markup=False,
    )
    for note in result.notes:
        out.print(f"note: {note}", markup=False)
