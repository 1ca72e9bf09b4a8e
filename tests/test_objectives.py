"""Objectives: DDPM tables vs diffusers, noising and targets, loss values, flow path convention, time sampling."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from policy.objectives import DDPM, FlowMatching

SHAPE = (8, 5, 3)  # (B, T, D)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- DDPM tables and noising


@pytest.mark.parametrize(
    "settings",
    [
        dict(num_train_steps=100, beta_schedule="squaredcos_cap_v2"),
        dict(num_train_steps=1000, beta_schedule="squaredcos_cap_v2"),
        dict(num_train_steps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
        dict(num_train_steps=200, beta_schedule="linear", beta_start=1e-4, beta_end=0.05),
    ],
)
def test_schedule_tables_match_diffusers(settings):
    objective = DDPM(**settings)
    kwargs = dict(num_train_timesteps=settings["num_train_steps"], beta_schedule=settings["beta_schedule"])
    kwargs.update({k: settings[k] for k in ("beta_start", "beta_end") if k in settings})
    for scheduler_cls in (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler):
        scheduler = scheduler_cls(**kwargs)
        torch.testing.assert_close(objective.betas.float(), scheduler.betas, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(objective.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_cosine_schedule_is_capped_and_reaches_noise():
    objective = DDPM(num_train_steps=100)
    assert objective.betas.max() == pytest.approx(0.999)
    assert objective.alphas_cumprod[-1] < 1e-6 and objective.alphas_cumprod[0] > 0.999
    assert (objective.alphas_cumprod[1:] < objective.alphas_cumprod[:-1]).all()


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_noising_and_targets_match_diffusers(prediction):
    objective = DDPM(prediction=prediction)
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    x0, noise = randn(*SHAPE), randn(*SHAPE, seed=1)
    t = torch.tensor([0, 1, 17, 50, 63, 98, 99, 42])
    torch.testing.assert_close(
        objective.add_noise(x0, noise, t), scheduler.add_noise(x0, noise, t), rtol=1e-5, atol=1e-6
    )
    expected = {"epsilon": noise, "sample": x0, "v": scheduler.get_velocity(x0, noise, t)}[prediction]
    torch.testing.assert_close(objective.target(x0, noise, t), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_x0_and_eps_invert_the_target(prediction):
    objective = DDPM(prediction=prediction, clip_sample=False)
    x0, noise = randn(*SHAPE), randn(*SHAPE, seed=1)
    t = torch.full((SHAPE[0],), 37)
    x_t = objective.add_noise(x0, noise, t)
    abar = objective.alphas_cumprod[37]
    x0_hat, eps_hat = objective.x0_and_eps(objective.target(x0, noise, t), x_t, abar.sqrt(), (1 - abar).sqrt())
    torch.testing.assert_close(x0_hat, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps_hat, noise, rtol=1e-10, atol=1e-10)


def test_clipping_bounds_x0_but_keeps_eps_from_the_raw_prediction():
    objective = DDPM(prediction="sample", clip_sample=True, clip_range=0.5)
    x_t, output = randn(*SHAPE), 3 * randn(*SHAPE, seed=1)
    alpha, sigma = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    x0_hat, eps_hat = objective.x0_and_eps(output, x_t, alpha, sigma)
    torch.testing.assert_close(x0_hat, output.clamp(-0.5, 0.5))
    torch.testing.assert_close(eps_hat, (x_t - alpha * output) / sigma)


# ---------------------------------------------------------------- DDPM loss


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_ddpm_loss_is_zero_for_the_exact_target_and_mse_otherwise(prediction):
    objective = DDPM(prediction=prediction)
    x0 = randn(*SHAPE)
    seen = {}

    def oracle(x_t, t_model):
        """Recovers the target from x_t, the known x0 and the timestep it was given."""
        assert t_model.shape == (SHAPE[0],) and t_model.dtype == x0.dtype
        assert torch.equal(t_model, t_model.round()) and 0 <= t_model.min() and t_model.max() <= 99
        t = t_model.long()
        abar = objective.alphas_cumprod[t].reshape(-1, 1, 1)
        noise = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        seen["t"], seen["noise"] = t, noise
        return objective.target(x0, noise, t)

    assert objective.loss(oracle, x0, generator=torch.Generator().manual_seed(0)).item() == pytest.approx(0, abs=1e-12)
    zero_loss = objective.loss(lambda x_t, t: torch.zeros_like(x_t), x0, generator=torch.Generator().manual_seed(0))
    assert zero_loss.item() == pytest.approx(objective.target(x0, seen["noise"], seen["t"]).pow(2).mean().item())


def test_ddpm_loss_samples_every_timestep_and_is_seeded():
    objective = DDPM(num_train_steps=10)
    seen = []

    def recording(x_t, t_model):
        seen.append(t_model)
        return x_t

    x0 = randn(256, 2, 1)
    first = objective.loss(recording, x0, generator=torch.Generator().manual_seed(3))
    second = objective.loss(recording, x0, generator=torch.Generator().manual_seed(3))
    assert first.ndim == 0 and first.item() == second.item()
    assert torch.equal(seen[0], seen[1]) and set(seen[0].long().tolist()) == set(range(10))


def test_ddpm_loss_trains_after_tables_were_built_under_inference_mode():
    objective = DDPM(prediction="v")
    with torch.inference_mode():
        objective.signal_noise_scales(torch.device("cpu"), torch.float32)
    weight = torch.ones(3, requires_grad=True)
    objective.loss(lambda x_t, t: x_t * weight, randn(*SHAPE, dtype=torch.float32)).backward()
    assert weight.grad.abs().sum() > 0


def test_ddpm_settings_are_validated():
    with pytest.raises(ValueError, match="linear, squaredcos_cap_v2"):
        DDPM(beta_schedule="cosine")
    with pytest.raises(ValueError, match="epsilon, sample, v"):
        DDPM(prediction="v_prediction")
    with pytest.raises(ValueError, match="num_train_steps"):
        DDPM(num_train_steps=0)
    with pytest.raises(ValueError, match="not at noise"):
        DDPM(num_train_steps=100, beta_schedule="linear")  # ends at alphas_cumprod 0.36
    with pytest.raises(ValueError, match="x0"):
        DDPM().loss(lambda x, t: x, torch.zeros(0, 4, 2))


def test_objectives_are_hashable_values():
    assert DDPM() == DDPM() and hash(DDPM()) == hash(DDPM()) and DDPM() != DDPM(prediction="v")
    assert FlowMatching() == FlowMatching() and FlowMatching() != FlowMatching(time_scale=1.0)


# ---------------------------------------------------------------- flow matching


def test_flow_path_convention():
    """x_t = (1 - t) x0 + t noise: t=0 is data, t=1 is noise, and d x_t / dt is the target noise - x0."""
    objective = FlowMatching()
    x0, noise = randn(*SHAPE), randn(*SHAPE, seed=1)
    ones = torch.ones(SHAPE[0], dtype=torch.float64)
    torch.testing.assert_close(objective.interpolate(x0, noise, 0 * ones), x0)
    torch.testing.assert_close(objective.interpolate(x0, noise, ones), noise)
    t, dt = torch.linspace(0.1, 0.9, SHAPE[0], dtype=torch.float64), 1e-6
    derivative = (objective.interpolate(x0, noise, t + dt) - objective.interpolate(x0, noise, t - dt)) / (2 * dt)
    torch.testing.assert_close(derivative, objective.target(x0, noise), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(objective.target(x0, noise), noise - x0)


@pytest.mark.parametrize("time_sampling", ["uniform", "logit_normal", "beta"])
def test_flow_loss_is_zero_for_the_exact_velocity(time_sampling):
    objective = FlowMatching(time_sampling=time_sampling, time_scale=50.0)
    x0 = randn(*SHAPE)

    def oracle(x_t, t_model):
        """Recovers noise - x0 = (x_t - x0) / t from the time it was given (t_model / time_scale)."""
        t = (t_model / 50.0).reshape(-1, 1, 1)
        assert ((0 < t) & (t <= 1)).all()
        return (x_t - x0) / t

    assert objective.loss(oracle, x0, generator=torch.Generator().manual_seed(0)).item() == pytest.approx(0, abs=1e-12)
    assert objective.loss(lambda x_t, t: torch.zeros_like(x_t), x0).item() > 0.5


def test_time_sampling_moments():
    n = 200_000

    def draw(**settings):
        return FlowMatching(**settings).sample_time(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    uniform = draw(time_sampling="uniform")
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.005)
    assert uniform.var().item() == pytest.approx(1 / 12, abs=0.002)

    logit = torch.logit(draw(time_sampling="logit_normal", logit_normal_mean=-0.5, logit_normal_std=1.5))
    assert logit.mean().item() == pytest.approx(-0.5, abs=0.01)
    assert logit.std().item() == pytest.approx(1.5, rel=0.01)

    a, b, s = 1.5, 1.0, 0.999
    t = draw(time_sampling="beta", beta_a=a, beta_b=b, beta_s=s)
    beta = (t - (1 - s)) / s
    assert t.min() >= 1 - s and t.max() <= 1
    assert beta.mean().item() == pytest.approx(a / (a + b), abs=0.003)
    assert beta.var().item() == pytest.approx(a * b / ((a + b) ** 2 * (a + b + 1)), rel=0.02)
    assert (beta <= 0.25).double().mean().item() == pytest.approx(0.25**a, abs=0.005)  # CDF of Beta(a, 1) is x^a


def test_time_sampling_is_seeded_and_typed():
    objective = FlowMatching(time_sampling="beta")
    draws = [objective.sample_time(16, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1]) and draws[0].dtype == torch.float32 and draws[0].shape == (16,)


def test_flow_settings_are_validated():
    with pytest.raises(ValueError, match="uniform, logit_normal, beta"):
        FlowMatching(time_sampling="cosine")
    for bad in (dict(logit_normal_std=0.0), dict(beta_a=0.0), dict(beta_s=1.5), dict(time_scale=0.0)):
        with pytest.raises(ValueError):
            FlowMatching(**bad)


def test_flow_loss_gradients_reach_the_denoiser():
    weight = torch.ones(3, requires_grad=True)
    loss = FlowMatching().loss(lambda x_t, t: x_t * weight, randn(*SHAPE, dtype=torch.float32))
    loss.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0 and not math.isnan(loss.item())
