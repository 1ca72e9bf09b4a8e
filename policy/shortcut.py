"""Shortcut models (Frans et al. 2024): flow matching whose denoiser also takes the step size, for 1, 2, 4, ... steps.

Convention (the flow matching of policy/objectives.py): x_t = (1 - t) x_0 + t noise, t=0 data, t=1 noise. The
shortcut s(x_t, t, d) is the average velocity over [t - d, t], so one step of size d is x_{t-d} = x_t - d s(x_t, t, d).
At d = 0 it is the instantaneous velocity, whose target is noise - x_0 as in flow matching. The denoiser sees
t_model = t * time_scale and step_model = d * time_scale through a second scalar embedding (a ``step_conditioned``
denoiser: the factory builds one for this objective).

Training, on one batch whose first ``consistency_fraction`` of rows get self-consistency targets:
    flow rows: t ~ U(0, 1), d = 0, target noise - x_0;
    self-consistency rows: a step 2d = 2^-k, k ~ U{0..log2(max_steps)}, t a multiple of 2d in (0, 1] (the grid the
        sampler visits with 1/(2d) steps), target the mean of the model's own two steps of d, without gradient:
        s1 = s(x_t, t, d), s2 = s(x_t - d s1, t - d, d), target (s1 + s2) / 2, so that one step of 2d lands where
        two steps of d do. At the finest level (2d = 1/max_steps) the two half steps use the velocity (d = 0).
Both parts are one mean squared error. The two target passes run on the self-consistency rows only (bound denoisers
take the first rows of their batch), so with the default fraction a training step costs about 7/6 of a flow-matching
step.

Why shortcut models rather than MeanFlow (Geng et al. 2025), which learns the average velocity u(z, r, t) through
the identity u = v - (t - r) du/dt: that total derivative is a Jacobian-vector product through the denoiser on every
step, i.e. forward-mode autodiff through ConditionalUnet1D's fused FiLM, channels_last convolutions and GroupNorm,
untested here under bf16 autocast and torch.compile. Shortcut models need only two extra no-grad forward passes and
one more scalar embedding, which the UNet and the transformer take without changing their existing parameters.
MeanFlow reports better one-step image quality, so it is the natural follow-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from policy.objectives import _check_x0, _per_sample

# a bound denoiser: (x (B, T, D), t_model (B,), step_model (B,)) -> (B, T, D)
Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ShortcutFlow:
    """Shortcut-model objective: flow matching at d = 0 plus self-consistency of step sizes 1/max_steps .. 1."""

    kind: ClassVar[str] = "shortcut"
    trained_as: ClassVar[str] = "a shortcut model"
    step_conditioned: ClassVar[bool] = True  # the denoiser takes the step size (policy.factory)

    max_steps: int = 128  # finest trained step 1/max_steps (a power of two); sampling: 1, 2, 4, ... max_steps steps
    consistency_fraction: float = 0.25  # fraction of each batch trained on self-consistency targets (the rest: flow)
    time_scale: float = 100.0  # the denoiser sees t * time_scale and d * time_scale

    def __post_init__(self) -> None:
        """Validate the settings."""
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1; got {self.max_steps!r}")
        if self.max_steps & (self.max_steps - 1):
            raise ValueError(f"max_steps must be a power of two (1, 2, 4, ..., 128); got {self.max_steps}")
        if not 0 <= self.consistency_fraction <= 1:
            raise ValueError(f"consistency_fraction must be in [0, 1]; got {self.consistency_fraction}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0; got {self.time_scale}")

    def step_counts(self) -> tuple[int, ...]:
        """The step counts the model is trained for: 1, 2, 4, ..., max_steps."""
        return tuple(2**k for k in range(int(math.log2(self.max_steps)) + 1))

    def loss(self, denoiser: Denoiser, x0: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """MSE of denoiser(x_t, t, d) against flow and self-consistency targets; x0 (B, T, D) normalized actions."""
        _check_x0(x0)
        batch, device, dtype = x0.shape[0], x0.device, x0.dtype
        levels = int(math.log2(self.max_steps))
        n_consistency = round(batch * self.consistency_fraction)
        t_flow = torch.rand(batch, device=device, dtype=dtype, generator=generator)  # (B,)
        level = torch.randint(0, levels + 1, (batch,), device=device, generator=generator)  # (B,) 2d = 2^-level
        slot = torch.rand(batch, device=device, dtype=dtype, generator=generator)  # (B,) which multiple of 2d
        noise = torch.randn(x0.shape, device=device, dtype=dtype, generator=generator)  # (B, T, D)
        big = torch.pow(2.0, -level.to(dtype))  # (B,) 2d
        t_grid = big * (torch.floor(slot / big) + 1)  # (B,) in {2d, 4d, ..., 1}
        small = big / 2  # (B,) d
        small_in = torch.where(level == levels, torch.zeros_like(small), small)  # finest level: the velocity (d=0)
        consistency = torch.arange(batch, device=device) < n_consistency  # (B,)
        t = torch.where(consistency, t_grid, t_flow)  # (B,)
        step = torch.where(consistency, big, torch.zeros_like(big))  # (B,)
        x_t = torch.lerp(x0, noise, _per_sample(t, x0))  # (B, T, D)
        target = noise - x0  # (B, T, D)
        if n_consistency:
            k, scale = n_consistency, self.time_scale
            with torch.no_grad():  # the first k rows: the mean of two steps of d
                s1 = denoiser(x_t[:k], t[:k] * scale, small_in[:k] * scale)  # (k, T, D)
                x_mid = x_t[:k] - _per_sample(small[:k], s1) * s1
                s2 = denoiser(x_mid, (t[:k] - small[:k]) * scale, small_in[:k] * scale)
            target = torch.cat([(s1 + s2) / 2, target[k:]])
        prediction = denoiser(x_t, t * self.time_scale, step * self.time_scale)  # (B, T, D)
        return F.mse_loss(prediction, target)
