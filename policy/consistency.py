"""Consistency distillation (Song et al. 2023; Consistency Policy, Prasad et al. 2024): one network call per chunk.

The student maps any point of a trained teacher's probability-flow ODE trajectory to the trajectory's data end. The
teacher is a DDPM or flow-matching model; ``teacher_objective`` is its noise process, x = alpha x_0 + sigma noise with
alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t) for DDPM (timesteps 0..T-1) and alpha = 1 - t, sigma = t for flow
(t=0 data, t=1 noise). The ODE is discretized on ``num_intervals`` + 1 grid points n = 0..N: n = 0 is the data itself
(alpha 1, sigma 0), n = N the teacher's noisiest level (DDPM timestep T-1, flow t = 1). The DDPM grid takes N of the
T timesteps, round(n T / N) - 1 for n = 1..N (every timestep when N = T); the flow grid is t_n = n / N.

Consistency function, with the boundary condition f(x, 0) = x built into the parametrization:
    f(x, n) = c_skip(n) x + c_out(n) F(x, t_model(n)),   c_skip(0) = 1, c_out(0) = 0,
whatever the network F outputs. F sees the same x and t_model as the teacher's network, so the student starts from
the teacher's weights (the standard choice of consistency distillation and Consistency Policy; policy.distillation
does it). For flow and DDPM v-prediction teachers (c_skip, c_out) are the coefficients of the teacher's own x_0
estimate (flow: 1, -sigma; v: alpha, -sigma): bounded, and the student starts as the teacher's one-step x_0 estimate
E[x_0 | x], which distillation then moves to the ODE's end. For epsilon teachers that estimate divides by alpha (-> 0
at the noise end) and for sample-prediction ones F(x, 0) != x, so those use EDM's preconditioning written for
x = alpha x_0 + sigma noise, with sigma_data the std of the normalized actions:
    c_skip = alpha sigma_data^2 / (sigma^2 + alpha^2 sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + alpha^2 sigma_data^2),
and the student's output head relearns what it predicts.

Training pairs: n ~ U{0..N-1}, x_{n+1} = alpha_{n+1} x_0 + sigma_{n+1} noise, and the teacher's deterministic solver
step from n+1 to n: x_n = alpha_n x0_hat + sigma_n eps_hat from the teacher's estimates at x_{n+1}. That is DDIM
(eta 0, x0_hat clipped when the teacher clips) for DDPM and exactly an Euler step for the linear flow path. The loss
is mean ||f_student(x_{n+1}, n+1) - f_target(x_n, n)||^2, the target network being an EMA of the student (decay
``target_decay``, updated after every optimizer step by policy.distillation) with no gradient through it.

Sampling (policy.samplers.ConsistencySampler): one step is f(noise, N); k steps re-noise the estimate to the grid
points round(N (k - i) / k), i = 1..k-1, and apply f again (multistep consistency sampling), one network call each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from policy.objectives import DDPM, FlowMatching, _check_x0, _per_sample

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _grid(teacher: DDPM | FlowMatching, num_intervals: int, sigma_data: float) -> Tensor:
    """(N + 1, 5) float64: alpha, sigma, the teacher's t_model, c_skip and c_out at grid points n = 0..N."""
    n = torch.arange(num_intervals + 1, dtype=torch.float64)
    if isinstance(teacher, DDPM):
        steps = torch.round(n[1:] * teacher.num_train_steps / num_intervals).long() - 1  # (N,) timesteps, last T-1
        abar = torch.cat([torch.ones(1, dtype=torch.float64), teacher.alphas_cumprod[steps]])
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        t_model = torch.cat([torch.zeros(1, dtype=torch.float64), steps.double()])
    else:
        t = n / num_intervals
        alpha, sigma, t_model = 1 - t, t, t * teacher.time_scale
    if isinstance(teacher, FlowMatching) or teacher.prediction == "v":  # the teacher's own x_0 = c_skip x + c_out F
        c_skip, c_out = (torch.ones_like(alpha) if isinstance(teacher, FlowMatching) else alpha), -sigma
    else:  # epsilon (x_0 would divide by alpha) or sample (F(x, 0) != x): EDM's preconditioning
        scale = sigma**2 + alpha**2 * sigma_data**2
        c_skip, c_out = alpha * sigma_data**2 / scale, sigma * sigma_data / scale.sqrt()
    return torch.stack([alpha, sigma, t_model, c_skip, c_out], dim=1)


