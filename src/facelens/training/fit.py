"""Train / evaluate loops for :class:`~facelens.models.vgg.FaceVGG` -> :class:`History`.

Reporting (MLflow, Optuna pruning) enters through :class:`Callback` objects; this module never
imports mlflow or optuna. A callback may raise (e.g. ``optuna.TrialPruned``) to stop training;
the exception propagates after the epoch's checkpoint has been written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset, default_collate
from tqdm.auto import tqdm

from facelens._io import atomic_path
from facelens.data.transforms import ImageTransform, make_transform
from facelens.interrupts import raise_if_requested
from facelens.models.cache import ActivationCache
from facelens.models.vgg import FaceVGG, apply_freeze
from facelens.training.metrics import classification_report, regression_report
from facelens.training.params import TrainParams

__all__ = [
    "Callback",
    "EpochResult",
    "History",
    "evaluate",
    "fit",
    "predict",
]

_TASKS = ("expression", "attributes")
_CKPT = "checkpoint.pt"
_CKPT_FORMAT = 1
# Params that may differ between an interrupted run and its resumption.
_RESUME_FREE = ("num_threads",)


@dataclass
class EpochResult:
    """What one epoch produced (epochs are numbered from 1)."""

    epoch: int
    train_loss: float
    val_loss: float
    #: Macro-F1 (expression) or mean Pearson r (attributes) on the validation split.
    val_metric: float
    #: Scalars for logging: ``lr``, ``train_img_per_s`` and ``val_*`` metrics.
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class History:
    """All epochs of a run, which one was best, and whether training stopped early."""

    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_val_metric: float = float("nan")
    stopped_early: bool = False
    #: Whether training ran on cached frozen-prefix activations.
    used_cache: bool = False
    #: Last epoch restored from a checkpoint when this call resumed (0 = started fresh).
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``from_dict`` inverts it)."""
        return {
            "epochs": [asdict(e) for e in self.epochs],
            "best_epoch": self.best_epoch,
            "best_val_metric": self.best_val_metric,
            "stopped_early": self.stopped_early,
            "used_cache": self.used_cache,
            "resumed_from": self.resumed_from,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Rebuild a :class:`History` from :meth:`to_dict` output."""
        return cls(
            epochs=[EpochResult(**e) for e in data["epochs"]],
            best_epoch=int(data["best_epoch"]),
            best_val_metric=float(data["best_val_metric"]),
            stopped_early=bool(data["stopped_early"]),
            used_cache=bool(data.get("used_cache", False)),
            resumed_from=int(data.get("resumed_from", 0)),
        )


class Callback(Protocol):
    """Receives each finished epoch; may raise to stop training (the exception propagates)."""

    def on_epoch_end(self, result: EpochResult) -> None:
        """Called after each epoch (after its checkpoint is written)."""
        ...


# --------------------------------------------------------------------------------------------
# Batch sources: images (transformed per batch) or cached activations
# --------------------------------------------------------------------------------------------


class _ImageSource:
    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.n = len(ds)  # type: ignore[arg-type]

    def batch(self, idx: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        get_batch = getattr(self.ds, "get_batch", None)
        if callable(get_batch):
            x, y = get_batch(idx, gen)
        else:
            x, y = default_collate([self.ds[int(i)] for i in idx])[:2]
        return x.contiguous(memory_format=torch.channels_last), y

    def forward(self, model: FaceVGG, x: Tensor) -> Tensor:
        return model(x)


class _ActSource:
    def __init__(self, ds: TensorDataset, k: int) -> None:
        self.acts, self.targets = ds.tensors
        self.k = k
        self.n = len(ds)

    def batch(self, idx: Tensor, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x = self.acts[idx].float().contiguous(memory_format=torch.channels_last)
        return x, self.targets[idx]

    def forward(self, model: FaceVGG, x: Tensor) -> Tensor:
        return model.forward_from(x, self.k)


_Source = _ImageSource | _ActSource


def _chunks(order: Tensor, batch_size: int) -> list[Tensor]:
    """Split ``order`` into batches; a trailing batch of one joins the previous (BatchNorm)."""
    parts = list(torch.split(order, batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2] = torch.cat([parts[-2], parts.pop()])
    return parts


def _loss(task: str, out: Tensor, y: Tensor, smoothing: float = 0.0) -> Tensor:
    if task == "expression":
        return F.cross_entropy(out, y.long(), label_smoothing=smoothing)
    return F.mse_loss(out, y.float())


def _make_optimizer(params: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if params.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            trainable, lr=params.lr, momentum=0.9, nesterov=True, weight_decay=params.weight_decay
        )
    return torch.optim.RMSprop(trainable, lr=params.lr, weight_decay=params.weight_decay)


def _make_scheduler(
    params: TrainParams, opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if params.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=params.lr,
            total_steps=max(total_steps, 2),
            cycle_momentum=params.optimizer != "rmsprop",
        )
    if params.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def _better(metric: float, best: float | None) -> bool:
    if best is None:
        return True
    m = -math.inf if math.isnan(metric) else metric
    b = -math.inf if math.isnan(best) else best
    return m > b


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _resume_params(params: TrainParams) -> dict[str, Any]:
    return {k: v for k, v in params.model_dump(mode="json").items() if k not in _RESUME_FREE}


def _eval_view(ds: Dataset) -> Dataset:
    """The dataset without augmentation (predictions and validation must be deterministic)."""
    transform = getattr(ds, "transform", None)
    if isinstance(transform, ImageTransform) and transform.augment > 0:
        plain = make_transform(
            transform.input_size,
            train=False,
            augment=0.0,
            norm_mean=transform.norm_mean,
            norm_std=transform.norm_std,
        )
        return ds.with_transform(plain)  # type: ignore[attr-defined]
    return ds


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _outputs(model: FaceVGG, source: _Source, batch_size: int) -> tuple[Tensor, Tensor]:
    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    try:
        for idx in torch.split(torch.arange(source.n), batch_size):
            raise_if_requested()
            x, y = source.batch(idx, None)
            outs.append(source.forward(model, x).float())
            ys.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    if not outs:
        return torch.zeros(0, model.num_outputs), torch.zeros(0)
    return torch.cat(outs), torch.cat(ys)


def _val_metrics(task: str, out: Tensor, y: Tensor) -> tuple[float, dict[str, float]]:
    if task == "expression":
        names = [str(i) for i in range(out.shape[1])]
        rep = classification_report(y.numpy(), out.argmax(1).numpy(), names)
        return rep["macro_f1"], {"val_accuracy": rep["accuracy"], "val_macro_f1": rep["macro_f1"]}
    names = [str(i) for i in range(out.shape[1])]
    rep = regression_report(y.numpy(), out.numpy(), names)
    return rep["mean_pearson"], {
        "val_mean_pearson": rep["mean_pearson"],
        "val_mean_spearman": rep["mean_spearman"],
    }


def predict(model: FaceVGG, ds: Dataset, *, batch_size: int = 128) -> np.ndarray:
    """Model outputs for every item of ``ds``, in order.

    Args:
        model: the model (its train/eval mode is restored afterwards).
        ds: a dataset (``FaceDataset`` preferred); an augmenting ``ImageTransform`` is
            replaced by its non-augmenting counterpart.
        batch_size: inference batch size.

    Returns:
        ``(N, num_outputs)`` float32: logits (expression) or attribute predictions
        de-standardised with ``ds.target_stats`` when the dataset has them.
    """
    out, _ = _outputs(model, _ImageSource(_eval_view(ds)), batch_size)
    pred = out.numpy().astype(np.float32)
    stats = getattr(ds, "target_stats", None)
    if stats is not None:
        pred = pred * np.asarray(stats[1], np.float32) + np.asarray(stats[0], np.float32)
    return pred


def evaluate(model: FaceVGG, ds: Dataset, task: str) -> dict[str, Any]:
    """The :mod:`~facelens.training.metrics` report of ``model`` on ``ds``.

    Args:
        model: the model.
        ds: a ``FaceDataset`` (uses ``raw_targets`` and ``target_names``).
        task: ``expression`` (classification report) or ``attributes`` (regression report).
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}; got {task!r}")
    pred = predict(model, ds)
    raw = getattr(ds, "raw_targets", None)
    names = getattr(ds, "target_names", None) or [str(i) for i in range(pred.shape[1])]
    if raw is None:
        raise ValueError("evaluate needs a dataset with raw_targets (a FaceDataset)")
    if task == "expression":
        return classification_report(raw, pred.argmax(axis=1), names)
    return regression_report(raw, pred, names)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def fit(
    model: FaceVGG,
    train_ds: Dataset,
    val_ds: Dataset | None,
    params: TrainParams,
    task: str,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    cache: ActivationCache | None = None,
    cache_key_fields: dict[str, Any] | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` in place and return its :class:`History`.

    The best-validation weights are loaded into ``model`` at the end. Randomness (init of
    the loop, shuffling, augmentation, dropout) derives from ``params.seed``; the global torch
    RNG and thread count are restored on return.

    Args:
        model: the model (``params.trainable_blocks`` is applied to it).
        train_ds: training data (a ``FaceDataset`` with the training transform).
        val_ds: validation data (eval transform) used for model selection and early stopping;
            ``None`` keeps the last epoch.
        params: training hyper-parameters.
        task: ``expression`` (cross-entropy with label smoothing, macro-F1) or ``attributes``
            (MSE on standardised targets, mean Pearson r).
        callbacks: called after each epoch; an exception they raise propagates.
        checkpoint_dir: if given, ``checkpoint.pt`` (model, optimizer, scheduler, epoch,
            history, RNG states) is written atomically after each epoch, with the best
            weights in ``best-epoch<N>.pt``.
        resume: continue from an existing checkpoint in ``checkpoint_dir``.
        cache: activation cache; used when ``k >= 1`` blocks are frozen and ``augment == 0``.
        cache_key_fields: identity of backbone and data for the cache key (arch, weights
            source, input size, data version...).
        progress: show a tqdm bar per epoch.

    Raises:
        ValueError: unknown task, head mismatch, too little data, or a checkpoint written
            with different params.
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}; got {task!r}")
    if model.head != params.head:
        raise ValueError(
            f"params.head is {params.head!r} but the model was built with head {model.head!r}; "
            "build the model with the same head"
        )
    if len(train_ds) < 2:  # type: ignore[arg-type]
        raise ValueError(f"training needs at least 2 samples; got {len(train_ds)}")  # type: ignore[arg-type]
    threads = torch.get_num_threads()
    if params.num_threads is not None:
        torch.set_num_threads(params.num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            return _fit(
                model,
                train_ds,
                val_ds,
                params,
                task,
                callbacks=callbacks,
                checkpoint_dir=checkpoint_dir,
                resume=resume,
                cache=cache,
                cache_key_fields=cache_key_fields or {},
                progress=progress,
            )
    finally:
        torch.set_num_threads(threads)


def _fit(
    model: FaceVGG,
    train_ds: Dataset,
    val_ds: Dataset | None,
    params: TrainParams,
    task: str,
    *,
    callbacks: Sequence[Callback],
    checkpoint_dir: Path | None,
    resume: bool,
    cache: ActivationCache | None,
    cache_key_fields: dict[str, Any],
    progress: bool,
) -> History:
    gen = torch.Generator().manual_seed(params.seed)
    k = apply_freeze(model, params.trainable_blocks)
    model.to(memory_format=torch.channels_last)  # ~1.5x faster convs on CPU

    if val_ds is not None:
        val_ds = _eval_view(val_ds)
    augmenting = params.augment > 0 or getattr(getattr(train_ds, "transform", None), "augment", 0)
    use_cache = cache is not None and k >= 1 and not augmenting
    train_src: _Source
    val_src: _Source | None
    if use_cache:
        assert cache is not None
        train_src = _ActSource(
            cache.get_or_compute(
                model, k, train_ds, key_fields={**cache_key_fields, "split": "train"}
            ),
            k,
        )
        val_src = (
            None
            if val_ds is None
            else _ActSource(
                cache.get_or_compute(
                    model, k, val_ds, key_fields={**cache_key_fields, "split": "val"}
                ),
                k,
            )
        )
    else:
        train_src = _ImageSource(train_ds)
        val_src = None if val_ds is None else _ImageSource(val_ds)

    n = train_src.n
    steps = len(_chunks(torch.arange(n), params.batch_size))
    opt = _make_optimizer(params, model)
    sched = _make_scheduler(params, opt, steps * params.epochs)
    history = History(used_cache=use_cache)
    best_state: dict[str, Tensor] | None = None
    start = 1

    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / _CKPT
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and ckpt_path.is_file():
            start, history, best_state = _restore(ckpt_path, model, opt, sched, gen, params, task)
            history.used_cache = use_cache
            history.resumed_from = start - 1
            if history.stopped_early or start > params.epochs:
                if best_state is not None:
                    model.load_state_dict(best_state)
                return history

    for epoch in range(start, params.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        bar = tqdm(
            _chunks(torch.randperm(n, generator=gen), params.batch_size),
            desc=f"epoch {epoch}/{params.epochs}",
            disable=not progress,
            leave=False,
        )
        for idx in bar:
            raise_if_requested()
            x, y = train_src.batch(idx, gen)
            loss = _loss(task, train_src.forward(model, x), y, params.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        train_seconds = time.perf_counter() - t0
        metrics: dict[str, float] = {
            "lr": float(sched.get_last_lr()[0]),
            "train_img_per_s": n / max(train_seconds, 1e-9),
        }
        if val_src is not None:
            out, y = _outputs(model, val_src, max(params.batch_size, 128))
            val_loss = float(_loss(task, out, y))
            val_metric, extra = _val_metrics(task, out, y)
            metrics.update(extra)
        else:
            val_loss, val_metric = float("nan"), float("nan")
        result = EpochResult(
            epoch=epoch,
            train_loss=total / n,
            val_loss=val_loss,
            val_metric=float(val_metric),
            metrics=metrics,
            seconds=time.perf_counter() - t0,
        )
        history.epochs.append(result)
        if val_src is None or _better(
            result.val_metric, history.best_val_metric if best_state is not None else None
        ):
            best_state = _cpu_state(model)
            history.best_epoch = epoch
            history.best_val_metric = result.val_metric
        stop = params.patience is not None and epoch - history.best_epoch >= params.patience
        history.stopped_early = bool(stop and epoch < params.epochs)
        if ckpt_path is not None:
            _checkpoint(ckpt_path, epoch, model, opt, sched, gen, history, best_state, params, task)
        for cb in callbacks:
            cb.on_epoch_end(result)
        if stop:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _best_file(ckpt_path: Path, epoch: int) -> Path:
    return ckpt_path.parent / f"best-epoch{epoch}.pt"


def _checkpoint(
    path: Path,
    epoch: int,
    model: FaceVGG,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    history: History,
    best_state: dict[str, Tensor] | None,
    params: TrainParams,
    task: str,
) -> None:
    best_path = _best_file(path, history.best_epoch)
    if best_state is not None and history.best_epoch == epoch:
        _atomic_save(best_state, best_path)  # before the checkpoint that refers to it
    _atomic_save(
        {
            "format": _CKPT_FORMAT,
            "epoch": epoch,
            "task": task,
            "params": _resume_params(params),
            "model": _cpu_state(model),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history.to_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_gen": gen.get_state(),
        },
        path,
    )
    for stale in path.parent.glob("best-epoch*.pt"):
        if stale != best_path:
            stale.unlink(missing_ok=True)


def _restore(
    path: Path,
    model: FaceVGG,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    params: TrainParams,
    task: str,
) -> tuple[int, History, dict[str, Tensor] | None]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != _CKPT_FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {ckpt.get('format')}; expected {_CKPT_FORMAT}"
        )
    want = _resume_params(params)
    if ckpt["params"] != want or ckpt["task"] != task:
        diff = sorted(k for k in want if ckpt["params"].get(k) != want[k])
        raise ValueError(
            f"checkpoint {path} was written for task {ckpt['task']!r} with different params "
            f"(differing: {diff or ['task']}); delete {path.parent} or pass resume=False"
        )
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng_torch"])
    gen.set_state(ckpt["rng_gen"])
    history = History.from_dict(ckpt["history"])
    best_state = None
    if history.best_epoch:
        best_path = _best_file(path, history.best_epoch)
        if not best_path.is_file():
            raise FileNotFoundError(
                f"checkpoint {path} refers to {best_path.name}, which is missing; "
                f"delete {path.parent} or pass resume=False to start over"
            )
        best_state = torch.load(best_path, map_location="cpu", weights_only=True)
    return int(ckpt["epoch"]) + 1, history, best_state
