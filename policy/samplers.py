"""Reverse-process samplers: DDPM, DDIM, DPM-Solver++ (2M) for DDPM models; Euler, Midpoint, Heun for flow; regression;
shortcut models (policy/shortcut.py) and consistency-distilled models (policy/consistency.py).

Every sampler maps noise (B, T, D) ~ N(0, I), the sample at the noisiest time, to an x_0 estimate (B, T, D), with
any step count chosen at inference. Conventions are those of policy/objectives.py: DDPM timesteps 0..T-1 with
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; flow x_t = (1 - t) x_0 + t noise, integrated from t=1 to t=0.

Reduced-step DDPM schedules ("spacing", as in diffusers' DDPMScheduler/DDIMScheduler.set_timesteps):
    "trailing" (default): round(T - i T/n) - 1, i = 0..n-1, so the first step is always at t = T-1, the noise level
        the sampler's pure-noise input actually has.
    "leading" (diffusers' and Diffusion Policy's default): i * (T // n); with few steps it starts at a low-noise
        timestep (n=1 -> t=0, n=2 -> t=50 of 100) although its input is pure noise, so the denoiser is told the
        input is far cleaner than it is: with n=1 it returns the noise almost unchanged (tested).
    "linspace": round(linspace(0, T-1, n)) reversed; starts at T-1 but spends its last step at t=0.
Each step goes from timestep ts[i] to ts[i+1], the last one to abar = 1 (clean data), as DDPMScheduler and
DPMSolverMultistepScheduler do. diffusers' DDIMScheduler instead steps to t - T//n, which is the same whenever the
timesteps are evenly spaced by T//n ("leading" always, "trailing" when n divides T). diffusers'
DPMSolverMultistepScheduler defines "linspace" and "leading" differently (n+1 points, the last dropped); here one
definition serves all three DDPM samplers.

DPM-Solver++ is the 2M multistep data-prediction solver (Lu et al. 2022, midpoint form as in diffusers): first
order on the first step, second order after, and first order on the final step to sigma = 0 (diffusers'
lower_order_final with final_sigmas_type="zero").

Written by hand because each sampler is a short loop over precomputed coefficients: per step it does the network
call plus a few fused tensor ops, with coefficient tables built once per (objective, steps, device, dtype) and
cached, instead of diffusers' per-step Python bookkeeping (timestep search, list shuffling, scalar re-derivation);
benchmarks/bench_sampler_overhead.py measures 2.5-6.5x less sampler overhead than diffusers' scheduler loops.
Each sampler declares the objective kind it samples (``objective_kind``); ``check_compatible`` and
``Sampler.resolve_steps`` are the one place that decides whether a (sampler, objective, num_steps) triple can
run, for every caller (ChunkPolicy, evaluation, sweeps). ``RegressionSampler`` is the one-call "sampler" of the
MSE regression baseline, an ordinary member of ``SAMPLERS``. ``ShortcutSampler`` takes num_steps equal steps of the
step-conditioned shortcut model (a power of two up to its max_steps); ``ConsistencySampler`` applies the consistency
function once, or num_steps times with re-noising in between (multistep consistency sampling). Both make one network
call per step, so NFE = num_steps.
Gradients are not disabled here: wrap calls in torch.no_grad() / torch.inference_mode() for plain inference.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from policy.consistency import ConsistencyDistillation
from policy.objectives import DDPM, FlowMatching, Regression, regress
from policy.shortcut import ShortcutFlow

Denoiser = Callable[[Tensor, Tensor], Tensor]

SPACINGS = ("trailing", "leading", "linspace")


def discrete_timesteps(num_train_steps: int, num_steps: int, spacing: str = "trailing") -> np.ndarray:
    """Descending DDPM timesteps (num_steps,) int64 for a reduced-step schedule, as diffusers' set_timesteps."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; valid options: {', '.join(SPACINGS)}")
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(
            f"num_steps must be in [1, num_train_steps={num_train_steps}] for DDPM samplers; got {num_steps}"
        )
    if spacing == "trailing":
        timesteps = np.round(num_train_steps - np.arange(num_steps) * (num_train_steps / num_steps)) - 1
    elif spacing == "leading":
        timesteps = (np.arange(num_steps) * (num_train_steps // num_steps))[::-1]
    else:
        timesteps = np.linspace(0, num_train_steps - 1, num_steps).round()[::-1]
    return timesteps.astype(np.int64)


def flow_times(num_steps: int, shift: float = 1.0) -> Tensor:
    """Descending flow times (num_steps + 1,) float64 from 1 to 0; shift > 1 spends more steps near t = 1 (noise)."""
    u = 1 - torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    return shift * u / (1 + (shift - 1) * u)


def _check_num_steps(num_steps: int) -> None:
    """Raise ValueError unless num_steps is an int >= 1."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1; got {num_steps!r}")


def _columns(table: Tensor, device: torch.device, dtype: torch.dtype) -> list[tuple[Tensor, ...]]:
    """Move a (n_steps, n_coeffs) float64 table to device/dtype and split it into per-step tuples of 0-d tensors."""
    return [tuple(row.unbind()) for row in table.to(device, dtype).unbind()]


class Sampler(ABC):
    """Base class: resolves the step count, checks compatibility, caches coefficient tables, runs the loop."""

    name: ClassVar[str]
    objective_kind: ClassVar[str]  # the ``kind`` of the objectives whose models this sampler can run

    def __init__(self, num_steps: int | None) -> None:
        """Store the default step count (validated) and an empty table cache."""
        if num_steps is not None:
            _check_num_steps(num_steps)
        self.num_steps = num_steps
        self._tables: dict[tuple, object] = {}

    def sample(
        self,
        denoiser: Denoiser,
        objective: DDPM | FlowMatching,
        noise: Tensor,
        *,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run the reverse process from noise (B, T, D) at the noisiest time; returns the x_0 estimate (B, T, D)."""
        n = self.resolve_steps(objective, num_steps)
        if noise.ndim < 1 or not noise.is_floating_point():
            raise ValueError(
                f"noise must be a float tensor (B, T, D); got dtype {noise.dtype}, shape {tuple(noise.shape)}"
            )
        if generator is not None and generator.device.type != noise.device.type:
            raise ValueError(
                f"generator is on {generator.device} but noise is on {noise.device}; "
                f"create the generator with torch.Generator(device=noise.device)"
            )
        key = (objective, n, noise.device, noise.dtype)
        if key not in self._tables:
            with torch.inference_mode(False):  # plain tensors, so the cache also serves calls that need autograd
                self._tables[key] = self._build_table(objective, n, noise.device, noise.dtype)
        return self._run(denoiser, objective, noise, self._tables[key], generator)

    def resolve_steps(self, objective: DDPM | FlowMatching | Regression, num_steps: int | None = None) -> int:
        """The step count a sample() call runs for this objective; ValueError if the pair or the count is invalid."""
        check_compatible(self, objective)
        return self._resolve_steps(objective, num_steps)

    def nfe(self, num_steps: int | None = None) -> int:
        """Network evaluations for one sample() call with this step count (default: the sampler's)."""
        return self._steps_or_default(num_steps)

    def _steps_or_default(self, num_steps: int | None) -> int:
        """The explicit step count if given, else the sampler's default; ValueError if neither is set."""
        n = self.num_steps if num_steps is None else num_steps
        if n is None:
            raise ValueError(f"sampler '{self.name}' has no default num_steps; pass num_steps")
        _check_num_steps(n)
        return n

    def _resolve_steps(self, objective: DDPM | FlowMatching, num_steps: int | None) -> int:
        """Step count for a sample() call."""
        return self._steps_or_default(num_steps)

    @abstractmethod
    def _build_table(self, objective: DDPM | FlowMatching, n: int, device: torch.device, dtype: torch.dtype) -> object:
        """Precompute everything the loop needs for n steps on device/dtype."""

    @abstractmethod
    def _run(
        self,
        denoiser: Denoiser,
        objective: DDPM | FlowMatching,
        x: Tensor,
        table: object,
        generator: torch.Generator | None,
    ) -> Tensor:
        """The sampling loop: the network call plus a few fused tensor ops per step."""

    def __repr__(self) -> str:
        """Class name and constructor settings."""
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class _DiscreteSampler(Sampler):
    """Shared parts of the samplers for DDPM-trained models: spacing, step bounds, timestep grid."""

    objective_kind = DDPM.kind

    def __init__(self, num_steps: int | None, spacing: str) -> None:
        """Validate spacing and store the defaults."""
        super().__init__(num_steps)
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; valid options: {', '.join(SPACINGS)}")
        self.spacing = spacing

    def _resolve_steps(self, objective: DDPM, num_steps: int | None) -> int:
        """Step count for a sample() call: explicit, else default, else the full chain; must be <= num_train_steps."""
        if num_steps is None and self.num_steps is None:
            return objective.num_train_steps
        n = self._steps_or_default(num_steps)
        if n > objective.num_train_steps:
            raise ValueError(
                f"num_steps={n} exceeds the model's num_train_steps={objective.num_train_steps}; "
                f"choose num_steps <= {objective.num_train_steps}"
            )
        return n

    def _scales(self, objective: DDPM, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """(timesteps, abar at each step, abar after each step with 1 after the last), each (n,) float64."""
        timesteps = torch.from_numpy(discrete_timesteps(objective.num_train_steps, n, self.spacing))
        abar = objective.alphas_cumprod[timesteps]
        abar_next = torch.cat([abar[1:], abar.new_ones(1)])
        return timesteps.to(torch.float64), abar, abar_next


class DDPMSampler(_DiscreteSampler):
    """Ancestral DDPM sampling (posterior q(x_prev | x_t, x0_hat), variance "fixed_small"), strided like diffusers."""

    name = "ddpm"

    def __init__(self, num_steps: int | None = None, spacing: str = "trailing") -> None:
        """num_steps None runs the full training chain; spacing in {"trailing", "leading", "linspace"}."""
        super().__init__(num_steps, spacing)

    def _build_table(self, objective: DDPM, n: int, device: torch.device, dtype: torch.dtype) -> tuple:
        """Per step: t_model, sqrt(abar), sqrt(1-abar), x0 coefficient, x_t coefficient, noise std; noise flags."""
        t, abar, abar_next = self._scales(objective, n)
        alpha_step = abar / abar_next  # (n,) alpha over the (possibly strided) step
        beta_step = 1 - alpha_step
        coef_x0 = abar_next.sqrt() * beta_step / (1 - abar)
        coef_xt = alpha_step.sqrt() * (1 - abar_next) / (1 - abar)
        std = ((1 - abar_next) / (1 - abar) * beta_step).sqrt()
        table = torch.stack([t, abar.sqrt(), (1 - abar).sqrt(), coef_x0, coef_xt, std], dim=1)  # (n, 6)
        return _columns(table, device, dtype), (std > 0).tolist()

    def _run(
        self, denoiser: Denoiser, objective: DDPM, x: Tensor, table: tuple, generator: torch.Generator | None
    ) -> Tensor:
        """x_prev = c_x0 * x0_hat + c_xt * x_t + std * z."""
        steps, add_noise = table
        batch = x.shape[0]
        for (t, alpha, sigma, coef_x0, coef_xt, std), noisy in zip(steps, add_noise):
            x0, _ = objective.x0_and_eps(denoiser(x, t.expand(batch)), x, alpha, sigma)
            x = torch.addcmul(coef_xt * x, coef_x0, x0)
            if noisy:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = torch.addcmul(x, std, z)
        return x


class DDIMSampler(_DiscreteSampler):
    """DDIM (Song et al. 2021): deterministic for eta=0, eta=1 matches the DDPM posterior variance."""

    name = "ddim"

    def __init__(self, num_steps: int = 10, eta: float = 0.0, spacing: str = "trailing") -> None:
        """eta >= 0 scales the injected noise; spacing in {"trailing", "leading", "linspace"}."""
        super().__init__(num_steps, spacing)
        if eta < 0:
            raise ValueError(f"eta must be >= 0; got {eta}")
        self.eta = eta

    def _build_table(self, objective: DDPM, n: int, device: torch.device, dtype: torch.dtype) -> tuple:
        """Per step: t_model, sqrt(abar), sqrt(1-abar), sqrt(abar_prev), eps coefficient, noise std; noise flags."""
        t, abar, abar_next = self._scales(objective, n)
        variance = (1 - abar_next) / (1 - abar) * (1 - abar / abar_next)
        std = self.eta * variance.sqrt()
        eps_variance = 1 - abar_next - std**2
        if (eps_variance < 0).any():
            raise ValueError(f"eta={self.eta} injects more noise than the schedule allows; use 0 <= eta <= 1")
        coef_eps = eps_variance.sqrt()
        table = torch.stack([t, abar.sqrt(), (1 - abar).sqrt(), abar_next.sqrt(), coef_eps, std], dim=1)  # (n, 6)
        return _columns(table, device, dtype), (std > 0).tolist()

    def _run(
        self, denoiser: Denoiser, objective: DDPM, x: Tensor, table: tuple, generator: torch.Generator | None
    ) -> Tensor:
        """x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - std^2) eps_hat + std * z."""
        steps, add_noise = table
        batch = x.shape[0]
        for (t, alpha, sigma, alpha_next, coef_eps, std), noisy in zip(steps, add_noise):
            x0, eps = objective.x0_and_eps(denoiser(x, t.expand(batch)), x, alpha, sigma)
            x = torch.addcmul(alpha_next * x0, coef_eps, eps)
            if noisy:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = torch.addcmul(x, std, z)
        return x


class DPMSolverPPSampler(_DiscreteSampler):
    """DPM-Solver++(2M): second-order multistep data-prediction ODE solver, first order on the first and last step."""

    name = "dpmsolver"

    def __init__(self, num_steps: int = 10, spacing: str = "trailing") -> None:
        """spacing in {"trailing", "leading", "linspace"}."""
        super().__init__(num_steps, spacing)

    def _build_table(self, objective: DDPM, n: int, device: torch.device, dtype: torch.dtype) -> list:
        """Per step: t_model, sqrt(abar), sqrt(1-abar), and x_next = c_x x + c_0 D_i + c_1 D_{i-1}."""
        t, abar, abar_next = self._scales(objective, n)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        alpha_next, sigma_next = abar_next.sqrt(), (1 - abar_next).sqrt()
        lam, lam_next = alpha.log() - sigma.log(), alpha_next.log() - sigma_next.log()  # lam_next[-1] = inf
        h = lam_next - lam  # (n,)
        phi = alpha_next * torch.expm1(-h)  # alpha_next (e^{-h} - 1); -1 on the final step to sigma = 0
        coef_x = sigma_next / sigma
        second_order = torch.zeros(n, dtype=torch.bool)
        second_order[1:-1] = True
        half_over_r = torch.zeros(n, dtype=torch.float64)
        half_over_r[1:-1] = 0.5 * h[1:-1] / h[:-2]  # 1 / (2 r), r = h_{i-1} / h_i
        coef_d0 = -phi * (1 + half_over_r)
        coef_d1 = phi * half_over_r
        table = torch.stack([t, alpha, sigma, coef_x, coef_d0, coef_d1], dim=1)  # (n, 6)
        return list(zip(_columns(table, device, dtype), second_order.tolist()))

    def _run(
        self, denoiser: Denoiser, objective: DDPM, x: Tensor, table: list, generator: torch.Generator | None
    ) -> Tensor:
        """Multistep update on data predictions D_i = x0_hat(x_i, t_i)."""
        batch = x.shape[0]
        previous: Tensor | None = None
        for (t, alpha, sigma, coef_x, coef_d0, coef_d1), second_order in table:
            x0, _ = objective.x0_and_eps(denoiser(x, t.expand(batch)), x, alpha, sigma)
            x = torch.addcmul(coef_x * x, coef_d0, x0)
            if second_order:
                x = torch.addcmul(x, coef_d1, previous)
            previous = x0
        return x


class _FlowSampler(Sampler):
    """Shared parts of the ODE samplers for flow-matching models: the time grid from t=1 to t=0."""

    objective_kind = FlowMatching.kind

    def __init__(self, num_steps: int, shift: float) -> None:
        """shift = 1 gives a uniform grid; shift > 1 concentrates steps near t = 1 (noise)."""
        super().__init__(num_steps)
        if shift <= 0:
            raise ValueError(f"shift must be > 0; got {shift}")
        self.shift = shift

    def _grid(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """(t at each step start, t at each step end, dt), each (n,) float64; dt < 0."""
        times = flow_times(n, self.shift)
        return times[:-1], times[1:], times[1:] - times[:-1]


class EulerSampler(_FlowSampler):
    """Explicit Euler on dx/dt = v(x, t) from t=1 to t=0; 1 NFE per step."""

    name = "euler"

    def __init__(self, num_steps: int = 10, shift: float = 1.0) -> None:
        """num_steps Euler steps on the (optionally shifted) grid."""
        super().__init__(num_steps, shift)

    def _build_table(self, objective: FlowMatching, n: int, device: torch.device, dtype: torch.dtype) -> list:
        """Per step: t_model, dt."""
        t, _, dt = self._grid(n)
        return _columns(torch.stack([t * objective.time_scale, dt], dim=1), device, dtype)

    def _run(
        self, denoiser: Denoiser, objective: FlowMatching, x: Tensor, table: list, generator: torch.Generator | None
    ) -> Tensor:
        """x <- x + dt v(x, t)."""
        batch = x.shape[0]
        for t, dt in table:
            x = torch.addcmul(x, dt, denoiser(x, t.expand(batch)))
        return x


class MidpointSampler(_FlowSampler):
    """Explicit midpoint rule (2nd order); 2 NFE per step."""

    name = "midpoint"

    def __init__(self, num_steps: int = 5, shift: float = 1.0) -> None:
        """num_steps midpoint steps (2 * num_steps network calls)."""
        super().__init__(num_steps, shift)

    def nfe(self, num_steps: int | None = None) -> int:
        """Two network evaluations per step."""
        return 2 * self._steps_or_default(num_steps)

    def _build_table(self, objective: FlowMatching, n: int, device: torch.device, dtype: torch.dtype) -> list:
        """Per step: t_model, midpoint t_model, dt / 2, dt."""
        t, t_next, dt = self._grid(n)
        scale = objective.time_scale
        return _columns(torch.stack([t * scale, (t + t_next) / 2 * scale, dt / 2, dt], dim=1), device, dtype)

    def _run(
        self, denoiser: Denoiser, objective: FlowMatching, x: Tensor, table: list, generator: torch.Generator | None
    ) -> Tensor:
        """x <- x + dt v(x + dt/2 v(x, t), t + dt/2)."""
        batch = x.shape[0]
        for t, t_mid, half_dt, dt in table:
            x_mid = torch.addcmul(x, half_dt, denoiser(x, t.expand(batch)))
            x = torch.addcmul(x, dt, denoiser(x_mid, t_mid.expand(batch)))
        return x


class HeunSampler(_FlowSampler):
    """Heun's method (explicit trapezoid, 2nd order) on every step, the last included; 2 NFE per step."""

    name = "heun"

    def __init__(self, num_steps: int = 5, shift: float = 1.0) -> None:
        """num_steps Heun steps (2 * num_steps network calls)."""
        super().__init__(num_steps, shift)

    def nfe(self, num_steps: int | None = None) -> int:
        """Two network evaluations per step."""
        return 2 * self._steps_or_default(num_steps)

    def _build_table(self, objective: FlowMatching, n: int, device: torch.device, dtype: torch.dtype) -> list:
        """Per step: t_model, next t_model, dt, dt / 2."""
        t, t_next, dt = self._grid(n)
        scale = objective.time_scale
        return _columns(torch.stack([t * scale, t_next * scale, dt, dt / 2], dim=1), device, dtype)

    def _run(
        self, denoiser: Denoiser, objective: FlowMatching, x: Tensor, table: list, generator: torch.Generator | None
    ) -> Tensor:
        """Euler predictor to t + dt, then the average of both slopes."""
        batch = x.shape[0]
        for t, t_next, dt, half_dt in table:
            v = denoiser(x, t.expand(batch))
            v_next = denoiser(torch.addcmul(x, dt, v), t_next.expand(batch))
            x = torch.addcmul(x, half_dt, v + v_next)
        return x


class RegressionSampler(Sampler):
    """One network call: returns the regressed chunk, ignoring the noise values (only their shape)."""

    name = "regression"
    objective_kind = Regression.kind

    def __init__(self, num_steps: int = 1) -> None:
        """A regression head takes exactly one step."""
        super().__init__(num_steps)
        self._resolve_steps(Regression(), num_steps)

    def _resolve_steps(self, objective: Regression, num_steps: int | None) -> int:
        """Always 1; ValueError for any other explicit count."""
        if num_steps not in (None, 1):
            raise ValueError(f"a regression head takes exactly one step; got num_steps={num_steps}")
        return 1

    def _build_table(self, objective: Regression, n: int, device: torch.device, dtype: torch.dtype) -> None:
        """Nothing to precompute."""
        return None

    def _run(
        self, denoiser: Denoiser, objective: Regression, x: Tensor, table: None, generator: torch.Generator | None
    ) -> Tensor:
        """(B, T, D) chunk predicted by the regression head."""
        return regress(denoiser, x)


class ShortcutSampler(Sampler):
    """Shortcut-model sampling: num_steps steps x <- x - d s(x, t, d) of size d = 1 / num_steps; 1 NFE per step."""

    name = "shortcut"
    objective_kind = ShortcutFlow.kind

    def __init__(self, num_steps: int = 1) -> None:
        """num_steps: a power of two up to the model's max_steps."""
        super().__init__(num_steps)

    def _resolve_steps(self, objective: ShortcutFlow, num_steps: int | None) -> int:
        """The step count, one the model was trained for (1, 2, 4, ..., max_steps)."""
        n = self._steps_or_default(num_steps)
        if n not in objective.step_counts():
            raise ValueError(
                f"a shortcut model takes a power-of-two number of steps up to its max_steps={objective.max_steps} "
                f"(the step sizes it was trained for); got num_steps={n}"
            )
        return n

    def _build_table(self, objective: ShortcutFlow, n: int, device: torch.device, dtype: torch.dtype) -> list:
        """Per step: t_model, step_model, -d."""
        t = flow_times(n)[:-1]  # (n,) from 1 down
        d = torch.full_like(t, 1 / n)
        return _columns(torch.stack([t * objective.time_scale, d * objective.time_scale, -d], dim=1), device, dtype)

    def _run(
        self, denoiser: Denoiser, objective: ShortcutFlow, x: Tensor, table: list, generator: torch.Generator | None
    ) -> Tensor:
        """x <- x - d s(x, t, d)."""
        batch = x.shape[0]
        for t, step, minus_d in table:
            x = torch.addcmul(x, minus_d, denoiser(x, t.expand(batch), step.expand(batch)))
        return x


class ConsistencySampler(Sampler):
    """Multistep consistency sampling: f at the noisiest grid point, then re-noise and apply f again; 1 NFE per step."""

    name = "consistency"
    objective_kind = ConsistencyDistillation.kind

    def __init__(self, num_steps: int = 1) -> None:
        """num_steps: 1 up to the model's num_intervals."""
        super().__init__(num_steps)

    def _resolve_steps(self, objective: ConsistencyDistillation, num_steps: int | None) -> int:
        """The step count; at most the model's num_intervals (each step starts from a distinct grid point)."""
        n = self._steps_or_default(num_steps)
        if n > objective.num_intervals:
            raise ValueError(
                f"num_steps={n} exceeds the consistency model's num_intervals={objective.num_intervals}; "
                f"choose num_steps <= {objective.num_intervals}"
            )
        return n

    def _build_table(
        self, objective: ConsistencyDistillation, n: int, device: torch.device, dtype: torch.dtype
    ) -> list:
        """Per step, at grid points N, round(N (n - i) / n): alpha, sigma, t_model, c_skip, c_out."""
        total = objective.num_intervals
        points = [total] + [round(total * (n - i) / n) for i in range(1, n)]
        return _columns(objective.grid[points], device, dtype)

    def _run(
        self,
        denoiser: Denoiser,
        objective: ConsistencyDistillation,
        x: Tensor,
        table: list,
        generator: torch.Generator | None,
    ) -> Tensor:
        """x0 = c_skip x + c_out F(x, t); from the second step on, x = alpha x0 + sigma z first."""
        batch = x.shape[0]
        x0 = x
        for i, (alpha, sigma, t, c_skip, c_out) in enumerate(table):
            if i:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = torch.addcmul(alpha * x0, sigma, z)
            x0 = torch.addcmul(c_skip * x, c_out, denoiser(x, t.expand(batch)))
        return x0


SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (
        DDPMSampler,
        DDIMSampler,
        DPMSolverPPSampler,
        EulerSampler,
        MidpointSampler,
        HeunSampler,
        RegressionSampler,
        ShortcutSampler,
        ConsistencySampler,
    )
}

# objective kind -> class; every sampler declares the kind it samples (check_compatible)
OBJECTIVES: dict[str, type] = {
    cls.kind: cls for cls in (DDPM, FlowMatching, Regression, ShortcutFlow, ConsistencyDistillation)
}


def check_compatible(sampler: Sampler, objective: DDPM | FlowMatching | Regression) -> None:
    """Raise ValueError if the sampler cannot run the model trained with this objective, listing the valid samplers."""
    kind = getattr(objective, "kind", None)
    if kind not in OBJECTIVES:
        known = ", ".join(cls.__name__ for cls in OBJECTIVES.values())
        raise ValueError(f"objective must be one of {known}; got {type(objective).__name__}")
    if kind == getattr(sampler, "objective_kind", None):
        return
    needs = OBJECTIVES[sampler.objective_kind].trained_as if sampler.objective_kind in OBJECTIVES else "another model"
    valid = [cls for cls in SAMPLERS.values() if cls.objective_kind == kind]
    names, classes = ", ".join(cls.name for cls in valid), ", ".join(cls.__name__ for cls in valid)
    raise ValueError(f"sampler '{sampler.name}' needs {needs}; valid samplers for {kind}: {names} ({classes})")


def make_sampler(name: str, **kwargs) -> Sampler:
    """Build a sampler by name (one of ``SAMPLERS``) with its keyword settings."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid options: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](**kwargs)
