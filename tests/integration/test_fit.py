"""Training loop: learning, attributes, checkpoint/resume, activation cache, early stopping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facelens.data.dataset import FaceDataset
from facelens.data.transforms import make_transform
from facelens.device import DevicePolicy
from facelens.models.build import build_model
from facelens.models.cache import ActivationCache
from facelens.models.params import ModelParams
from facelens.models.vgg import FaceVGG
from facelens.training.evaluation import evaluate, predict
from facelens.training.fit import fit
from facelens.training.history import EpochResult, History
from facelens.training.params import TrainParams

NORM = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
SIZE = 32


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two learnable classes (0 and 3): class 3 has a bright centre square."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2) * 3
    x = torch.randint(0, 100, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    x[y == 3, :, 8:24, 8:24] += 150
    return x, y


def _datasets(
    n: int = 12, augment: float = 0.0, task: str = "expression"
) -> tuple[FaceDataset, FaceDataset]:
    x, y = _images(n)
    targets: torch.Tensor | np.ndarray = y
    stats = None
    if task == "attributes":
        bright = x.float().mean(dim=(1, 2, 3)).numpy()
        targets = np.stack([bright / 20 + 1, 9 - bright / 30], axis=1).astype(np.float32)
        stats = (targets.mean(0), targets.std(0))
    tf = make_transform(SIZE, train=True, augment=augment, norm_mean=NORM[0], norm_std=NORM[1])
    vt = make_transform(SIZE, train=False, augment=0.0, norm_mean=NORM[0], norm_std=NORM[1])
    names = ["bright", "dark"] if task == "attributes" else None
    train = FaceDataset.from_tensors(
        x, targets, task, transform=tf, target_names=names, target_stats=stats
    )
    return train, train.with_transform(vt)


def _model(num_outputs: int = 7, head: str = "pooled", seed: int = 0) -> FaceVGG:
    params = ModelParams(arch="vgg16_bn", weights="none", input_size=SIZE)
    model, _ = build_model(params, num_outputs=num_outputs, head=head, seed=seed)  # type: ignore[arg-type]
    return model


class _Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[EpochResult] = []
        self.stop_after = stop_after

    def on_epoch_end(self, result: EpochResult) -> None:
        self.seen.append(result)
        if self.stop_after is not None and result.epoch >= self.stop_after:
            raise KeyboardInterrupt(f"stop after epoch {result.epoch}")


def _interrupted_after_epoch_1(
    train, val, params: TrainParams, ckpt: Path, *, epoch: int = 1, **kw
) -> None:
    """Fit a fresh model until the callback interrupts it after ``epoch``'s checkpoint."""
    with pytest.raises(KeyboardInterrupt):
        fit(
            _model(),
            train,
            val,
            params,
            "expression",
            callbacks=[_Recorder(stop_after=epoch)],
            checkpoint_dir=ckpt,
            progress=False,
            **kw,
        )


def test_train_params_are_closed() -> None:
    with pytest.raises(ValueError, match="extra"):
        TrainParams(learning_rate=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="trainable_blocks"):
        TrainParams(trainable_blocks=6)


def test_fit_reduces_loss_and_keeps_best_weights() -> None:
    train, val = _datasets(n=16, augment=0.3)
    model = _model()
    rec = _Recorder()
    params = TrainParams(epochs=3, batch_size=8, augment=0.3, seed=0)
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    history = fit(model, train, val, params, "expression", callbacks=[rec], progress=False)
    assert [e.epoch for e in history.epochs] == [1, 2, 3] and rec.seen == history.epochs
    losses = [e.train_loss for e in history.epochs]
    assert losses[-1] < 0.5 * losses[0]
    assert {"lr", "train_img_per_s", "val_accuracy", "val_macro_f1"} <= set(rec.seen[0].metrics)
    best = history.epochs[history.best_epoch - 1].val_metric
    assert history.best_val_metric == best == max(e.val_metric for e in history.epochs)
    # the model holds the best epoch's weights
    assert evaluate(model, val, "expression")["macro_f1"] == pytest.approx(best)
    # predictions never augment, even through the training dataset
    np.testing.assert_allclose(predict(model, train), predict(model, val), rtol=1e-5, atol=1e-5)
    # global state restored
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)
    assert History.from_dict(history.to_dict()) == history


