"""Exponential moving average of a model's weights with Diffusion Policy's warmup schedule.

Built on ``torch.optim.swa_utils.AveragedModel``: its first update copies the model; update k
(counting from 0) then moves each floating-point parameter and buffer towards the model with
``ema <- ema + (1 - decay_k) * (model - ema)`` (one foreach lerp per device and dtype), where

    decay_k = clip(1 - (1 + step / inv_gamma) ** -power, min_value, max_value),
    step = k - update_after_step - 1 (decay 0 while step <= 0),

Diffusion Policy's ``EMAModel`` schedule (power 0.75 reaches 0.999 around 10k steps and
0.9999 around 215k). Buffers are averaged too (``use_buffers=True``): the normalizer's constant
statistics stay exact (lerp of equal values) and integer buffers are copied.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(
    num_averaged: int,
    power: float = 0.75,
    inv_gamma: float = 1.0,
    min_value: float = 0.0,
    max_value: float = 0.9999,
    update_after_step: int = 0,
) -> float:
    """Decay used by the update that follows ``num_averaged`` earlier updates (Diffusion Policy's formula)."""
    step = num_averaged - update_after_step - 1
    if step <= 0:
        return 0.0
    value = 1.0 - (1.0 + step / inv_gamma) ** -power
    return min(max(value, min_value), max_value)


class EMA(AveragedModel):
    """AveragedModel with Diffusion Policy's warmup decay; ``ema.module`` is the averaged copy."""

    def __init__(
        self,
        model: nn.Module,
        power: float = 0.75,
        inv_gamma: float = 1.0,
        min_value: float = 0.0,
        max_value: float = 0.9999,
        update_after_step: int = 0,
    ) -> None:
        if power <= 0 or inv_gamma <= 0:
            raise ValueError(f"EMA power and inv_gamma must be > 0, got power={power}, inv_gamma={inv_gamma}")
        if not 0.0 <= min_value <= max_value < 1.0:
            raise ValueError(f"EMA needs 0 <= min_value <= max_value < 1, got {min_value}, {max_value}")
        super().__init__(model, multi_avg_fn=self._average, use_buffers=True)
        self.power = power
        self.inv_gamma = inv_gamma
        self.min_value = min_value
        self.max_value = max_value
        self.update_after_step = update_after_step
        self._sizes = _tensor_sizes(model)

    def decay(self, num_averaged: int) -> float:
        """Decay of the update that follows ``num_averaged`` earlier updates."""
        return ema_decay(
            num_averaged, self.power, self.inv_gamma, self.min_value, self.max_value, self.update_after_step
        )

    def update_parameters(self, model: nn.Module) -> None:
        """Average ``model`` into the EMA copy; ValueError if its parameters/buffers differ in structure."""
        if _tensor_sizes(model) != self._sizes:
            raise ValueError(
                "EMA: the model's parameters/buffers no longer match the averaged copy (e.g. set_normalizer "
                "called after creating the EMA); create the EMA after the model is complete"
            )
        super().update_parameters(model)

    def _average(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        """multi_avg_fn: lerp floating tensors by 1 - decay, copy the rest."""
        weight = 1.0 - self.decay(int(num_averaged))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)


def _tensor_sizes(model: nn.Module) -> list[tuple[int, ...]]:
    """Shapes of all parameters then buffers, in the order AveragedModel pairs them."""
    return [tuple(t.shape) for t in (*model.parameters(), *model.buffers())]
