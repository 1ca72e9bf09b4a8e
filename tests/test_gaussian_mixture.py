"""The closed-form mixture oracle: posterior means vs quadrature, exact denoisers, mode statistics."""

import math

import pytest
import torch

from policy.gaussian_mixture import GaussianMixture, stratified_normal
from policy.objectives import DDPM, FlowMatching

MIXTURE = GaussianMixture(weights=(0.3, 0.7), means=(-2.0, 1.5), stds=(0.3, 0.6))


def quadrature_posterior_means(x: float, a: float, s: float) -> tuple[float, float]:
    """E[x0 | x] and E[n | x] for x = a x0 + s n by brute-force integration over x0 (s > 0)."""
    x0 = torch.linspace(-8, 8, 400_001, dtype=torch.float64)
    components = zip(MIXTURE.weights, MIXTURE.means, MIXTURE.stds)
    prior = sum(w * torch.exp(-0.5 * ((x0 - m) / sd) ** 2) / sd for w, m, sd in components)
    posterior = prior * torch.exp(-0.5 * ((x - a * x0) / s) ** 2)
    x0_mean = ((posterior * x0).sum() / posterior.sum()).item()
    return x0_mean, (x - a * x0_mean) / s


@pytest.mark.parametrize("x, a, s", [(0.3, 0.9, 0.44), (-1.7, 0.5, 0.87), (2.5, 0.99, 0.1), (-0.4, 0.05, 1.0)])
def test_posterior_means_match_quadrature(x, a, s):
    x0_mean, noise_mean = MIXTURE.posterior_means(*(torch.tensor(v, dtype=torch.float64) for v in (x, a, s)))
    expected = quadrature_posterior_means(x, a, s)
    assert (x0_mean.item(), noise_mean.item()) == pytest.approx(expected, abs=1e-7)


def test_flow_velocity_limits():
    objective = FlowMatching(time_scale=100.0)
    velocity = MIXTURE.flow_denoiser(objective)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1, 1)
    torch.testing.assert_close(velocity(x, torch.full((7,), 100.0)), x - MIXTURE.mean())  # t=1: x - E[x0]
    torch.testing.assert_close(velocity(x, torch.zeros(7)), -x)  # t=0: E[noise] - x0


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_ddpm_denoiser_returns_the_objectives_target_type(prediction):
    objective = DDPM(prediction=prediction, clip_sample=False)
    x = torch.linspace(-3, 3, 5, dtype=torch.float64).reshape(5, 1, 1)
    t = torch.tensor([0.0, 10.0, 50.0, 90.0, 99.0])
    out = MIXTURE.ddpm_denoiser(objective)(x, t)
    abar = objective.alphas_cumprod[t.long()].reshape(5, 1, 1)
    x0_hat, eps_hat = objective.x0_and_eps(out, x, abar.sqrt(), (1 - abar).sqrt())
    x0_mean, noise_mean = MIXTURE.posterior_means(x, abar.sqrt(), (1 - abar).sqrt())
    torch.testing.assert_close(x0_hat, x0_mean)
    torch.testing.assert_close(eps_hat, noise_mean)


def test_samples_and_mode_errors():
    samples = MIXTURE.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20_000, 1, 1)
    errors = MIXTURE.mode_errors(samples)
    assert errors["weight_err"] < 0.01 and errors["mean_rel_err"] < 0.01 and errors["std_rel_err"] < 0.02
    shifted = MIXTURE.mode_errors(samples + 0.2)
    assert shifted["mean_rel_err"] == pytest.approx(0.2 / 1.5, abs=0.01)
    assert MIXTURE.mode_errors(torch.zeros(100))["std_rel_err"] == math.inf


def test_wasserstein1():
    samples = MIXTURE.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert MIXTURE.wasserstein1(samples) < 0.02
    assert MIXTURE.wasserstein1(samples + 0.25) == pytest.approx(0.25, abs=0.02)  # W1 of a shift is the shift
    point = torch.full((10,), MIXTURE.mean())  # all mass at the mean: E|X - mean|
    x = MIXTURE.sample(200_000, generator=torch.Generator().manual_seed(1))
    assert MIXTURE.wasserstein1(point) == pytest.approx((x - MIXTURE.mean()).abs().mean().item(), rel=0.01)


def test_stratified_normal_has_standard_moments():
    z = stratified_normal(10_000)
    assert z.shape == (10_000, 1, 1) and torch.allclose(z, -z.flip(0), rtol=0, atol=1e-12)
    assert z.std().item() == pytest.approx(1, abs=2e-3)
    assert (z < -1.959964).double().mean().item() == pytest.approx(0.025, abs=1e-4)


def test_bad_mixtures_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(weights=(0.5, 0.6))
    with pytest.raises(ValueError, match="equal length"):
        GaussianMixture(weights=(1.0,), means=(1.0, 2.0), stds=(1.0,))