def test_attributes_task() -> None:
    train, val = _datasets(n=12, task="attributes")
    model = _model(num_outputs=2)
    params = TrainParams(epochs=2, batch_size=6, augment=0.0, trainable_blocks=2, lr=3e-3)
    history = fit(model, train, val, params, "attributes", progress=False)
    assert all(math.isfinite(e.val_metric) for e in history.epochs)
    assert "val_mean_pearson" in history.epochs[-1].metrics
    pred = predict(model, val)
    assert pred.shape == (12, 2) and pred.dtype == np.float32
    # de-standardised: predictions live on the raw scale, not around 0
    assert abs(float(pred[:, 1].mean()) - float(val.raw_targets[:, 1].mean())) < 2.0
    rep = evaluate(model, val, "attributes")
    assert set(rep["pearson"]) == {"bright", "dark"}
    assert rep["mean_pearson"] == pytest.approx(history.best_val_metric, abs=1e-4)


def test_checkpoint_resume_matches_uninterrupted(tmp_path: Path) -> None:
    train, val = _datasets(n=12, augment=0.5)
    params = TrainParams(epochs=3, batch_size=6, augment=0.5, dropout=0.5, seed=1)

    full_model = _model()
    full = fit(full_model, train, val, params, "expression", progress=False)

    ckpt = tmp_path / "ckpt"
    _interrupted_after_epoch_1(train, val, params, ckpt)
    assert (ckpt / "checkpoint.pt").is_file() and (ckpt / "best-epoch1.pt").is_file()

    rec = _Recorder()
    resumed_model = _model(seed=99)  # different init: the checkpoint must overwrite it
    resumed = fit(
        resumed_model,
        train,
        val,
        params,
        "expression",
        callbacks=[rec],
        checkpoint_dir=ckpt,
        progress=False,
    )
    assert [e.epoch for e in rec.seen] == [2, 3]  # only the remaining epochs ran
    assert [e.epoch for e in resumed.epochs] == [1, 2, 3]
    np.testing.assert_allclose(
        [e.train_loss for e in resumed.epochs], [e.train_loss for e in full.epochs], rtol=1e-4
    )
    np.testing.assert_allclose(
        [e.val_loss for e in resumed.epochs], [e.val_loss for e in full.epochs], rtol=1e-4
    )
    assert resumed.best_epoch == full.best_epoch
    for a, b in zip(
        resumed_model.state_dict().values(), full_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert len(list(ckpt.glob("best-epoch*.pt"))) == 1

    # a finished run resumes to the same history without training
    again = fit(_model(), train, val, params, "expression", checkpoint_dir=ckpt, progress=False)
    assert (resumed.resumed_from, again.resumed_from, full.resumed_from) == (1, 3, 0)
    again.resumed_from = resumed.resumed_from
    assert again == resumed
    with pytest.raises(ValueError, match=r"different params \(differing: \['lr'\]\)"):
        fit(
            _model(),
            train,
            val,
            params.model_copy(update={"lr": 0.5}),
            "expression",
            checkpoint_dir=ckpt,
            progress=False,
        )


def test_cached_training_matches_image_training(tmp_path: Path) -> None:
    train, val = _datasets(n=12, augment=0.0)
    params = TrainParams(epochs=2, batch_size=6, augment=0.0, trainable_blocks=1, dropout=0.0)
    plain = fit(_model(), train, val, params, "expression", progress=False)
    cache = ActivationCache(tmp_path, dtype=torch.float32)
    key = {"arch": "vgg16_bn", "data_version": "test"}
    cached = fit(
        _model(),
        train,
        val,
        params,
        "expression",
        cache=cache,
        cache_key_fields=key,
        progress=False,
    )
    assert cached.used_cache and not plain.used_cache
    assert cache.misses == 2  # train and val activations computed once
    np.testing.assert_allclose(
        [e.train_loss for e in cached.epochs], [e.train_loss for e in plain.epochs], rtol=1e-4
    )
    np.testing.assert_allclose(
        [e.val_loss for e in cached.epochs], [e.val_loss for e in plain.epochs], rtol=1e-4
    )
    fit(
        _model(),
        train,
        val,
        params,
        "expression",
        cache=cache,
        cache_key_fields=key,
        progress=False,
    )
    assert cache.misses == 2 and cache.hits == 2  # second trial reuses both


def test_bf16_training_on_the_default_float16_cache(tmp_path: Path) -> None:
    """bf16 autocast with frozen blocks builds the (float16) activation cache and trains
    on it; the cache key records the precision, so fp32 runs never reuse bf16 activations."""
    train, val = _datasets(n=12, augment=0.0)
    params = TrainParams(epochs=2, batch_size=6, augment=0.0, trainable_blocks=2, precision="bf16")
    cache = ActivationCache(tmp_path)
    key = {"arch": "vgg16_bn", "data_version": "test"}
    policy = DevicePolicy(torch.device("cpu"), "bf16")
    history = fit(
        _model(),
        train,
        val,
        params,
        "expression",
        cache=cache,
        cache_key_fields=key,
        progress=False,
        policy=policy,
    )
    assert history.used_cache and cache.misses == 2
    assert all(math.isfinite(e.train_loss) for e in history.epochs)
    fp32 = params.model_copy(update={"precision": "fp32"})
    fit(_model(), train, val, fp32, "expression", cache=cache, cache_key_fields=key, progress=False)
    assert cache.misses == 4  # not the bf16 entries


def test_early_stopping_and_errors() -> None:
    train, val = _datasets(n=8)
    # all blocks frozen, negligible lr: the validation metric cannot improve after epoch 1
    params = TrainParams(
        epochs=5,
        batch_size=4,
        augment=0.0,
        trainable_blocks=0,
        lr=1e-12,
        schedule="constant",
        patience=1,
    )
    history = fit(_model(), train, val, params, "expression", progress=False)
    assert len(history.epochs) == 2 and history.stopped_early and history.best_epoch == 1
    with pytest.raises(ValueError, match="head"):
        fit(_model(head="classifier"), train, val, TrainParams(), "expression", progress=False)
    with pytest.raises(ValueError, match="task must be one of"):
        fit(_model(), train, val, params, "age", progress=False)


def test_bf16_autocast_trains_and_resumes_on_the_cpu(tmp_path: Path) -> None:
    """bf16 autocast (this CPU's AMX path) learns, keeps fp32 weights and checkpoints that
    resume to the same result as an uninterrupted bf16 run."""
    train, val = _datasets(n=16)
    params = TrainParams(epochs=3, batch_size=8, augment=0.0, seed=2, precision="bf16")
    policy = DevicePolicy(torch.device("cpu"), "bf16")
    model = _model()
    full = fit(model, train, val, params, "expression", progress=False, policy=policy)
    losses = [e.train_loss for e in full.epochs]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert predict(model, val).dtype == np.float32

    ckpt = tmp_path / "ckpt"
    _interrupted_after_epoch_1(train, val, params, ckpt, policy=policy)
    resumed_model = _model()
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
    assert resumed.resumed_from == 1
    assert [e.train_loss for e in resumed.epochs] == pytest.approx(losses)
    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_precision_is_part_of_the_checkpoint_params(tmp_path: Path) -> None:
    """A checkpoint written in bf16 does not silently resume an fp32 run."""
    train, val = _datasets(n=8)
    bf16 = TrainParams(epochs=2, batch_size=4, augment=0.0, precision="bf16")
    _interrupted_after_epoch_1(train, val, bf16, tmp_path)
    fp32 = bf16.model_copy(update={"precision": "fp32"})
    with pytest.raises(ValueError, match=r"differing: \['precision'\]"):
        fit(_model(), train, val, fp32, "expression", checkpoint_dir=tmp_path, progress=False)


def test_a_checkpoint_written_on_a_gpu_resumes_on_the_cpu(
    tmp_path: Path, save_as_if_from_cuda
) -> None:
    """Checkpoint and best weights written from CUDA tensors resume on a CPU-only machine
    to the same result as an uninterrupted CPU run."""
    train, val = _datasets(n=12)
    params = TrainParams(epochs=2, batch_size=6, augment=0.0, seed=4)
    full_model = _model()
    full = fit(full_model, train, val, params, "expression", progress=False)
    ckpt = tmp_path / "ckpt"
    _interrupted_after_epoch_1(train, val, params, ckpt)
    for path in ckpt.glob("*.pt"):  # rewrite both files as a GPU machine would have
        save_as_if_from_cuda(torch.load(path, weights_only=True), path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(ckpt / "checkpoint.pt", weights_only=True)
    resumed_model = _model(seed=7)
    resumed = fit(
        resumed_model, train, val, params, "expression", checkpoint_dir=ckpt, progress=False
    )
    assert resumed.resumed_from == 1
    assert [e.train_loss for e in resumed.epochs] == pytest.approx(
        [e.train_loss for e in full.epochs]
    )
    for a, b in zip(
        full_model.state_dict().values(), resumed_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_compiled_training_matches_eager() -> None:
    """``train.compile``: the same steps through ``torch.compile`` (no dropout, so no random
    stream differs between the two) give the same losses, up to the rounding of fused
    kernels that two epochs amplify, and a model that predicts alike."""
    train, val = _datasets(n=12)
    results = []
    for compiled in (False, True):
        model, _ = build_model(
            ModelParams(arch="vgg16_bn", weights="none", input_size=SIZE),
            num_outputs=7,
            dropout=0.0,
            seed=0,
        )
        params = TrainParams(
            epochs=2, batch_size=6, augment=0.0, seed=4, compile=compiled, precision="fp32"
        )
        history = fit(model, train, val, params, "expression", progress=False)
        results.append(([e.train_loss for e in history.epochs], predict(model, val)))
    (eager_losses, eager_pred), (compiled_losses, compiled_pred) = results
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-2)
    np.testing.assert_allclose(compiled_pred, eager_pred, rtol=2e-2, atol=2e-2)


class _Hostile:
    """Unpickling this would create ``marker`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("damage", ["truncated", "hostile", "both"])
def test_an_unreadable_checkpoint_falls_back_and_never_runs_code(
    tmp_path: Path, damage: str
) -> None:
    """Checkpoint cut short (a full disk) or replaced by a pickle that would run code: the
    payload never runs; training resumes from the previous epoch's checkpoint with a warning
    (or starts over when neither is readable) and ends as an uninterrupted run does."""
    train, val = _datasets(n=12)
    params = TrainParams(epochs=3, batch_size=6, augment=0.0, seed=5)
    full = fit(_model(), train, val, params, "expression", progress=False)
    ckpt = tmp_path / "ckpt"
    _interrupted_after_epoch_1(train, val, params, ckpt, epoch=2)
    current, previous = ckpt / "checkpoint.pt", ckpt / "checkpoint.prev.pt"
    assert current.is_file() and previous.is_file()
    marker = tmp_path / "payload-ran"
    if damage in ("truncated", "both"):
        current.write_bytes(current.read_bytes()[: current.stat().st_size // 3])
    if damage in ("hostile", "both"):
        torch.save({"epoch": 2, "evil": _Hostile(marker)}, current)
    if damage == "both":
        previous.write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        resumed = fit(  # the same init as `full`, which matters when training starts over
            _model(), train, val, params, "expression", checkpoint_dir=ckpt, progress=False
        )
    message = str(caught[-1].message)
    assert not marker.exists()  # weights_only loading never ran the payload
    if damage == "both":
        assert "starting over" in message and resumed.resumed_from == 0
    else:
        assert "resuming from checkpoint.prev.pt (epoch 1)" in message
        assert resumed.resumed_from == 1
    assert [e.train_loss for e in resumed.epochs] == pytest.approx(
        [e.train_loss for e in full.epochs]
    )


def test_a_diverging_loss_stops_with_one_message_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN loss (injected in epoch 2) stops training with a TrainingDiverged naming the
    epoch and what to change; epoch 1's checkpoint stays, and a rerun resumes from it."""
    import facelens.training.loop as loop
    from facelens.errors import TrainingDiverged

    train, val = _datasets(n=12)
    params = TrainParams(epochs=3, batch_size=6, augment=0.0, seed=6)
    real = loop.task_loss
    calls = {"n": 0}

    def diverging(task, out, y, smoothing=0.0):
        loss = real(task, out, y, smoothing)
        if not out.requires_grad:  # a validation pass
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 3 else loss  # epoch 2, batch 1

    monkeypatch.setattr(loop, "task_loss", diverging)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 2/3, batch 1 .*lr"):
        fit(_model(), train, val, params, "expression", checkpoint_dir=ckpt, progress=False)
    saved = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    monkeypatch.setattr(loop, "task_loss", real)
    resumed = fit(_model(), train, val, params, "expression", checkpoint_dir=ckpt, progress=False)
    assert resumed.resumed_from == 1 and len(resumed.epochs) == 3


def test_backbone_learns_at_a_fraction_of_the_head_rate() -> None:
    """``backbone_lr_mult``: the trained blocks get ``lr x mult`` (a group of their own),
    the head ``lr``, and the one-cycle schedule keeps that ratio; 1.0 keeps one group."""
    from facelens.models.vgg import FaceVGG, apply_freeze
    from facelens.training.optim import make_optimizer, make_scheduler

    model = FaceVGG("vgg16_bn", num_outputs=3)
    apply_freeze(model, 2)
    params = TrainParams(lr=1e-3, backbone_lr_mult=0.1)
    opt = make_optimizer(params, model)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])
    trained_blocks = {id(p) for b in model.blocks[3:] for p in b.parameters()}
    assert {id(p) for p in opt.param_groups[0]["params"]} == trained_blocks
    sched = make_scheduler(params, opt, total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    backbone_lr, head_lr = sched.get_last_lr()
    assert backbone_lr == pytest.approx(head_lr * 0.1)
    single = make_optimizer(params.model_copy(update={"backbone_lr_mult": 1.0}), model)
    assert len(single.param_groups) == 1
