"""Training objectives for action-chunk denoisers: the DDPM noise process, flow matching, MSE regression.

Conventions (shared with policy/samplers.py):

DDPM, with diffusers' conventions so every table compares 1:1 with DDPMScheduler / DDIMScheduler /
DPMSolverMultistepScheduler for the same settings:
    timestep index t in 0..T-1 (T = num_train_steps), betas[t], alphas_cumprod[t] = prod_{s<=t} (1 - betas[s]);
    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps,   eps ~ N(0, I);
    the denoiser sees t_model = float(t);
    prediction "epsilon" -> eps, "sample" -> x_0, "v" -> sqrt(abar_t) * eps - sqrt(1 - abar_t) * x_0.
    "squaredcos_cap_v2" is Nichol & Dhariwal's cosine schedule (offset 0.008, each beta capped at 0.999).

Flow matching, linear (rectified-flow) path:
    x_t = (1 - t) * x_0 + t * noise,   t in [0, 1]: t=0 is data, t=1 is noise;
    target velocity u = dx_t/dt = noise - x_0; sampling integrates dx/dt = v(x, t) from t=1 down to t=0;
    the denoiser sees t_model = t * time_scale (time_scale=100 gives a backbone the range DDPM-100 gives it).

Regression, the control for the multimodality test: the same backbone trained with MSE to output the
chunk directly (called with a zero input at t = 0, so any denoiser serves as a plain regression head). With
one observation and two demonstrated trajectories its minimizer is their average, which a generative
objective avoids.

Written by hand because the schedules are a few lines of float64 arithmetic that the tests pin to diffusers;
owning them keeps diffusers a test-only dependency and lets the samplers precompute device tables. Beta time
sampling draws Gamma variates with torch._standard_gamma because torch.distributions.Beta ignores
torch.Generator, and seeded training must be reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "sample", "v")
TIME_SAMPLINGS = ("uniform", "logit_normal", "beta")
MAX_TERMINAL_ALPHA_CUMPROD = 0.01  # sampling starts from N(0, I), so abar at t=T-1 must be ~0 (signal scale <= 0.1)


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    """Raise ValueError if `value` is not one of `valid`, listing the valid options."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid options: {', '.join(valid)}")


def _check_x0(x0: Tensor) -> None:
    """Raise ValueError unless x0 is a floating-point batch with at least one sample."""
    if not x0.is_floating_point() or x0.ndim < 1 or x0.shape[0] == 0:
        raise ValueError(
            f"x0 must be a non-empty float tensor (B, T, D); got dtype {x0.dtype}, shape {tuple(x0.shape)}"
        )


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape (B,) to (B, 1, ..., 1) so it broadcasts against `like` (B, ...)."""
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def _cosine_betas(num_train_steps: int, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal cosine schedule: beta_t = 1 - abar((t+1)/T) / abar(t/T), capped at max_beta."""
    s = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps  # (T+1,)
    abar = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)


