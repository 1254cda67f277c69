"""Device and precision resolution (``facelens.device``), mocked where this machine lacks a GPU."""

from __future__ import annotations

import pytest
import torch

import facelens.device as dev
from facelens.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_auto_prefers_cuda_then_cpu(monkeypatch):
    _fake_cuda(monkeypatch, 0)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    _fake_cuda(monkeypatch, 1)
    assert dev.resolve_device("auto") == torch.device("cuda")


def test_explicit_devices_are_checked_against_the_machine(monkeypatch):
    _fake_cuda(monkeypatch, 2)
    assert dev.resolve_device("cuda:1") == torch.device("cuda:1")
    assert dev.resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"'cuda:2' but this machine has 2 CUDA"):
        dev.resolve_device("cuda:2")
    _fake_cuda(monkeypatch, 0)
    with pytest.raises(ConfigError, match="no CUDA device; use 'auto' or 'cpu'"):
        dev.resolve_device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", ""])
def test_unknown_device_names_what_is_allowed(bad):
    with pytest.raises(ConfigError, match="allowed: auto, cpu, cuda, cuda:N") as info:
        dev.resolve_device(bad)
    assert info.value.args[0].startswith(f"device: got {bad!r}")


def test_environment_variable_overrides_and_is_named_in_errors(monkeypatch):
    _fake_cuda(monkeypatch, 0)
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    assert dev.resolve_device("cuda") == torch.device("cpu")
    assert dev.resolve_device("cuda:7", env=True) == torch.device("cpu")
    monkeypatch.setenv(dev.DEVICE_ENV, "tpu")
    with pytest.raises(ConfigError, match=rf"^{dev.DEVICE_ENV}: got 'tpu'"):
        dev.resolve_device("cpu")
    assert dev.resolve_device("cpu", env=False) == torch.device("cpu")


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_the_bf16_units(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: has_bf16)
    assert dev.resolve_precision("auto", torch.device("cpu")) == expected
    assert dev.resolve_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_precision_on_cuda(monkeypatch, bf16, expected):
    _fake_cuda(monkeypatch, 1, bf16=bf16)
    assert dev.resolve_precision("auto", torch.device("cuda")) == expected
    policy = dev.DevicePolicy(torch.device("cuda"), expected)
    assert policy.needs_scaler is (expected == "fp16")


def test_bad_precisions_are_one_line_errors():
    with pytest.raises(ConfigError, match="allowed: auto, fp32, bf16, fp16"):
        dev.resolve_precision("half", torch.device("cpu"))
    with pytest.raises(ConfigError, match="'fp16' on the CPU"):
        dev.resolve_precision("fp16", torch.device("cpu"))


def test_autocast_and_the_fp32_escape():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    cpu = torch.device("cpu")
    with dev.autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
        with dev.fp32(cpu):
            assert (a @ b).dtype == torch.float32
    with dev.DevicePolicy(cpu, "fp32").autocast():
        assert (a @ b).dtype == torch.float32
    assert dev.DevicePolicy(cpu, "bf16").needs_scaler is False


def test_device_tags_name_device_precision_and_versions():
    tags = dev.device_tags(dev.DevicePolicy(torch.device("cpu"), "bf16"))
    assert tags["facelens.device"] == "cpu"
    assert tags["facelens.precision"] == "bf16"
    assert tags["facelens.torch_version"] == torch.__version__
    assert tags["facelens.device_name"]
    assert set(tags) == {
        "facelens.device",
        "facelens.device_name",
        "facelens.precision",
        "facelens.torch_version",
        "facelens.cuda_version",
    }


# --------------------------------------------------------------- data staged on the device
# PyTorch's "meta" device stands in for an accelerator: tensors there have shapes and
# devices but no data, so the whole batch path can be followed on a CPU-only machine.
META = torch.device("meta")


def test_stage_tensor_moves_what_fits_and_leaves_the_cpu_alone(monkeypatch):
    t = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    assert dev.stage_tensor(t, torch.device("cpu")) is t  # no copy on the CPU
    assert dev.stage_tensor(t, META).device == META
    monkeypatch.setattr(dev, "_free_bytes", lambda device: 1000)  # 768 B > 0.4 * 1000 B
    assert dev.stage_tensor(t, META) is t  # too big: batches are copied from the host
    assert dev.to_device(t[:2], META).device == META
    monkeypatch.setattr(dev, "_free_bytes", lambda device: 2000)
    assert dev.stage_tensor(t, META).device == META


def _augmenting_dataset():
    from facelens.data.dataset import FaceDataset
    from facelens.data.transforms import make_transform

    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    transform = make_transform(
        32, train=True, augment=0.5, norm_mean=(0.5,) * 3, norm_std=(0.25,) * 3
    )
    return FaceDataset.from_tensors(images, torch.arange(6) % 7, "expression", transform=transform)


def test_batches_are_sliced_and_augmented_on_the_device_with_the_same_draws():
    """Images are staged once; a batch is indexed, resized, augmented and normalised where
    they live, and draws the same random numbers from the CPU generator as on the CPU (the
    same seed augments alike on every device)."""
    from facelens.training.sources import ImageSource

    ds = _augmenting_dataset()
    on_device, on_cpu = ImageSource(ds, META), ImageSource(ds, torch.device("cpu"))
    assert on_device.ds.images.device == META and ds.images.device.type == "cpu"
    assert on_cpu.ds is ds  # the CPU path is untouched
    g_dev, g_cpu = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    idx = torch.tensor([0, 2, 5])
    x, y = on_device.batch(idx, g_dev)
    x_cpu, _ = on_cpu.batch(idx, g_cpu)
    assert x.device == META and y.device == META
    assert x.shape == x_cpu.shape == (3, 3, 32, 32)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(g_dev.get_state(), g_cpu.get_state())


def test_a_dataset_too_big_for_the_device_is_augmented_there_batch_by_batch(monkeypatch):
    from facelens.training.sources import ImageSource

    monkeypatch.setattr(dev, "_free_bytes", lambda device: 1000)  # nothing fits
    ds = _augmenting_dataset()
    src = ImageSource(ds, META)
    assert src.ds.images.device.type == "cpu"  # left on the host...
    x, y = src.batch(torch.tensor([1, 4]), torch.Generator().manual_seed(0))
    assert x.device == META and y.device == META  # ...but each batch is transformed there
    assert x.shape == (2, 3, 32, 32)


def test_cached_activations_live_on_the_device_when_they_fit():
    from torch.utils.data import TensorDataset

    from facelens.training.sources import ActivationSource

    acts = TensorDataset(torch.zeros(5, 8, 4, 4, dtype=torch.float16), torch.arange(5))
    src = ActivationSource(acts, 4, META)
    assert src.acts.device == META and src.targets.device == META
    x, y = src.batch(torch.tensor([1, 3]), None)
    assert x.dtype == torch.float32 and x.device == META and y.shape == (2,)


def test_deterministic_kernels_switch_and_restore():
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark)
    with dev.deterministic_kernels(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert not cudnn.benchmark and cudnn.deterministic
    assert (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark) == before
    with dev.deterministic_kernels(False):
        assert not torch.are_deterministic_algorithms_enabled()
        assert cudnn.benchmark  # cuDNN autotunes the convolutions for the fixed input size
    assert (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark) == before


def test_stage_tags_name_the_stage():
    tags = dev.device_tags(dev.DevicePolicy(torch.device("cpu")), "explain")
    assert tags["facelens.explain.device"] == "cpu"
    assert tags["facelens.explain.precision"] == "fp32"
    assert not any(k.startswith("facelens.device") for k in tags)
