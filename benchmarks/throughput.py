"""VGG16-BN throughput against the hardware: forward and training img/s per input size and
precision, and the achieved FLOP/s as a share of the matrix-multiply peak measured in the same
run on the same device.

    python benchmarks/throughput.py                      # this machine, auto device
    python benchmarks/throughput.py --device cuda --sizes 64 112 224 --train-sizes 64 112 224

Prints one table row per (size, precision, mode). Nothing is asserted: the figures vary with
the machine and its load; benchmarks/README.md records them with the command that made them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import vgg16_bn

from facelens.device import DevicePolicy, autocast, cpu_has_bf16, deterministic_kernels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, min_s: float, warmup: int) -> float:
    """Seconds per call: ``warmup`` calls, then as many as fill ``min_s`` (at least 3)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_s:
        fn()
        calls += 1
    _sync(device)
    return (time.perf_counter() - start) / calls


def gemm_peak(device: torch.device, precision: str, n: int, min_s: float) -> float:
    """Measured matrix-multiply FLOP/s in ``precision``: the better of an n x n x n
    ``torch.mm`` and the same product as a 1 x 1 convolution (oneDNN's GEMM, which the model's
    convolutions use; on some CPUs, e.g. AMD with MKL, ``torch.mm`` is far below it)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm = 2 * n**3 / _timed(lambda: torch.mm(a, b), device, min_s, warmup=2)
    side = max(1, round((n / 8) ** 0.5))  # 8 x side x side pixels ~ n rows
    rows = 8 * side * side
    conv = nn.Conv2d(n, n, 1, bias=False).to(device=device, dtype=dtype)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(8, n, side, side, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        c1 = 2 * rows * n * n / _timed(lambda: conv(x), device, min_s, warmup=2)
    return max(mm, c1)


def forward_flops(model: nn.Module, size: int, device: torch.device) -> float:
    """Multiply-add FLOPs (x2) of one image's forward pass, counted on conv and linear layers."""
    total = 0.0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_out = module.in_channels // module.groups * kh * kw
            total += 2.0 * output.numel() * per_out
        elif isinstance(module, nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device=device))
    for h in hooks:
        h.remove()
    return total


def build(device: torch.device, classes: int = 7) -> nn.Module:
    model = vgg16_bn(weights=None, num_classes=classes)
    return model.to(device=device, memory_format=torch.channels_last)


def forward_rate(model, size, batch, device, precision, min_s) -> float:
    """Images per second of batched inference (eval mode, inference_mode, channels_last)."""
    model.eval()
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode(), autocast(device, precision):
            model(x)

    return batch / _timed(step, device, min_s, warmup=2)


def train_rate(model, size, batch, device, precision, min_s) -> float:
    """Images per second of full training steps (forward, backward, AdamW step)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return batch / _timed(step, device, min_s, warmup=1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 112, 224])
    ap.add_argument("--train-sizes", type=int, nargs="*", default=[64, 112])
    ap.add_argument("--batch", type=int, default=8, help="forward batch size")
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--precisions", nargs="+", default=None, help="default: fp32 + bf16")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--min-seconds", type=float, default=3.0, help="timing window per figure")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels, no cuDNN autotuning (train.deterministic: its cost)",
    )
    args = ap.parse_args(argv)
    for value in [*args.sizes, *args.train_sizes, args.batch, args.train_batch, args.gemm_n]:
        if value < 1:
            ap.error(f"sizes and batch sizes must be positive; got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = DevicePolicy.resolve(args.device).device
    precisions = args.precisions or ["fp32", "bf16"]
    with deterministic_kernels(args.deterministic):
        _run(args, device, precisions)


def measured_peaks(
    device: torch.device, precisions: list[str], gemm_n: int, min_s: float, note: str = ""
) -> dict[str, float]:
    """Print the machine line, measure and print the GEMM peak of each precision."""
    print(
        f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
        f"cpu bf16 units: {cpu_has_bf16()}{note}",
        flush=True,
    )
    peaks = {p: gemm_peak(device, p, gemm_n, min_s) for p in precisions}
    for p, peak in peaks.items():
        print(f"GEMM peak {p} ({gemm_n}^3): {peak / 1e9:.1f} GFLOP/s", flush=True)
    return peaks


def _run(args: argparse.Namespace, device: torch.device, precisions: list[str]) -> None:
    note = f" | deterministic: {args.deterministic}"
    peaks = measured_peaks(device, precisions, args.gemm_n, args.min_seconds, note)
    torch.manual_seed(0)
    model = build(device)
    print(f"{'mode':8} {'size':>4} {'prec':>5} {'img/s':>8} {'GFLOP/s':>9} {'% peak':>7}")
    plan = [("forward", s) for s in args.sizes] + [("train", s) for s in args.train_sizes]
    for mode, size in plan:
        flops = forward_flops(model, size, device) * (1 if mode == "forward" else 3)
        for p in precisions:
            if mode == "forward":
                rate = forward_rate(model, size, args.batch, device, p, args.min_seconds)
            else:
                rate = train_rate(model, size, args.train_batch, device, p, args.min_seconds)
            achieved = rate * flops
            print(
                f"{mode:8} {size:>4} {p:>5} {rate:>8.1f} {achieved / 1e9:>9.1f} "
                f"{100 * achieved / peaks[p]:>6.1f}%",
                flush=True,
            )


if __name__ == "__main__":
    main()
