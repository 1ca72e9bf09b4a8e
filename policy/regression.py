"""MSE regression baseline: the same backbone trained to output the action chunk directly.

It is the control for the multimodality test: with one observation and two demonstrated
trajectories, the MSE minimizer is their average, which a generative objective avoids. The
denoiser is called with a zero input at t = 0, so any denoiser (UNet, transformer) serves as a
plain regression head without code changes. ``RegressionSampler`` is its one-call "sampler".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _regress(denoiser: Denoiser, like: Tensor) -> Tensor:
    """The chunk the denoiser predicts from a zero input at t = 0, shaped like ``like`` (B, T, D)."""
    return denoiser(torch.zeros_like(like), torch.zeros(like.shape[0], device=like.device, dtype=like.dtype))


@dataclass(frozen=True)
class Regression:
    """Objective: MSE between the denoiser's output (zero input, t = 0) and the normalized chunk."""

    kind: ClassVar[str] = "regression"

    def loss(self, denoiser: Denoiser, x0: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Scalar MSE; x0 (B, T, D) normalized actions. ``generator`` is unused (no noise is drawn)."""
        return F.mse_loss(_regress(denoiser, x0), x0)


class RegressionSampler:
    """One network call: returns the regressed chunk, ignoring the noise values (only their shape)."""

    name = "regression"
    compatible_objectives = (Regression.kind,)
    num_steps = 1

    def sample(
        self,
        denoiser: Denoiser,
        objective: Regression,
        noise: Tensor,
        *,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(B, T, D) chunk predicted by the regression head; num_steps must be None or 1."""
        if num_steps not in (None, 1):
            raise ValueError(f"a regression head takes exactly one step; got num_steps={num_steps}")
        return _regress(denoiser, noise)

    def nfe(self, num_steps: int | None = None) -> int:
        """Network evaluations per sample() call: always 1."""
        return 1
