"""Closed-form reference for samplers: a 1-D Gaussian mixture and its exact denoisers.

For data x0 ~ sum_k w_k N(mu_k, s_k^2) and any Gaussian corruption x = a x0 + s n, n ~ N(0, 1), the posterior over
components and, within each, the joint Gaussian (x0, n, x) give E[x0 | x] and E[n | x] exactly. These are the
minimizers of the training losses, so they are the perfect denoisers:
    DDPM (a = sqrt(abar), s = sqrt(1 - abar)): eps_hat = E[n | x] (= -s * score), x0_hat = E[x0 | x],
        v_hat = a eps_hat - s x0_hat;
    flow (a = 1 - t, s = t): v = E[n | x] - E[x0 | x], finite at both t=0 and t=1.
A sampler fed these must reproduce the mixture up to its discretization error (and, if stochastic, its own
noise). Computed in float64.

Instruction conditioning (classifier-free guidance): an instruction that selects component k makes
``component(k)`` the conditional law while the mixture is the unconditional one (the null instruction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from policy.objectives import DDPM, FlowMatching


def stratified_normal(n: int) -> Tensor:
    """N(0, 1) quantiles at (i + 1/2) / n, float64 (n, 1, 1): sampler input noise free of Monte Carlo error."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (math.sqrt(2) * torch.erfinv(2 * u - 1)).reshape(n, 1, 1)


