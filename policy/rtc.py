"""Real-time chunking (RTC; Black et al. 2025, arXiv 2506.07339): sample a chunk that continues the previous one.

While a chunk is computed the robot keeps executing the previous one, so the new chunk's first d actions are
already decided when it arrives. RTC treats the new chunk as an inpainting problem, with no retraining: every
denoising step pulls the denoiser's clean-chunk estimate x0_hat towards the previous chunk Y (time-aligned,
in the policy's normalized action space) through a vector-Jacobian product of the denoiser,

    g = J^T [W * (Y - x0_hat)],   J = d x0_hat / d x_t   (one backward pass per step),

with a soft mask W over the chunk: 1 on the d committed actions, an exponentially decaying weight over the
rest of the overlap with the previous chunk, 0 after it (``soft_mask``). g is minus the gradient of
1/2 sum W (Y - x0_hat)^2 with respect to x_t.

Flow matching (x_t = (1 - t) x0 + t noise, t = 1 noise, Euler from t = 1 to 0; the paper's tau is 1 - t):
    x0_hat = x_t - t v,   v_guided = v - w(t) g,   w(t) = min(beta, ((1 - t)^2 + t^2) / (t (1 - t))),
the paper's guided Euler step with its weight (1 - tau) / (tau r_tau^2), r_tau^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2),
clipped at beta (at t = 1 the weight is infinite).
DDPM with DDIM steps (x_t = alpha x0 + sigma eps): the same step mapped onto this path (x_flow = x_t / (alpha + sigma),
t = sigma / (alpha + sigma)) moves the x0 estimate by kappa g, kappa = sigma min(beta, 1 / (alpha sigma)), and eps
so that x_t = alpha x0 + sigma eps still holds; x0_hat is the sampler's own (clipped if the model clips).

Both are written as a change of the denoiser's output (``Guidance.wrap``), so the samplers' own loops run them
unchanged; beta = 0 (or W = 0) leaves the output untouched, bit for bit. The first d actions of the returned chunk
are then overwritten with the committed ones (``Guidance.freeze``): they are executed from the previous chunk anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from policy.objectives import DDPM, FlowMatching

Denoiser = Callable[[Tensor, Tensor], Tensor]

MASK_SCHEDULES = ("exp", "linear", "hard")  # RTC's exponential decay, a linear ramp, the frozen prefix alone
RTC_SAMPLERS = ("euler", "ddim")  # flow models with Euler steps (the paper), DDPM models with DDIM steps


def soft_mask(length: int, delay: int, overlap: int, schedule: str = "exp") -> Tensor:
    """Guidance weights (length,) float32: 1 on [0, delay), decaying on [delay, overlap), 0 from overlap on.

    ``overlap`` is the number of the new chunk's positions the previous chunk covers (H - s). On the decaying
    part c_i = (overlap - i) / (overlap - delay + 1); "exp" weighs c_i (e^c_i - 1) / (e - 1) (the paper's),
    "linear" c_i, "hard" 0 (guidance on the committed actions only).
    """
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"unknown RTC mask {schedule!r}; valid options: {', '.join(MASK_SCHEDULES)}")
    if not 0 <= delay <= overlap <= length:
        raise ValueError(f"need 0 <= delay <= overlap <= length; got delay={delay}, overlap={overlap}, length={length}")
    weights = torch.zeros(length, dtype=torch.float64)
    weights[:delay] = 1.0
    i = torch.arange(delay, overlap, dtype=torch.float64)
    c = (overlap - i) / (overlap - delay + 1)
    if schedule == "exp":
        weights[delay:overlap] = c * torch.expm1(c) / (math.e - 1)
    elif schedule == "linear":
        weights[delay:overlap] = c
    return weights.float()


def flow_guidance_weight(t: float, beta: float) -> float:
    """RTC's guidance weight at flow time t (t = 1 noise): min(beta, ((1 - t)^2 + t^2) / (t (1 - t)))."""
    raw = ((1 - t) ** 2 + t**2) / (t * (1 - t)) if 0 < t < 1 else math.inf
    return min(beta, raw)


def ddpm_guidance_scale(alpha: float, sigma: float, beta: float) -> float:
    """kappa: how far the x0 estimate moves along g at a DDPM noise level, sigma min(beta, 1 / (alpha sigma))."""
    raw = 1 / (alpha * sigma) if alpha > 0 and sigma > 0 else math.inf
    return sigma * min(beta, raw)


def guidance_gradient(
    clean: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, target: Tensor, weights: Tensor
) -> tuple[Tensor, Tensor]:
    """(denoiser output, g = J^T [weights * (target - x0_hat)]) at x (B, T, D); clean(x) -> (output, x0_hat).

    One forward and one backward pass (torch.autograd.grad with the weighted error as the cotangent).
    """
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        output, x0 = clean(x_in)
        error = weights * (target - x0.detach())  # (B, T, D)
        (grad,) = torch.autograd.grad(x0, x_in, grad_outputs=error)
    return output.detach(), grad


@dataclass(frozen=True)
class Guidance:
    """RTC's inpainting request for one predict_action call: follow ``target`` where ``weights`` > 0."""

    target: Tensor  # (B, horizon, Da) raw (unnormalized) actions of the previous chunk, aligned to the new one
    weights: Tensor  # (B, horizon) soft mask in [0, 1]; 0 where the previous chunk says nothing
    frozen: Tensor  # (B, horizon) bool: positions returned as target exactly (the committed actions)
    beta: float = 5.0  # guidance weight clip

    def __post_init__(self) -> None:
        """Validate shapes and beta."""
        shape = self.target.shape
        if self.target.ndim != 3 or self.weights.shape != shape[:2] or self.frozen.shape != self.weights.shape:
            raise ValueError(
                f"Guidance needs target (B, T, Da), weights (B, T) and frozen (B, T); got {tuple(self.target.shape)}, "
                f"{tuple(self.weights.shape)}, {tuple(self.frozen.shape)}"
            )
        if not self.beta >= 0:
            raise ValueError(f"RTC beta must be >= 0; got {self.beta}")

    def check(self, sampler_name: str, shape: tuple[int, ...]) -> None:
        """ValueError unless the sampler is one RTC runs with and the target has the chunks' shape (B, T, Da)."""
        if sampler_name not in RTC_SAMPLERS:
            raise ValueError(
                f"execution=rtc runs with sampler euler (flow models) or ddim (DDPM models); got {sampler_name!r}"
            )
        if tuple(self.target.shape) != tuple(shape):
            raise ValueError(f"RTC target has shape {tuple(self.target.shape)}; the chunks have {tuple(shape)}")

    def wrap(self, denoise: Denoiser, objective: DDPM | FlowMatching, target_norm: Tensor) -> Denoiser:
        """The denoiser with RTC's guidance folded into its output; target_norm (B, T, Da) is the normalized target."""
        weights = self.weights.to(target_norm)[..., None]  # (B, T, 1)
        if self.beta == 0 or not bool(weights.any()):
            return denoise
        if isinstance(objective, FlowMatching):
            return self._wrap_flow(denoise, objective, target_norm, weights)
        if isinstance(objective, DDPM):
            return self._wrap_ddpm(denoise, objective, target_norm, weights)
        raise ValueError(f"RTC guides flow-matching and DDPM models; got {type(objective).__name__}")

    def _wrap_flow(self, denoise: Denoiser, objective: FlowMatching, target: Tensor, weights: Tensor) -> Denoiser:
        """v_guided = v - w(t) g with x0_hat = x - t v."""

        def guided(x: Tensor, t_model: Tensor) -> Tensor:
            t = float(t_model.reshape(-1)[0]) / objective.time_scale

            def clean(x_in: Tensor) -> tuple[Tensor, Tensor]:
                velocity = denoise(x_in, t_model)
                return velocity, x_in - t * velocity

            velocity, grad = guidance_gradient(clean, x, target, weights)
            return velocity - flow_guidance_weight(t, self.beta) * grad

        return guided

    def _wrap_ddpm(self, denoise: Denoiser, objective: DDPM, target: Tensor, weights: Tensor) -> Denoiser:
        """Output shifted so that objective.x0_and_eps returns x0_hat + kappa g (eps moved consistently)."""
        abar = objective.alphas_cumprod  # (T,) float64

        def guided(x: Tensor, t_model: Tensor) -> Tensor:
            step = int(round(float(t_model.reshape(-1)[0])))
            alpha, sigma = math.sqrt(float(abar[step])), math.sqrt(1 - float(abar[step]))
            alpha_t, sigma_t = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in (alpha, sigma))

            def clean(x_in: Tensor) -> tuple[Tensor, Tensor]:
                output = denoise(x_in, t_model)
                return output, objective.x0_and_eps(output, x_in, alpha_t, sigma_t)[0]

            output, grad = guidance_gradient(clean, x, target, weights)
            shift = ddpm_guidance_scale(alpha, sigma, self.beta) * grad  # wanted change of x0 (B, T, Da)
            return output + _output_per_x0(objective.prediction, alpha, sigma) * shift

        return guided

    def freeze(self, action_pred: Tensor) -> Tensor:
        """action_pred (B, T, Da) with the frozen positions replaced by the target's exact values."""
        return torch.where(self.frozen.to(action_pred.device)[..., None], self.target.to(action_pred), action_pred)


def _output_per_x0(prediction: str, alpha: float, sigma: float) -> float:
    """How much the denoiser's output must change per unit change of x0_hat at fixed x_t (DDPM predictions)."""
    if prediction == "epsilon":
        return -alpha / sigma  # x0 = (x - sigma eps) / alpha
    if prediction == "sample":
        return 1.0
    return -1 / sigma  # v: x0 = alpha x - sigma v
