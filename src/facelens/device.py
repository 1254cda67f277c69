"""Which accelerator and which numeric precision a run uses, decided in one place.

``device`` (top-level params key, ``--device`` on the CLI, ``FACELENS_DEVICE`` for the served
model) is ``auto | cpu | cuda | cuda:N | mps``; ``auto`` picks CUDA, else Apple's MPS, else the
CPU. ``precision`` is ``auto | fp32 | bf16 | fp16``: ``auto`` is bf16 autocast on a CUDA
device that supports it, fp16 (with a gradient scaler) on one that does not, bf16 on a CPU
with native bf16 matrix units (AVX512-BF16 / AMX) and fp32 elsewhere.

Explanations (Grad-CAM and the faithfulness checks) always run in fp32 (:func:`fp32`), so a
map never depends on the precision a model was trained with.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from facelens.errors import ConfigError

__all__ = [
    "DEVICE_ENV",
    "DevicePolicy",
    "Precision",
    "autocast",
    "cpu_has_bf16",
    "deterministic_kernels",
    "device_tags",
    "fp32",
    "model_device",
    "model_input",
    "parse_device_spec",
    "resolve_device",
    "resolve_precision",
    "stage_tensor",
    "to_device",
]

#: Environment variable that overrides the device (the served model reads it when it loads).
DEVICE_ENV = "FACELENS_DEVICE"

Precision = Literal["fp32", "bf16", "fp16"]
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def parse_device_spec(spec: str, origin: str = "device") -> str:
    """The normalised spelling of a device spec (no check that this machine has it).

    Raises:
        ConfigError: not ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """
    value = spec.strip().lower()
    if value in ("auto", "cpu", "cuda", "mps"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return value
    raise ConfigError(
        f"{origin}: got {spec!r}; allowed: auto, cpu, cuda, cuda:N (N a GPU index), mps"
    )


def resolve_device(spec: str = "auto", *, env: bool = True) -> torch.device:
    """The torch device for ``spec`` (``FACELENS_DEVICE`` wins when ``env`` is true).

    Raises:
        ConfigError: an unknown spec, or a device this machine does not have (``cuda`` without
            a CUDA GPU, ``cuda:3`` on a machine with two, ``mps`` off Apple silicon).
    """
    origin = "device"
    if env and os.environ.get(DEVICE_ENV, "").strip():
        spec, origin = os.environ[DEVICE_ENV], DEVICE_ENV
    value = parse_device_spec(spec, origin)
    if value == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if value.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value[5:]) if ":" in value else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(
                f"{origin}: got {spec!r} but this machine has {have}; use 'auto' or 'cpu'"
            )
    if value == "mps" and not _mps_available():
        raise ConfigError(f"{origin}: got 'mps' but MPS is not available here; use 'auto'")
    return torch.device(value)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def model_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch ``(B, 3, H, W)`` as the models take it: on ``device``, channels_last (the
    layout the models are kept in; convolutions are ~1.5x faster in it on a CPU)."""
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (oneDNN's check: AVX512-BF16/AMX)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None:  # pragma: no cover - builds without oneDNN
        return False
    try:
        return bool(check())
    except RuntimeError:  # pragma: no cover
        return False


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The precision ``precision`` (``auto`` or an explicit one) means on ``device``.

    Raises:
        ConfigError: an unknown value, or fp16 asked for on the CPU (no fast fp16 kernels).
    """
    value = precision.strip().lower()
    if value not in _PRECISIONS:
        raise ConfigError(f"precision: got {precision!r}; allowed: {', '.join(_PRECISIONS)}")
    if value == "fp16" and device.type == "cpu":
        raise ConfigError("precision: got 'fp16' on the CPU; use 'bf16', 'fp32' or 'auto'")
    if value != "auto":
        return value  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


@dataclass(frozen=True)
class DevicePolicy:
    """A resolved device and precision; :meth:`autocast` is the context training runs in."""

    device: torch.device
    precision: Precision = "fp32"

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "fp32") -> DevicePolicy:
        """Resolve both specs (see :func:`resolve_device` / :func:`resolve_precision`)."""
        dev = resolve_device(device)
        return cls(dev, resolve_precision(precision, dev))

    @property
    def needs_scaler(self) -> bool:
        """fp16 on CUDA needs a gradient scaler; bf16 and fp32 do not."""
        return self.precision == "fp16" and self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for this policy (a no-op context for fp32)."""
        return autocast(self.device, self.precision)


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16/fp16 on ``device``; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Run the body in fp32 even inside an autocast region (explanations use this)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """Deterministic kernels in the body when ``on`` (``torch.use_deterministic_algorithms``
    in warn-only mode: an op without a deterministic CUDA kernel warns instead of stopping
    training; cuDNN autotuning off, ``CUBLAS_WORKSPACE_CONFIG`` set); when off, cuDNN autotunes
    its convolutions for the fixed input size (faster, not bit-reproducible on a GPU). The
    previous settings are restored on exit. CPU kernels used here are deterministic anyway."""
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
        cudnn.deterministic,
    )
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.benchmark, cudnn.deterministic = not on, on
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark, cudnn.deterministic = saved[2], saved[3]


#: Share of a GPU's free memory that data staged on it (images, cached activations) may take;
#: the rest is left to the model, its activations and the optimizer.
DEVICE_DATA_SHARE = 0.4


def _free_bytes(device: torch.device) -> int | None:
    """Free memory of an accelerator, ``None`` where it cannot be asked (CPU, MPS)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def stage_tensor(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` moved to ``device`` once when it fits in :data:`DEVICE_DATA_SHARE` of the
    free memory there; else ``tensor`` itself (callers then copy batches, see
    :func:`to_device`). The CPU, and a tensor already there, get ``tensor`` (no copy)."""
    if device.type == "cpu" or tensor.device == device:
        return tensor
    free = _free_bytes(device)
    nbytes = tensor.element_size() * tensor.numel()
    if free is None or nbytes <= DEVICE_DATA_SHARE * free:
        return tensor.to(device)
    return tensor


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch copied to ``device``: through pinned memory and ``non_blocking`` for CUDA."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def device_tags(policy: DevicePolicy, stage: str | None = None) -> dict[str, str]:
    """Run tags naming the device actually used, its name, the precision and the torch / CUDA
    versions: ``facelens.device``... for the run's own stage, ``facelens.<stage>.device``...
    for a ``stage`` that logs into another stage's run (evaluate, explain and manifold log
    into the train run, possibly from another machine)."""
    dev = policy.device
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        name = "Apple MPS"
    else:
        name = platform.processor() or platform.machine()
    prefix = f"facelens.{stage}." if stage else "facelens."
    return {
        f"{prefix}device": str(dev),
        f"{prefix}device_name": name,
        f"{prefix}precision": policy.precision,
        f"{prefix}torch_version": torch.__version__,
        f"{prefix}cuda_version": str(torch.version.cuda or "none"),
    }
