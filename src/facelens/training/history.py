"""What a run produced: one :class:`EpochResult` per epoch, the :class:`History` of a run,
and the :class:`Callback` protocol that receives each finished epoch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["Callback", "EpochResult", "History"]


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

    def curves(self) -> list[dict[str, float]]:
        """Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_metric`` and ``lr`` (the
        learning rate at the epoch's end, NaN when not recorded): the training-curve table
        that ``dvc plots`` draws (``reports/training/curves.csv``)."""
        return [
            {
                "epoch": e.epoch,
                "train_loss": e.train_loss,
                "val_loss": e.val_loss,
                "val_metric": e.val_metric,
                "lr": float(e.metrics.get("lr", float("nan"))),
            }
            for e in self.epochs
        ]

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