@dataclass(frozen=True)
class GaussianMixture:
    """1-D mixture sum_k weights[k] N(means[k], stds[k]^2); samples are shaped (B, 1, 1) like action chunks."""

    weights: Sequence[float] = (0.3, 0.7)  # mixture weights, summing to 1
    means: Sequence[float] = (-2.0, 1.5)  # component means, nonzero so relative mean errors are defined
    stds: Sequence[float] = (0.3, 0.6)  # component standard deviations, > 0

    def __post_init__(self) -> None:
        """Validate the parameters."""
        if not len(self.weights) == len(self.means) == len(self.stds) >= 1:
            raise ValueError("weights, means and stds must be non-empty and of equal length")
        if abs(sum(self.weights) - 1) > 1e-9 or min(self.weights) <= 0:
            raise ValueError(f"weights must be positive and sum to 1; got {tuple(self.weights)}")
        if min(self.stds) <= 0 or min(abs(m) for m in self.means) == 0:
            raise ValueError("stds must be > 0 and means nonzero")

    def _params(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(weights, means, stds) as float64 tensors (K,) on device."""
        params = torch.tensor(
            [list(self.weights), list(self.means), list(self.stds)], dtype=torch.float64, device=device
        )
        return params[0], params[1], params[2]

    def component(self, k: int) -> GaussianMixture:
        """Component k alone (weight 1): the conditional law when an instruction selects component k."""
        return GaussianMixture(weights=(1.0,), means=(self.means[k],), stds=(self.stds[k],))

    def mean(self) -> float:
        """Mean of the mixture, sum_k w_k mu_k."""
        return sum(w * m for w, m in zip(self.weights, self.means))

    def sample(self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        """Draw n data points, float64 (n, 1, 1)."""
        weights, means, stds = self._params(torch.device(device))
        component = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, dtype=torch.float64, device=device, generator=generator)
        return (means[component] + stds[component] * z).reshape(n, 1, 1)

    def posterior_means(self, x: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """(E[x0 | x], E[n | x]) for x = a x0 + s n; x (B, ...), a and s broadcastable (B, 1, ...), float64."""
        weights, means, stds = self._params(x.device)
        x, a, s = x.unsqueeze(-1), a.unsqueeze(-1), s.unsqueeze(-1)  # trailing component axis K
        variance = a**2 * stds**2 + s**2  # (..., K) variance of x given component k
        residual = x - a * means
        log_resp = weights.log() - 0.5 * variance.log() - 0.5 * residual**2 / variance
        resp = torch.softmax(log_resp, dim=-1)
        x0_mean = means + a * stds**2 / variance * residual
        noise_mean = s / variance * residual
        return (resp * x0_mean).sum(-1), (resp * noise_mean).sum(-1)

    def ddpm_denoiser(self, objective: DDPM) -> Callable[[Tensor, Tensor], Tensor]:
        """Exact denoiser(x_t, t_model) for a DDPM objective, returning its prediction type (eps, x0 or v)."""

        def denoise(x: Tensor, t_model: Tensor) -> Tensor:
            abar = objective.alphas_cumprod.to(x.device)[t_model.round().long()]  # (B,)
            shape = (-1,) + (1,) * (x.ndim - 1)
            a, s = abar.sqrt().reshape(shape), (1 - abar).sqrt().reshape(shape)
            x0_mean, noise_mean = self.posterior_means(x.double(), a, s)
            if objective.prediction == "epsilon":
                out = noise_mean
            elif objective.prediction == "sample":
                out = x0_mean
            else:
                out = a * noise_mean - s * x0_mean
            return out.to(x.dtype)

        return denoise

    def flow_denoiser(self, objective: FlowMatching) -> Callable[[Tensor, Tensor], Tensor]:
        """Exact velocity(x_t, t_model) = E[noise - x0 | x_t] for a flow-matching objective."""

        def velocity(x: Tensor, t_model: Tensor) -> Tensor:
            t = (t_model.double() / objective.time_scale).reshape((-1,) + (1,) * (x.ndim - 1))
            x0_mean, noise_mean = self.posterior_means(x.double(), 1 - t, t)
            return (noise_mean - x0_mean).to(x.dtype)

        return velocity

    def cdf(self, x: Tensor) -> Tensor:
        """Mixture CDF at x (any shape), float64."""
        weights, means, stds = self._params(x.device)
        z = (x.double().unsqueeze(-1) - means) / (stds * math.sqrt(2))
        return (weights * 0.5 * (1 + torch.erf(z))).sum(-1)

    def wasserstein1(self, samples: Tensor, grid_size: int = 40_001) -> float:
        """W1 distance between the samples' empirical law and the mixture: integral of |F_n - F| on a fine grid."""
        x = samples.double().reshape(-1).sort().values
        means, stds = torch.tensor(list(self.means)), torch.tensor(list(self.stds))
        lo = min(x[0].item(), (means - 10 * stds).min().item())
        hi = max(x[-1].item(), (means + 10 * stds).max().item())
        grid = torch.linspace(lo, hi, grid_size, dtype=torch.float64, device=x.device)
        empirical = torch.searchsorted(x, grid, right=True) / x.numel()
        return torch.trapezoid((empirical - self.cdf(grid)).abs(), grid).item()

    def mode_errors(self, samples: Tensor) -> dict[str, float]:
        """Errors of samples (B, ...) vs the mixture, each mode taken by the Bayes classifier under the true mixture.

        Returns max |weight - w_k|, max relative mean error and max relative std error over modes (inf if a mode
        receives fewer than 2 samples).
        """
        weights, means, stds = self._params(samples.device)
        x = samples.double().reshape(-1, 1)  # (N, 1)
        log_density = weights.log() - stds.log() - 0.5 * ((x - means) / stds) ** 2  # (N, K)
        mode = log_density.argmax(dim=1)  # (N,)
        weight_err, mean_err, std_err = 0.0, 0.0, 0.0
        for k in range(len(self.weights)):
            members = x[mode == k, 0]
            weight_err = max(weight_err, abs(members.numel() / x.shape[0] - self.weights[k]))
            if members.numel() < 2:
                mean_err = std_err = math.inf
                continue
            mean_err = max(mean_err, abs(members.mean().item() - self.means[k]) / abs(self.means[k]))
            std_err = max(std_err, abs(members.std().item() - self.stds[k]) / self.stds[k])
        return {"weight_err": weight_err, "mean_rel_err": mean_err, "std_rel_err": std_err}