@dataclass(frozen=True)
class ConsistencyDistillation:
    """Consistency model distilled from a DDPM or flow teacher: f(x, n) = c_skip x + c_out F, f(x, 0) = x."""

    kind: ClassVar[str] = "consistency"
    trained_as: ClassVar[str] = "a consistency-distilled model"
    needs_teacher: ClassVar[bool] = True  # trained by policy.distillation from a teacher checkpoint

    teacher_objective: DDPM | FlowMatching | None = None  # the teacher's noise process; None: FlowMatching()
    num_intervals: int = 20  # N: ODE intervals between data and the noisiest level (<= num_train_steps for DDPM)
    sigma_data: float = 0.5  # std of the normalized actions in EDM's c_skip / c_out (epsilon and sample teachers)
    target_decay: float = 0.95  # EMA decay of the target network (0: the student itself, without gradient)
    grid: Tensor = field(init=False, repr=False, compare=False)  # (N + 1, 5) alpha, sigma, t_model, c_skip, c_out
    _device_grids: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the settings and build the grid."""
        teacher = FlowMatching() if self.teacher_objective is None else self.teacher_objective
        if not isinstance(teacher, (DDPM, FlowMatching)):
            raise ValueError(
                f"teacher_objective must be a DDPM or FlowMatching objective; got {type(teacher).__name__}"
            )
        n = self.num_intervals
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_intervals must be an int >= 1; got {n!r}")
        if isinstance(teacher, DDPM) and n > teacher.num_train_steps:
            raise ValueError(
                f"num_intervals={n} exceeds the DDPM teacher's num_train_steps={teacher.num_train_steps}; "
                f"choose num_intervals <= {teacher.num_train_steps}"
            )
        if self.sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0; got {self.sigma_data}")
        if not 0 <= self.target_decay < 1:
            raise ValueError(f"target_decay must be in [0, 1); got {self.target_decay}")
        object.__setattr__(self, "teacher_objective", teacher)
        object.__setattr__(self, "grid", _grid(teacher, n, self.sigma_data))
        object.__setattr__(self, "_device_grids", {})

    def grid_on(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The grid (N + 1, 5) on device and dtype, cached."""
        key = (torch.device(device), dtype)
        if key not in self._device_grids:
            with torch.inference_mode(False):  # a plain tensor, so the cache also serves calls that need autograd
                self._device_grids[key] = self.grid.to(device, dtype)
        return self._device_grids[key]

    def consistency_function(self, denoiser: Denoiser, x: Tensor, n: Tensor) -> Tensor:
        """f(x, n) = c_skip x + c_out F(x, t_model) at grid indices n (B,): the x_0 estimates (B, T, D)."""
        _, _, t_model, c_skip, c_out = self.grid_on(x.device, x.dtype)[n].unbind(1)  # (B,) each
        return torch.addcmul(_per_sample(c_skip, x) * x, _per_sample(c_out, x), denoiser(x, t_model))

    def teacher_step(self, teacher: Denoiser, x: Tensor, n: Tensor) -> Tensor:
        """The teacher's ODE step from grid indices n (B,) >= 1 to n - 1: x (B, T, D) -> (B, T, D)."""
        grid = self.grid_on(x.device, x.dtype)
        alpha, sigma, t_model = grid[n, :3].unbind(1)  # (B,) each
        alpha_prev, sigma_prev = (_per_sample(c, x) for c in grid[n - 1, :2].unbind(1))
        output = teacher(x, t_model)  # (B, T, D)
        alpha, sigma = _per_sample(alpha, x), _per_sample(sigma, x)
        if isinstance(self.teacher_objective, DDPM):
            x0, eps = self.teacher_objective.x0_and_eps(output, x, alpha, sigma)
        else:
            x0, eps = x - sigma * output, x + alpha * output  # velocity = eps - x0 on x = alpha x0 + sigma eps
        return torch.addcmul(alpha_prev * x0, sigma_prev, eps)

    def loss(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        *,
        generator: torch.Generator | None = None,
        teacher: Denoiser | None = None,
        target: Denoiser | None = None,
    ) -> Tensor:
        """Consistency-distillation MSE for x0 (B, T, D); teacher and target are bound denoisers, used without grad."""
        if teacher is None or target is None:
            raise ValueError(
                "a consistency model is distilled from a teacher: train it with "
                "`python train.py objective=consistency teacher=<DDPM or flow checkpoint>` (policy.distillation)"
            )
        _check_x0(x0)
        batch = x0.shape[0]
        n = torch.randint(0, self.num_intervals, (batch,), device=x0.device, generator=generator)  # (B,) target index
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)  # (B, T, D)
        alpha, sigma = (_per_sample(c, x0) for c in self.grid_on(x0.device, x0.dtype)[n + 1, :2].unbind(1))
        x_next = torch.addcmul(alpha * x0, sigma, noise)  # (B, T, D) on the trajectory at n + 1
        with torch.no_grad():
            x_prev = self.teacher_step(teacher, x_next, n + 1)
            goal = self.consistency_function(target, x_prev, n)
        return F.mse_loss(self.consistency_function(denoiser, x_next, n + 1), goal)
