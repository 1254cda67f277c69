"""One epoch of training, the validation pass, and the per-task loss and metrics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from facelens.device import DevicePolicy, model_device
from facelens.errors import TrainingDiverged
from facelens.interrupts import raise_if_requested
from facelens.models.vgg import FaceVGG
from facelens.progress import task as progress_task
from facelens.training.metrics import classification_report, regression_report
from facelens.training.params import TrainParams
from facelens.training.sources import BatchSource, batch_chunks

__all__ = ["TASKS", "collect_outputs", "task_loss", "train_epoch", "validate"]

#: The tasks a model is trained for: expression classes or attribute regression.
TASKS = ("expression", "attributes")
#: Smallest batch size of a validation pass (no gradients, so larger batches are cheap).
_MIN_EVAL_BATCH = 128


def task_loss(task: str, out: Tensor, y: Tensor, smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with label smoothing (expression) or MSE (attributes)."""
    if task == "expression":
        return F.cross_entropy(out, y.long(), label_smoothing=smoothing)
    return F.mse_loss(out, y.float())


@torch.no_grad()
def collect_outputs(
    model: FaceVGG, source: BatchSource, batch_size: int, policy: DevicePolicy | None = None
) -> tuple[Tensor, Tensor]:
    """Outputs (fp32, on the CPU) and targets for every item of ``source`` in order, in eval
    mode (the model's train/eval mode is restored afterwards). Batches go to the model's
    device; ``policy`` sets the precision (fp32 when ``None``)."""
    policy = policy or DevicePolicy(model_device(model))
    was_training = model.training
    model.eval()
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    try:
        for idx in torch.split(torch.arange(source.n), batch_size):
            raise_if_requested()
            x, y = source.batch(idx, None)
            with policy.autocast():
                out = source.forward(model, x.to(policy.device, non_blocking=True))
            outs.append(out.float().cpu())
            ys.append(torch.as_tensor(y).cpu())
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


def validate(
    model: FaceVGG,
    source: BatchSource,
    params: TrainParams,
    task: str,
    policy: DevicePolicy | None = None,
) -> tuple[float, float, dict[str, float]]:
    """``(val_loss, val_metric, val_* metrics)`` of ``model`` on ``source``.

    The metric is macro-F1 (expression) or mean Pearson r (attributes).
    """
    out, y = collect_outputs(model, source, max(params.batch_size, _MIN_EVAL_BATCH), policy)
    val_loss = float(task_loss(task, out, y))
    val_metric, extra = _val_metrics(task, out, y)
    return val_loss, val_metric, extra


def train_epoch(
    model: FaceVGG,
    source: BatchSource,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    params: TrainParams,
    task: str,
    *,
    desc: str,
    progress: bool,
    policy: DevicePolicy | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One pass over ``source`` in an order drawn from ``gen``; returns the summed loss
    (mean batch loss times batch size). Batches go to ``policy.device`` and run under its
    autocast; ``scaler`` (fp16) scales the loss."""
    policy = policy or DevicePolicy(model_device(model))
    model.train()
    total = 0.0
    chunks = batch_chunks(torch.randperm(source.n, generator=gen), params.batch_size)
    with progress_task("batches", len(chunks), enabled=progress) as bar:
        for step, idx in enumerate(chunks, 1):
            raise_if_requested()
            x, y = source.batch(idx, gen)
            x = x.to(policy.device, non_blocking=True)
            y = torch.as_tensor(y).to(policy.device, non_blocking=True)
            with policy.autocast():
                out = source.forward(model, x)
            loss = task_loss(task, out.float(), y, params.label_smoothing)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged: the loss became {value} in {desc}, batch {step} "
                    f"(lr {sched.get_last_lr()[-1]:.3g}, precision {params.precision}); the last "
                    "finished epoch's checkpoint is kept. Lower train.lr, use precision fp32, or "
                    "check the data"
                )
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            sched.step()
            total += value * len(idx)
            bar.update(step, {"loss": value})
    return total
