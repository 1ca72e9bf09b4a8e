"""Mish, x * tanh(softplus(x)), computed from a sigmoid on large CPU tensors.

Written by hand because torch's CPU ``F.mish`` (and ``tanh``) is slow on training-sized tensors,
forward and backward. With s = sigmoid(x), u = 1 - s: tanh(softplus(x)) = (1 - u^2) / (1 + u^2)
= s (1 + u) / (1 + u^2) exactly, and the derivative of x t is t + x (1 - t^2) s. Small tensors
(batch-1 inference) and CUDA keep ``F.mish``, whose single kernel wins there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Below this many elements F.mish's single kernel is faster than the composite.
FAST_MISH_MIN_NUMEL = 16384


class _SigmoidMish(torch.autograd.Function):
    """Mish from sigmoid with a hand-derived backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        u = 1 - s  # sigmoid(-x)
        den = u.square().add_(1)
        t = s.mul(u.add_(1)).div_(den)  # tanh(softplus(x)) = s (1 + u) / (1 + u^2), no cancellation
        ctx.save_for_backward(x, t, s)
        return x * t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, t, s = ctx.saved_tensors
        return grad * torch.addcmul(t, x * s, 1 - t * t)


def mish(x: Tensor) -> Tensor:
    """Mish activation; same values and gradients as F.mish, faster on large CPU tensors."""
    if x.device.type == "cpu" and x.numel() >= FAST_MISH_MIN_NUMEL:
        return _SigmoidMish.apply(x)
    return F.mish(x)


class Mish(nn.Module):
    """Module form of ``mish``."""

    def forward(self, x: Tensor) -> Tensor:
        """Elementwise mish, any shape."""
        return mish(x)