@dataclass(frozen=True)
class DDPM:
    """Discrete-time DDPM noise process (alphas_cumprod table) and its training loss."""

    kind: ClassVar[str] = "ddpm"
    trained_as: ClassVar[str] = "a DDPM-trained model"

    num_train_steps: int = 100  # T: number of discrete noise levels
    beta_schedule: str = "squaredcos_cap_v2"  # "linear" or "squaredcos_cap_v2"
    beta_start: float = 1e-4  # first beta of the linear schedule
    beta_end: float = 0.02  # last beta of the linear schedule
    prediction: str = "epsilon"  # what the denoiser predicts: "epsilon", "sample" or "v"
    clip_sample: bool = True  # clamp predicted x_0 to [-clip_range, clip_range] when sampling
    clip_range: float = 1.0  # bound used by clip_sample
    betas: Tensor = field(init=False, repr=False, compare=False)  # (T,) float64
    alphas_cumprod: Tensor = field(init=False, repr=False, compare=False)  # (T,) float64
    _device_tables: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the settings and build the float64 beta / alphas_cumprod tables."""
        if (
            isinstance(self.num_train_steps, bool)
            or not isinstance(self.num_train_steps, int)
            or self.num_train_steps < 1
        ):
            raise ValueError(f"num_train_steps must be an int >= 1; got {self.num_train_steps!r}")
        _check_choice("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        _check_choice("prediction", self.prediction, PREDICTIONS)
        if self.clip_range <= 0:
            raise ValueError(f"clip_range must be > 0; got {self.clip_range}")
        if self.beta_schedule == "linear":
            if not 0 < self.beta_start <= self.beta_end < 1:
                raise ValueError(
                    f"linear schedule needs 0 < beta_start <= beta_end < 1; got {self.beta_start}, {self.beta_end}"
                )
            betas = torch.linspace(self.beta_start, self.beta_end, self.num_train_steps, dtype=torch.float64)
        else:
            betas = _cosine_betas(self.num_train_steps)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        if alphas_cumprod[-1] > MAX_TERMINAL_ALPHA_CUMPROD:
            raise ValueError(
                f"the {self.beta_schedule} schedule ends at alphas_cumprod={alphas_cumprod[-1]:.3g}, not at noise "
                f"(max {MAX_TERMINAL_ALPHA_CUMPROD}); use squaredcos_cap_v2, more num_train_steps or a larger beta_end"
            )
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        object.__setattr__(self, "_device_tables", {})

    def signal_noise_scales(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(sqrt(abar), sqrt(1 - abar)), each (T,), cached per device and dtype."""
        key = (torch.device(device), dtype)
        if key not in self._device_tables:
            abar = self.alphas_cumprod
            with torch.inference_mode(False):  # plain tensors, so the cache also serves calls that need autograd
                self._device_tables[key] = (abar.sqrt().to(device, dtype), (1 - abar).sqrt().to(device, dtype))
        return self._device_tables[key]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for integer timesteps t (B,)."""
        alpha, sigma = self._scales_at(t, x0)
        return torch.addcmul(alpha * x0, sigma, noise)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the denoiser should output at timesteps t (B,): eps, x0, or v depending on `prediction`."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "sample":
            return x0
        alpha, sigma = self._scales_at(t, x0)
        return alpha * noise - sigma * x0

    def x0_and_eps(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Convert a denoiser output at x_t (scales alpha = sqrt(abar), sigma = sqrt(1 - abar)) to (x0_hat, eps_hat).

        eps_hat comes from the unclipped x0_hat (diffusers' default), then x0_hat is clipped if clip_sample.
        """
        if self.prediction == "epsilon":
            eps = output
            x0 = (x_t - sigma * eps) / alpha
        elif self.prediction == "sample":
            x0 = output
            eps = (x_t - alpha * x0) / sigma
        else:
            x0 = alpha * x_t - sigma * output
            eps = alpha * output + sigma * x_t
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return x0, eps

    def loss(self, denoiser: Denoiser, x0: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error between denoiser(x_t, t) and the target, t ~ U{0..T-1}; x0 (B, T, D) normalized."""
        _check_x0(x0)
        t = torch.randint(0, self.num_train_steps, (x0.shape[0],), device=x0.device, generator=generator)  # (B,)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # (B, T, D)
        x_t = self.add_noise(x0, noise, t)
        prediction = denoiser(x_t, t.to(x0.dtype))  # (B, T, D)
        return torch.nn.functional.mse_loss(prediction, self.target(x0, noise, t))

    def _scales_at(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample (sqrt(abar_t), sqrt(1 - abar_t)) shaped to broadcast against `like` (B, ...)."""
        sqrt_abar, sqrt_one_minus_abar = self.signal_noise_scales(like.device, like.dtype)
        return _per_sample(sqrt_abar[t], like), _per_sample(sqrt_one_minus_abar[t], like)


@dataclass(frozen=True)
class FlowMatching:
    """Linear path x_t = (1 - t) x0 + t * noise (t=0 data, t=1 noise), velocity target noise - x0."""

    kind: ClassVar[str] = "flow"
    trained_as: ClassVar[str] = "a flow-matching-trained model"

    time_sampling: str = "uniform"  # training-time distribution of t: "uniform", "logit_normal" or "beta" (pi0)
    logit_normal_mean: float = 0.0  # logit_normal: t = sigmoid(N(mean, std))
    logit_normal_std: float = 1.0  # logit_normal: spread of the underlying normal
    beta_a: float = 1.5  # beta: t = beta_s * Beta(beta_a, beta_b) + (1 - beta_s), pi0's defaults
    beta_b: float = 1.0  # beta: second shape parameter
    beta_s: float = 0.999  # beta: keeps t >= 1 - beta_s, away from the data end
    time_scale: float = 100.0  # the denoiser sees t_model = t * time_scale

    def __post_init__(self) -> None:
        """Validate the settings."""
        _check_choice("time_sampling", self.time_sampling, TIME_SAMPLINGS)
        if self.logit_normal_std <= 0:
            raise ValueError(f"logit_normal_std must be > 0; got {self.logit_normal_std}")
        if self.beta_a <= 0 or self.beta_b <= 0:
            raise ValueError(f"beta_a and beta_b must be > 0; got {self.beta_a}, {self.beta_b}")
        if not 0 < self.beta_s <= 1:
            raise ValueError(f"beta_s must be in (0, 1]; got {self.beta_s}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0; got {self.time_scale}")

    def sample_time(
        self,
        n: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw n training times t in [0, 1] from the configured distribution; returns (n,)."""
        if self.time_sampling == "uniform":
            return torch.rand(n, device=device, dtype=dtype, generator=generator)
        if self.time_sampling == "logit_normal":
            z = torch.randn(n, device=device, dtype=dtype, generator=generator)
            return torch.sigmoid(self.logit_normal_mean + self.logit_normal_std * z)
        gamma_dtype = torch.promote_types(dtype, torch.float32)
        shape_a = torch.full((n,), self.beta_a, device=device, dtype=gamma_dtype)
        shape_b = torch.full((n,), self.beta_b, device=device, dtype=gamma_dtype)
        gamma_a = torch._standard_gamma(shape_a, generator=generator)  # (n,)
        gamma_b = torch._standard_gamma(shape_b, generator=generator)  # (n,)
        beta = gamma_a / (gamma_a + gamma_b)  # Beta(a, b)
        return (self.beta_s * beta + (1 - self.beta_s)).to(dtype)

    def interpolate(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t noise for per-sample times t (B,)."""
        return torch.lerp(x0, noise, _per_sample(t, x0))

    def target(self, x0: Tensor, noise: Tensor) -> Tensor:
        """Velocity target dx_t/dt = noise - x0."""
        return noise - x0

    def loss(self, denoiser: Denoiser, x0: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error between denoiser(x_t, t * time_scale) and noise - x0; x0 (B, T, D) normalized."""
        _check_x0(x0)
        t = self.sample_time(x0.shape[0], device=x0.device, dtype=x0.dtype, generator=generator)  # (B,)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # (B, T, D)
        prediction = denoiser(self.interpolate(x0, noise, t), t * self.time_scale)  # (B, T, D)
        return torch.nn.functional.mse_loss(prediction, self.target(x0, noise))


def regress(denoiser: Callable[[Tensor, Tensor], Tensor], like: Tensor) -> Tensor:
    """The chunk the denoiser predicts from a zero input at t = 0, shaped like ``like`` (B, T, D)."""
    return denoiser(torch.zeros_like(like), torch.zeros(like.shape[0], device=like.device, dtype=like.dtype))


@dataclass(frozen=True)
class Regression:
    """Objective: MSE between the denoiser's output (zero input, t = 0) and the normalized chunk."""

    kind: ClassVar[str] = "regression"
    trained_as: ClassVar[str] = "a regression model"

    def loss(
        self, denoiser: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Scalar MSE; x0 (B, T, D) normalized actions. ``generator`` is unused (no noise is drawn)."""
        return F.mse_loss(regress(denoiser, x0), x0)
