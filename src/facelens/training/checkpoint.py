"""Atomic per-epoch checkpoints and resumption.

``checkpoint.pt`` holds the model, optimizer, scheduler, epoch, history and RNG states; the
best weights so far live beside it in ``best-epoch<N>.pt``, written before the checkpoint that
refers to them. The checkpoint it replaces is kept as ``checkpoint.prev.pt`` (with its best
weights), so a checkpoint that cannot be read (truncated by a full disk, corrupted, or a
hostile pickle that ``weights_only`` loading refuses) falls back to the previous epoch with a
warning, or, without a readable one, to a fresh start. A checkpoint resumes only a run with the
same task and params (except those in ``_RESUME_FREE``).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from facelens._io import atomic_path
from facelens.errors import MissingInputError, ModelFileError
from facelens.models.vgg import FaceVGG
from facelens.training.history import History
from facelens.training.params import TrainParams

__all__ = ["CHECKPOINT_NAME", "TrainState", "cpu_state", "restore_checkpoint", "save_checkpoint"]

#: File name of the checkpoint in a run's checkpoint folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: The checkpoint before the last one, kept until the next one is written.
PREVIOUS_NAME = "checkpoint.prev.pt"
_CKPT_FORMAT = 1
# Params that may differ between an interrupted run and its resumption (they change speed,
# not what is learnt; keys absent from older checkpoints count as equal).
_RESUME_FREE = ("num_threads", "compile", "deterministic")
# What torch.load raises for a file that is not a readable checkpoint.
_UNREADABLE = (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError)


@dataclass
class TrainState:
    """What a run carries from epoch to epoch besides the model (all of it is checkpointed)."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    #: Draws the batch order and the augmentation.
    gen: torch.Generator
    history: History
    #: CPU copy of the best weights so far (None before the first epoch).
    best_state: dict[str, Tensor] | None = None
    #: Gradient scaler of fp16 training on CUDA (None otherwise); checkpointed with the rest.
    scaler: torch.amp.GradScaler | None = None
    #: Best epoch recorded by the checkpoint on disk (its best-weights file is kept while
    #: that checkpoint is the fallback ``checkpoint.prev.pt``).
    saved_best_epoch: int = 0


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of ``model``'s state dict (unaffected by further training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _resume_params(params: TrainParams) -> dict[str, Any]:
    return {k: v for k, v in params.model_dump(mode="json").items() if k not in _RESUME_FREE}


def _best_file(ckpt_path: Path, epoch: int) -> Path:
    return ckpt_path.parent / f"best-epoch{epoch}.pt"


def save_checkpoint(
    path: Path, epoch: int, model: FaceVGG, state: TrainState, params: TrainParams, task: str
) -> None:
    """Write the checkpoint of finished ``epoch`` (and the best weights when they are new)
    atomically; remove best-weights files the checkpoint no longer refers to."""
    history = state.history
    best_path = _best_file(path, history.best_epoch)
    if state.best_state is not None and history.best_epoch == epoch:
        _atomic_save(state.best_state, best_path)  # before the checkpoint that refers to it
    if path.is_file():
        path.replace(path.with_name(PREVIOUS_NAME))  # the fallback, should this write be lost
    keep = {best_path, _best_file(path, state.saved_best_epoch)}
    _atomic_save(
        {
            "format": _CKPT_FORMAT,
            "epoch": epoch,
            "task": task,
            "params": _resume_params(params),
            "model": cpu_state(model),
            "optimizer": state.opt.state_dict(),
            "scheduler": state.sched.state_dict(),
            "history": history.to_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_gen": state.gen.get_state(),
            **({} if state.scaler is None else {"scaler": state.scaler.state_dict()}),
        },
        path,
    )
    for stale in path.parent.glob("best-epoch*.pt"):
        if stale not in keep:
            stale.unlink(missing_ok=True)
    state.saved_best_epoch = history.best_epoch


def _check_compatible(path: Path, ckpt: dict[str, Any], params: TrainParams, task: str) -> None:
    if ckpt.get("format") != _CKPT_FORMAT:
        raise ModelFileError(
            f"{path} has checkpoint format {ckpt.get('format')}; expected {_CKPT_FORMAT}"
        )
    want = _resume_params(params)
    stored = {k: v for k, v in ckpt["params"].items() if k not in _RESUME_FREE}
    if stored != want or ckpt["task"] != task:
        diff = sorted(k for k in want if stored.get(k) != want[k])
        raise ModelFileError(
            f"checkpoint {path} was written for task {ckpt['task']!r} with different params "
            f"(differing: {diff or ['task']}); delete {path.parent} or pass resume=False"
        )


def restore_checkpoint(
    path: Path, model: FaceVGG, state: TrainState, params: TrainParams, task: str
) -> int:
    """Load the checkpoint at ``path`` into ``model`` and ``state`` (optimizer, scheduler,
    history, best weights, the global torch RNG and ``state.gen``).

    A checkpoint (or its best weights) that cannot be read falls back to
    ``checkpoint.prev.pt`` with a warning; when neither can be read, training starts over
    (epoch 1) with a warning. Nothing in an unreadable file is executed: files load with
    ``weights_only=True``.

    Returns:
        The first epoch still to run.

    Raises:
        ModelFileError: another checkpoint format, or one written for other params or task.
        MissingInputError: the best-weights file the checkpoint refers to is missing.
    """
    problems: list[str] = []
    for candidate in (path, path.with_name(PREVIOUS_NAME)):
        if not candidate.is_file():
            continue
        try:
            ckpt, best = _read(candidate)
        except _UNREADABLE as exc:
            problems.append(f"{candidate.name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        _check_compatible(candidate, ckpt, params, task)
        if problems:
            warnings.warn(
                f"unreadable checkpoint ({'; '.join(problems)}); resuming from "
                f"{candidate.name} (epoch {ckpt['epoch']}) in {path.parent}",
                stacklevel=2,
            )
        return _load(ckpt, best, model, state)
    warnings.warn(
        f"no readable checkpoint in {path.parent} ({'; '.join(problems)}); starting over",
        stacklevel=2,
    )
    return 1


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
    """A checkpoint and the best weights it refers to (``weights_only`` loads)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "epoch" not in ckpt:
        raise ValueError("not a facelens checkpoint")
    best_epoch = int(ckpt.get("history", {}).get("best_epoch") or 0)
    if not best_epoch:
        return ckpt, None
    best_path = _best_file(path, best_epoch)
    if not best_path.is_file():
        raise MissingInputError(
            f"checkpoint {path} refers to {best_path.name}, which is missing; "
            f"delete {path.parent} or pass resume=False to start over"
        )
    return ckpt, torch.load(best_path, map_location="cpu", weights_only=True)


def _load(
    ckpt: dict[str, Any], best: dict[str, Tensor] | None, model: FaceVGG, state: TrainState
) -> int:
    model.load_state_dict(ckpt["model"])
    state.opt.load_state_dict(ckpt["optimizer"])
    state.sched.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng_torch"])
    state.gen.set_state(ckpt["rng_gen"])
    if state.scaler is not None and "scaler" in ckpt:
        state.scaler.load_state_dict(ckpt["scaler"])
    state.history = History.from_dict(ckpt["history"])
    state.best_state = best
    state.saved_best_epoch = state.history.best_epoch
    return int(ckpt["epoch"]) + 1
