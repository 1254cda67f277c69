"""Training killed after epoch k and run again ends bit-for-bit where an uninterrupted run
with the same seed ends, on the CPU: weights (``torch.equal`` on every tensor of the state
dict), the per-epoch losses and metrics, the best epoch.

What makes it exact: ``checkpoint.pt`` holds the model, the optimizer and scheduler states,
the history, the global torch RNG (dropout) and the generator that draws the batch order and
the augmentation; the CPU kernels are deterministic for a fixed thread count. Both fp32 and the
default precision (``auto``: bf16 autocast on a CPU with native bf16 units, fp32 elsewhere)
are checked, with augmentation and dropout on so that every RNG stream matters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facelens.data.dataset import FaceDataset
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy, resolve_precision
from facelens.models.build import build_model
from facelens.models.params import ModelParams
from facelens.models.vgg import FaceVGG
from facelens.training.fit import fit
from facelens.training.history import EpochResult, History
from facelens.training.params import TrainParams

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
SIZE = 32
EPOCHS = 3


def _datasets(n: int = 12) -> tuple[FaceDataset, FaceDataset]:
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(n) % 2) * 3
    x = torch.randint(0, 100, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    x[y == 3, :, 8:24, 8:24] += 150
    tf = make_transform(SIZE, train=True, augment=0.5, norm_mean=NORM[0], norm_std=NORM[1])
    vt = make_transform(SIZE, train=False, augment=0.0, norm_mean=NORM[0], norm_std=NORM[1])
    train = FaceDataset.from_tensors(x, y, "expression", transform=tf)
    return train, train.with_transform(vt)


def _model(seed: int = 0) -> FaceVGG:
    params = ModelParams(arch="vgg16_bn", weights="none", input_size=SIZE)
    model, _ = build_model(params, num_outputs=7, seed=seed)
    return model


class _KillAfter:
    """Stands for the process dying right after epoch ``k``'s checkpoint was written."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_epoch_end(self, result: EpochResult) -> None:
        if result.epoch >= self.k:
            raise KeyboardInterrupt(f"killed after epoch {result.epoch}")


def _numbers(history: History) -> list[tuple[float, float, float, float]]:
    return [(e.train_loss, e.val_loss, e.val_metric, e.metrics["lr"]) for e in history.epochs]


@pytest.mark.parametrize(("precision", "k"), [("fp32", 2), ("auto", 1)])
def test_resumed_training_equals_an_uninterrupted_run_bit_for_bit(
    tmp_path: Path, precision: str, k: int
) -> None:
    train, val = _datasets()
    params = TrainParams(
        epochs=EPOCHS, batch_size=6, augment=0.5, dropout=0.5, seed=3, precision=precision
    )
    cpu = torch.device("cpu")
    policy = DevicePolicy(cpu, resolve_precision(precision, cpu))

    full_model = _model()
    full = fit(
        full_model,
        train,
        val,
        params,
        "expression",
        checkpoint_dir=tmp_path / "full",
        progress=False,
        policy=policy,
    )

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit(
            _model(),
            train,
            val,
            params,
            "expression",
            callbacks=[_KillAfter(k)],
            checkpoint_dir=ckpt,
            progress=False,
            policy=policy,
        )
    resumed_model = _model(seed=123)  # another init: everything must come from the checkpoint
    resumed = fit(
        resumed_model,
        train,
        val,
        params,
        "expression",
        checkpoint_dir=ckpt,
        progress=False,
        policy=policy,
    )

    assert resumed.resumed_from == k
    assert _numbers(resumed) == _numbers(full)  # exact float equality, every epoch
    assert (resumed.best_epoch, resumed.best_val_metric) == (full.best_epoch, full.best_val_metric)
    full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
    assert list(full_state) == list(resumed_state)
    differing = [n for n in full_state if not torch.equal(full_state[n], resumed_state[n])]
    assert not differing, f"best weights differ after resuming from epoch {k}: {differing[:5]}"
    # the last epoch's weights and optimizer state (the checkpoints), not only the best ones
    last_full, last_resumed = (
        torch.load(d / "checkpoint.pt", weights_only=True) for d in (tmp_path / "full", ckpt)
    )
    assert last_full["epoch"] == last_resumed["epoch"] == EPOCHS
    for name, tensor in last_full["model"].items():
        assert torch.equal(tensor, last_resumed["model"][name]), name
    moments = [
        (a, b)
        for sa, sb in zip(
            last_full["optimizer"]["state"].values(),
            last_resumed["optimizer"]["state"].values(),
            strict=True,
        )
        for a, b in zip(sa.values(), sb.values(), strict=True)
    ]
    assert moments and all(torch.equal(a, b) for a, b in moments)
