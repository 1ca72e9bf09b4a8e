"""Classifier-free guidance (CFG): out = out_uncond + w (out_cond - out_uncond) from one batched denoiser call.

The conditional and unconditional passes share the observation and the noisy chunk; they differ only in the
instruction (the real one, or the learned null embedding). ``classifier_free_guidance`` wraps a denoiser bound to a
doubled batch (B conditional rows, then B unconditional rows) so that each denoising step is ONE call on 2B rows:
the NFE per chunk is the sampler's, each call on twice the batch. w = 1 is the conditional model and w = 0 the
unconditional one; ``ChunkPolicy`` then runs one pass on B rows (no doubled batch), so those are exact.

Every objective's output here (DDPM eps / x0 / v, flow velocity, shortcut step, consistency and regression output)
is affine in the others at fixed (x_t, t), so guiding the raw output is guiding eps, the score and x0_hat alike; it
applies unchanged to every sampler. CFG samples the tilted law p(x | c)^w p(x)^(1 - w) exactly when both noised laws
are Gaussians of equal variance (tests/test_guidance.py); for a multimodal p(x) it pushes further from the other
modes than the tilted law does (the guided field is not the score of a noised tilted law).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]


def check_guidance_scale(scale: float) -> float:
    """The guidance scale as a float; ValueError unless it is finite and >= 0."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guidance_scale={scale!r} must be a finite number >= 0 (1 = conditional, 0 = unconditional)")
    return float(scale)


def classifier_free_guidance(denoise_pair: Denoiser, scale: float) -> Denoiser:
    """Wrap ``denoise_pair`` (bound to 2B rows: B conditional, then B unconditional) as a B-row guided denoiser.

    The returned callable takes x (B, T, Da) and per-row scalars (t (B,), [step (B,)]), calls ``denoise_pair`` once on
    (2B, T, Da) and returns uncond + scale (cond - uncond), (B, T, Da).
    """
    scale = check_guidance_scale(scale)

    def guided(x: Tensor, *per_row: Tensor) -> Tensor:
        doubled = [torch.cat((s, s)) if s.ndim else s for s in per_row]  # (2B,) each
        cond, uncond = denoise_pair(torch.cat((x, x)), *doubled).chunk(2)  # (B, T, Da) each
        return torch.lerp(uncond, cond, scale)

    return guided
