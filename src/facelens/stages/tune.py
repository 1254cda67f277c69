"""The ``tune`` stage: an Optuna study over the VGG16 fine-tuning space, every trial a nested
MLflow run under one parent run per study, run by ``tune.workers`` processes here and by any
``facelens tune worker`` on other hosts.

The study lives in ``tune.storage`` (default ``sqlite:///optuna.db``) under a name derived from
the data version and the tuning config, so a killed ``dvc repro`` resumes it and workers with
the same data and params join it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch

from facelens.config import Params
from facelens.data.dataset import FaceDataset
from facelens.data.manifest import data_version, read_manifest
from facelens.data.split import stratified_subset
from facelens.data.split_csv import load_splits
from facelens.device import DevicePolicy, device_tags
from facelens.errors import StageError
from facelens.models.cache import ActivationCache
from facelens.tracking.runs import configure_stage
from facelens.tracking.study import MlflowStudyTracker
from facelens.training.history import EpochResult
from facelens.training.pretrain import backbone_fingerprint, check_backbone_pool
from facelens.training.recipe import make_recipe, train_model
from facelens.tuning.params import SearchSpace, TuneParams
from facelens.tuning.space import for_task
from facelens.tuning.storage import check_shareable, sqlite_guard
from facelens.tuning.study import (
    StudyResult,
    create_study,
    enqueue_base,
    run_study,
    study_name_for,
)

__all__ = [
    "CACHE_DTYPES",
    "run",
    "run_processes",
    "run_worker",
    "study_name",
    "study_params",
]

#: Storage types of the activation cache: float16 halves its memory; float32 makes cached
#: trials train on exactly the activations an uncached trial computes.
CACHE_DTYPES = ("float16", "bfloat16", "float32")


class _PruningReporter:
    """``fit`` callback forwarding each epoch's validation metric to the study's reporter."""

    def __init__(self, report: Callable[[int, float], None]) -> None:
        self._report = report

    def on_epoch_end(self, result: EpochResult) -> None:
        self._report(result.epoch, float(result.val_metric))


def base_recipe(params: Params) -> dict[str, Any]:
    """The untuned recipe in the search space's terms: the ``train`` section, the model's
    arch and the trial's epoch cap (what ``tune.enqueue_base`` runs as trial 0)."""
    cap = params.tune.space.epochs
    epochs = max(cap) if isinstance(cap, list) else cap.high
    return {**params.train.model_dump(), "arch": params.model.arch, "epochs": epochs}


def _study_space(params: Params) -> SearchSpace:
    """``tune.space`` as this task's study searches it (:func:`facelens.tuning.space.for_task`)."""
    return for_task(params.tune.space, params.task, params.train.label_smoothing)


def study_params(params: Params, version: str) -> TuneParams:
    """The ``tune`` section as the study runs: its full name and this task's space."""
    update = {"study_name": study_name(params, version), "space": _study_space(params)}
    return params.tune.model_copy(update=update)


def study_name(params: Params, version: str) -> str:
    """The study of this data version and tuning config (``<tune.study_name>-<hash>``)."""
    return study_name_for(
        params.tune.study_name,
        task=params.task,
        data_version=version,
        sections={
            "model": params.model,
            "train": params.train,
            "space": _study_space(params),
            "train_fraction": params.tune.train_fraction,
            "enqueue_base": params.tune.enqueue_base,
            "backbone": backbone_fingerprint(params.model.weights, params.model.pretrained),
        },
    )


def run_worker(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    *,
    cache_dir: Path,
    use_cache: bool = True,
    cache_dtype: str = "float16",
    progress: bool = True,
    worker: int = 0,
    max_trials: int | None = None,
) -> StudyResult:
    """Join (or start, or resume) the study and work on it until it is done; every trial is
    a nested MLflow run under the study's one parent run.

    Any number of workers, on any hosts, may run this on one shared ``tune.storage``
    (PostgreSQL, MySQL, a journal file): the study ends at ``n_trials`` whoever ran them.
    A SQLite storage or tracking store serves one worker (a second one stops with one line).

    Trials whose recipe freezes the first blocks and does not augment train on activations
    of the frozen prefix cached under ``cache_dir`` (computed once, shared by all trials);
    ``use_cache=False`` recomputes them every step (for the benchmark).

    Args:
        cache_dtype: one of :data:`CACHE_DTYPES`.
        worker: this worker's number (seeds its sampler apart from the others').
        max_trials: at most this many trials of this worker (default: the missing ones).

    Returns:
        The :class:`~facelens.tuning.study.StudyResult` of the whole study.
    """
    if cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {CACHE_DTYPES}; got {cache_dtype!r}")
    uri = _tracking_uri(params)
    with (
        sqlite_guard(params.tune.storage, "tune.storage"),
        sqlite_guard(uri, "MLFLOW_TRACKING_URI"),
    ):
        return _work(
            params,
            prepared_dir,
            splits_dir,
            cache_dir,
            use_cache,
            cache_dtype,
            progress,
            worker,
            max_trials,
        )


