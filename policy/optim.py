"""Optimizer, learning-rate schedule, device and autocast choices for training a ChunkPolicy.

AdamW uses the fused kernel where torch has one for the device (CPU and CUDA in torch >= 2.4): one
kernel per step instead of a loop over parameters, and the same maths. The schedule is a
``LambdaLR`` (linear warmup, then cosine decay to ``min_lr_ratio``), whose state_dict is plain
numbers, so it round-trips through ``weights_only`` checkpoints.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn


def resolve_device(device: str) -> torch.device:
    """ "auto" -> CUDA when present, else CPU; any other string is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device=auto or device=cpu")
    return resolved


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); without it bf16 autocast is much slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private, so looked up)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_enabled(amp: str | bool, device: torch.device, images: bool = True) -> bool:
    """Whether to train under bf16 autocast; true/false force it.

    "auto" = on CUDA, and on CPUs with native bf16 for policies that see images: there the convolutions of the
    image trunk gain (1.4x per step at batch 64, 2.4x at 256 on AMX). Low-dim policies stay fp32: their UNet
    lost under bf16 until its short convolutions trained as matmuls, and now gains 1.37x for [64, 128, 256] at
    batch 64 but nothing for the PushT recipe's [32, 64, 128] at batch 256, whose success under bf16 is unmeasured.
    """
    if amp == "auto":
        return device.type == "cuda" or (device.type == "cpu" and images and cpu_has_native_bf16())
    if isinstance(amp, bool):
        return amp
    raise ValueError(f"amp={amp!r} must be auto, true or false")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_optimizer(
    params: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    device: torch.device,
) -> torch.optim.AdamW:
    """AdamW with the fused kernel on CPU/CUDA."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR following ``warmup_cosine``."""
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(
            f"need warmup_steps >= 0, total_steps >= 1, 0 <= min_lr_ratio <= 1; "
            f"got {warmup_steps}, {total_steps}, {min_lr_ratio}"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio)
    )