def _tracking_uri(params: Params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri


def _work(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    cache_dir: Path,
    use_cache: bool,
    cache_dtype: str,
    progress: bool,
    worker: int,
    max_trials: int | None,
) -> StudyResult:
    train_rows, val_rows = load_splits(prepared_dir, splits_dir, ("train", "val"))
    manifest = read_manifest(Path(prepared_dir) / "manifest.csv")
    check_backbone_pool(params.model.weights, params.model.pretrained, manifest, str(prepared_dir))
    train_rows = stratified_subset(train_rows, params.tune.train_fraction, params.tune.seed)
    version = data_version(prepared_dir)
    configure_stage(params.tracking.tracking_uri, params.tracking.experiment)
    tune = study_params(params, version)
    cache = ActivationCache(cache_dir, dtype=getattr(torch, cache_dtype)) if use_cache else None
    decoded: dict[tuple[Any, ...], FaceDataset] = {}  # images decoded once per worker

    policy = DevicePolicy.resolve(params.device, params.train.precision)

    def objective(trial_params: dict[str, Any], report: Callable[[int, float], None]) -> float:
        recipe = make_recipe(params.task, params.model, params.train, trial_params)
        trained = train_model(
            recipe,
            train_rows,
            val_rows,
            prepared_dir,
            callbacks=[_PruningReporter(report)],
            cache=cache,
            data_version=version,
            progress=progress,
            dataset_memo=decoded,
            policy=policy,
        )
        if mlflow.active_run() is not None:  # the trial's nested run
            mlflow.set_tag("weights_source", trained.meta.weights_source)
        return float(trained.history.best_val_metric)

    tracker = MlflowStudyTracker(f"tune {tune.study_name}", tags=device_tags(policy))
    study = create_study(tune, on_stale=tracker.trial_died, worker=worker)
    not_enqueued = enqueue_base(study, tune, base_recipe(params))
    result = run_study(
        study, tune, objective, tracker=tracker, progress=progress, max_trials=max_trials
    )
    if not_enqueued:
        result.notes.append(not_enqueued)
    return result


def run(
    params: Params,
    prepared_dir: Path,
    splits_dir: Path,
    *,
    cache_dir: Path,
    worker_command: Sequence[str] = (),
    **worker_options: Any,
) -> StudyResult:
    """Run (or resume) the study with ``tune.workers`` worker processes on this host.

    One worker runs here (:func:`run_worker`); several run as ``worker_command
    --worker-number <i>`` processes (the stage script in worker mode), then this process
    closes the study's parent run if no worker did (e.g. all of them died).

    Args:
        worker_command: the command line of one worker (needed when ``tune.workers > 1``).
        worker_options: passed to :func:`run_worker` (``use_cache``, ``cache_dtype``, ...).

    Returns:
        The :class:`~facelens.tuning.study.StudyResult` of the whole study.

    Raises:
        ConfigError: several workers on a store one process writes (SQLite, memory).
        StageError: a worker failed and the study did not reach ``n_trials``.
    """
    workers = params.tune.workers
    if workers == 1:
        return run_worker(params, prepared_dir, splits_dir, cache_dir=cache_dir, **worker_options)
    check_shareable(params.tune.storage, "tune.storage", workers)
    check_shareable(_tracking_uri(params), "MLFLOW_TRACKING_URI", workers)
    configure_stage(params.tracking.tracking_uri, params.tracking.experiment)
    if not worker_command:
        raise ValueError("tune.workers > 1 needs the worker command line")
    version = data_version(prepared_dir)
    tune = study_params(params, version)
    create_study(tune)  # tables and study made once, before the workers race for them
    codes = run_processes([[*worker_command, "--worker-number", str(i)] for i in range(workers)])
    tracker = MlflowStudyTracker(f"tune {tune.study_name}")
    study = create_study(tune, on_stale=tracker.trial_died)
    closer = tracker if tracker.is_open(study) else None  # e.g. every worker died
    result = run_study(study, tune, _no_trial, tracker=closer, progress=False, max_trials=0)
    result.parent_run_id = tracker.stored_run_id(study)
    failed = [f"worker {i}: exit {c}" for i, c in enumerate(codes) if c != 0]
    if failed:
        finished = result.n_complete + result.n_pruned
        if finished < tune.n_trials:
            raise StageError(
                f"tune: {len(failed)} of {workers} workers failed ({', '.join(failed)}) and the "
                f"study {tune.study_name} has {finished}/{tune.n_trials} finished trials; "
                "see their output above, then run the stage again to resume"
            )
        result.notes.append(f"{', '.join(failed)}; the other workers finished the study")
    return result


def _no_trial(trial_params: dict[str, Any], report: Callable[[int, float], None]) -> float:
    raise AssertionError("the tune stage runs no trial itself when it starts workers")


def run_processes(commands: Sequence[Sequence[str]]) -> list[int]:
    """Start every command, wait for all, and return their exit codes.

    The workers print plain progress lines (``FACELENS_PROGRESS=plain`` unless it says
    ``off``). Ctrl-C reaches the workers too (same process group): they close their trials' runs and
    exit; this waits for them, then re-raises ``KeyboardInterrupt``.
    """
    env = dict(os.environ)
    if env.get("FACELENS_PROGRESS", "auto").strip().lower() in ("", "auto", "live"):
        env["FACELENS_PROGRESS"] = "plain"  # live displays of N processes on one terminal clash
    procs = [subprocess.Popen(list(cmd), env=env) for cmd in commands]
    try:
        return [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
