"""Samplers: timesteps and whole trajectories vs diffusers, closed-form mixture accuracy, conventions, NFE, errors."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from policy.gaussian_mixture import GaussianMixture, stratified_normal
from policy.objectives import DDPM, FlowMatching
from policy.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPPSampler,
    EulerSampler,
    HeunSampler,
    MidpointSampler,
    check_compatible,
    discrete_timesteps,
    flow_times,
    make_sampler,
)

DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "sample": "sample", "v": "v_prediction"}
SHAPE = (4, 6, 3)  # (B, T, D)


def model_fn(x: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear stand-in for a network: depends on x and t, bounded like a trained denoiser."""
    return torch.tanh(1.3 * x + 0.01 * t_model.reshape(-1, 1, 1)) + 0.1 * torch.cos(x)


def diffusers_loop(scheduler, objective: DDPM, x: torch.Tensor, num_steps: int, *, generator=None, **step_kwargs):
    """Run a diffusers DDPM/DDIM scheduler over the whole chain with model_fn, on our float64 alphas_cumprod.

    diffusers keeps the table in float32; the tables are compared separately (test_objectives), so here the step
    formulas are compared at float64 precision.
    """
    scheduler.alphas_cumprod = objective.alphas_cumprod.clone()
    scheduler.set_timesteps(num_steps)
    for t in scheduler.timesteps:
        out = model_fn(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        x = scheduler.step(out, t, x, generator=generator, **step_kwargs).prev_sample
    return x


# ---------------------------------------------------------------- timesteps


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("num_train_steps", [100, 1000])
def test_timesteps_match_diffusers(spacing, num_train_steps):
    for scheduler_cls in (DDPMScheduler, DDIMScheduler):
        scheduler = scheduler_cls(num_train_timesteps=num_train_steps, timestep_spacing=spacing)
        for n in (1, 2, 3, 7, 10, 16, 33, 50, 99, 100):
            scheduler.set_timesteps(n)
            assert discrete_timesteps(num_train_steps, n, spacing).tolist() == scheduler.timesteps.tolist()


def test_trailing_starts_at_the_noisiest_timestep_and_leading_does_not():
    assert discrete_timesteps(100, 1, "trailing").tolist() == [99]
    assert discrete_timesteps(100, 4, "trailing").tolist() == [99, 74, 49, 24]
    assert discrete_timesteps(100, 1, "leading").tolist() == [0]
    assert discrete_timesteps(100, 2, "leading").tolist() == [50, 0]


def test_timestep_arguments_are_validated():
    with pytest.raises(ValueError, match="trailing, leading, linspace"):
        discrete_timesteps(100, 10, "uniform")
    for n in (0, 101):
        with pytest.raises(ValueError, match="num_steps"):
            discrete_timesteps(100, n)


# ---------------------------------------------------------------- trajectories vs diffusers


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
@pytest.mark.parametrize("clip_sample", [False, True])
def test_ddpm_ancestral_trajectory_matches_diffusers(prediction, clip_sample):
    objective = DDPM(prediction=prediction, clip_sample=clip_sample)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for spacing, n in (("leading", 100), ("trailing", 10), ("linspace", 7)):
        scheduler = DDPMScheduler(
            num_train_timesteps=100,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=DIFFUSERS_PREDICTION[prediction],
            clip_sample=clip_sample,
            variance_type="fixed_small",
            timestep_spacing=spacing,
        )
        expected = diffusers_loop(scheduler, objective, noise, n, generator=torch.Generator().manual_seed(1))
        sampler = DDPMSampler(spacing=spacing)
        ours = sampler.sample(model_fn, objective, noise, num_steps=n, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.6, 1.0])
def test_ddim_trajectory_matches_diffusers(prediction, eta):
    objective = DDPM(prediction=prediction, clip_sample=True)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # diffusers' DDIM steps to t - T//n: identical to ours whenever the timesteps are spaced by T//n.
    for spacing, n in (("leading", 10), ("leading", 3), ("trailing", 20), ("trailing", 1)):
        scheduler = DDIMScheduler(
            num_train_timesteps=100,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=DIFFUSERS_PREDICTION[prediction],
            clip_sample=True,
            set_alpha_to_one=True,
            timestep_spacing=spacing,
        )
        expected = diffusers_loop(scheduler, objective, noise, n, generator=torch.Generator().manual_seed(1), eta=eta)
        sampler = DDIMSampler(eta=eta, spacing=spacing)
        ours = sampler.sample(model_fn, objective, noise, num_steps=n, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_dpmsolver_trajectory_matches_diffusers(prediction, schedule):
    num_train_steps = 100 if schedule == "squaredcos_cap_v2" else 1000
    objective = DDPM(num_train_steps=num_train_steps, beta_schedule=schedule, prediction=prediction, clip_sample=False)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for spacing in ("trailing", "leading", "linspace"):
        for n in (1, 2, 3, 5, 20):
            scheduler = DPMSolverMultistepScheduler(
                num_train_timesteps=num_train_steps,
                beta_schedule=schedule,
                prediction_type=DIFFUSERS_PREDICTION[prediction],
                algorithm_type="dpmsolver++",
                solver_order=2,
                solver_type="midpoint",
                lower_order_final=True,
                timestep_spacing="trailing",
            )
            # diffusers defines leading/linspace differently for this scheduler, so pass our timesteps explicitly.
            timesteps = discrete_timesteps(num_train_steps, n, spacing).tolist()
            scheduler.set_timesteps(timesteps=timesteps)
            float32_sigmas = scheduler.sigmas
            abar = objective.alphas_cumprod[timesteps]
            scheduler.sigmas = torch.cat(
                [((1 - abar) / abar).sqrt(), abar.new_zeros(1)]
            )  # float64, as diffusers defines it
            torch.testing.assert_close(scheduler.sigmas.float(), float32_sigmas, rtol=1e-5, atol=1e-6)
            x = noise
            for t in scheduler.timesteps:
                x = scheduler.step(model_fn(x, torch.full((SHAPE[0],), float(t), dtype=x.dtype)), t, x).prev_sample
            ours = DPMSolverPPSampler(spacing=spacing).sample(model_fn, objective, noise, num_steps=n)
            torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)  # diffusers steps x in float32


def test_dpmsolver_trailing_timesteps_match_diffusers_own_schedule():
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=100, timestep_spacing="trailing")
    for n in (1, 3, 10, 25):
        scheduler.set_timesteps(n)
        assert discrete_timesteps(100, n, "trailing").tolist() == scheduler.timesteps.tolist()


# ---------------------------------------------------------------- closed-form mixture

MIXTURE = GaussianMixture(weights=(0.3, 0.7), means=(-2.0, 1.5), stds=(0.3, 0.6))


@pytest.fixture(scope="module")
def mixture_noise():
    """20k N(0, 1) samples (stratified, so the input law carries no Monte Carlo error)."""
    return stratified_normal(20_000)


@pytest.mark.parametrize(
    "sampler, num_steps",
    [(DDPMSampler(), 100), (DDIMSampler(), 50), (DPMSolverPPSampler(), 20), (HeunSampler(), 20)],
    ids=["ddpm-100", "ddim-50", "dpmsolver-20", "heun-20"],
)
def test_exact_denoiser_reproduces_the_mixture(sampler, num_steps, mixture_noise):
    if sampler.objective_kind == "flow":
        objective = FlowMatching()
        denoiser = MIXTURE.flow_denoiser(objective)
    else:
        objective = DDPM(clip_sample=False)
        denoiser = MIXTURE.ddpm_denoiser(objective)
    generator = torch.Generator().manual_seed(0)
    samples = sampler.sample(denoiser, objective, mixture_noise, num_steps=num_steps, generator=generator)
    errors = MIXTURE.mode_errors(samples)
    assert errors["weight_err"] < 0.03, errors
    assert errors["mean_rel_err"] < 0.05, errors
    assert errors["std_rel_err"] < 0.05, errors


def test_one_leading_step_returns_the_noise_almost_unchanged(mixture_noise):
    """Why "trailing" is the default: leading DDIM-1 denoises pure noise as if it were x at t=0 (almost clean)."""
    objective = DDPM(clip_sample=False)
    noise = mixture_noise[::100]
    samples = DDIMSampler(spacing="leading").sample(MIXTURE.ddpm_denoiser(objective), objective, noise, num_steps=1)
    assert (samples - noise).abs().max() < 0.05


@pytest.mark.parametrize("prediction", ["sample", "v"])
def test_every_prediction_type_gives_the_same_samples(prediction, mixture_noise):
    noise = mixture_noise[::20]
    reference = DDPM(clip_sample=False)
    objective = DDPM(prediction=prediction, clip_sample=False)
    for sampler in (DDIMSampler(num_steps=10), DPMSolverPPSampler(num_steps=10), DDPMSampler(num_steps=10)):
        expected = sampler.sample(
            MIXTURE.ddpm_denoiser(reference), reference, noise, generator=torch.Generator().manual_seed(3)
        )
        ours = sampler.sample(
            MIXTURE.ddpm_denoiser(objective), objective, noise, generator=torch.Generator().manual_seed(3)
        )
        torch.testing.assert_close(ours, expected, rtol=1e-7, atol=1e-7)


def test_euler_one_step_from_exact_velocity_is_the_mixture_mean(mixture_noise):
    """v(x, 1) = x - E[x0], so one Euler step from t=1 to t=0 lands every sample on the mixture mean."""
    objective = FlowMatching()
    samples = EulerSampler().sample(MIXTURE.flow_denoiser(objective), objective, mixture_noise[:100], num_steps=1)
    torch.testing.assert_close(samples, torch.full_like(samples, MIXTURE.mean()), rtol=0, atol=1e-12)


def test_ddim_one_trailing_step_is_the_posterior_mean(mixture_noise):
    objective = DDPM(clip_sample=False)
    noise = mixture_noise[:100]
    samples = DDIMSampler().sample(MIXTURE.ddpm_denoiser(objective), objective, noise, num_steps=1)
    abar = objective.alphas_cumprod[-1]
    posterior_mean, _ = MIXTURE.posterior_means(noise, abar.sqrt(), (1 - abar).sqrt())
    torch.testing.assert_close(samples, posterior_mean, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sampler_cls, order", [(EulerSampler, 1), (MidpointSampler, 2), (HeunSampler, 2)])
def test_flow_samplers_converge_at_their_order(sampler_cls, order):
    """Successive differences x_n - x_2n shrink by 2^order when the step count doubles."""
    objective = FlowMatching()
    velocity = MIXTURE.flow_denoiser(objective)
    noise = stratified_normal(64)
    x10, x20, x40 = (sampler_cls().sample(velocity, objective, noise, num_steps=n) for n in (10, 20, 40))
    ratio = (x10 - x20).abs().mean() / (x20 - x40).abs().mean()
    assert ratio == pytest.approx(2**order, rel=0.2)


# ---------------------------------------------------------------- conventions, NFE, API


def test_flow_samplers_integrate_from_noise_at_t1_to_data_at_t0():
    objective = FlowMatching(time_scale=100.0)
    seen = []

    def constant_velocity(x, t_model):
        seen.append(t_model.clone())
        return torch.full_like(x, 0.5)

    noise = torch.zeros(SHAPE)
    for sampler_cls in (EulerSampler, MidpointSampler, HeunSampler):
        seen.clear()
        out = sampler_cls().sample(constant_velocity, objective, noise, num_steps=4)
        torch.testing.assert_close(out, torch.full_like(noise, -0.5))  # x_0 = x_1 - integral_0^1 v dt
        assert seen[0].tolist() == [100.0] * SHAPE[0]
        assert all(t.shape == (SHAPE[0],) for t in seen)
    assert [t[0].item() for t in seen] == pytest.approx([100, 75, 75, 50, 50, 25, 25, 0])  # Heun's stage times


def test_shifted_flow_grid_spends_more_steps_near_noise():
    uniform, shifted = flow_times(8), flow_times(8, shift=3.0)
    torch.testing.assert_close(uniform, torch.linspace(1, 0, 9, dtype=torch.float64))
    assert shifted[0] == 1 and shifted[-1] == 0
    assert (shifted[1:] < shifted[:-1]).all() and (shifted[1:-1] > uniform[1:-1]).all()


@pytest.mark.parametrize(
    "sampler, objective, num_steps, nfe",
    [
        (DDPMSampler(), DDPM(), None, 100),
        (DDPMSampler(), DDPM(), 7, 7),
        (DDIMSampler(), DDPM(), None, 10),
        (DPMSolverPPSampler(num_steps=3), DDPM(), None, 3),
        (EulerSampler(), FlowMatching(), 6, 6),
        (MidpointSampler(), FlowMatching(), 6, 12),
        (HeunSampler(), FlowMatching(), None, 10),
    ],
)
def test_nfe_counts_network_calls(sampler, objective, num_steps, nfe):
    calls = []

    def counting(x, t_model):
        calls.append(1)
        return torch.zeros_like(x)

    sampler.sample(counting, objective, torch.randn(SHAPE), num_steps=num_steps)
    assert len(calls) == nfe
    if num_steps is not None or sampler.num_steps is not None:  # DDPMSampler's default is the objective's chain
        assert sampler.nfe(num_steps) == nfe


def test_ddpm_samplers_see_integer_timesteps_from_the_noisiest():
    seen = []

    def recording(x, t_model):
        seen.append(t_model[0].item())
        return torch.zeros_like(x)

    DDIMSampler().sample(recording, DDPM(), torch.randn(SHAPE), num_steps=4)
    assert seen == [99.0, 74.0, 49.0, 24.0]


def test_stochastic_samplers_are_reproducible_with_a_generator():
    objective, noise = DDPM(), torch.randn(SHAPE)
    for sampler in (DDPMSampler(num_steps=10), DDIMSampler(eta=1.0)):
        runs = [
            sampler.sample(model_fn, objective, noise, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)
        ]
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
        assert not torch.allclose(runs[0], runs[2])


def test_tables_cached_under_inference_mode_still_serve_autograd():
    weight = torch.tensor(0.5, requires_grad=True)
    noise = torch.randn(SHAPE)
    for sampler, objective in (
        (DDIMSampler(), DDPM()),
        (DPMSolverPPSampler(), DDPM()),
        (HeunSampler(), FlowMatching()),
    ):
        with torch.inference_mode():
            sampler.sample(model_fn, objective, noise)
        sampler.sample(lambda x, t: weight * model_fn(x, t), objective, noise).sum().backward()
        assert weight.grad is not None and weight.grad != 0
        weight.grad = None


def test_samplers_keep_dtype_and_shape():
    for dtype in (torch.float32, torch.float64):
        noise = torch.randn(SHAPE, dtype=dtype)
        for name in ("ddpm", "ddim", "dpmsolver"):
            assert make_sampler(name, num_steps=3).sample(model_fn, DDPM(), noise).dtype == dtype
        for name in ("euler", "midpoint", "heun"):
            out = make_sampler(name, num_steps=3).sample(model_fn, FlowMatching(), noise)
            assert out.dtype == dtype and out.shape == SHAPE


def test_incompatible_sampler_and_objective_are_refused():
    expected = "sampler 'ddim' needs a DDPM-trained model; valid samplers for flow: euler, midpoint, heun"
    with pytest.raises(ValueError, match=expected):
        check_compatible(DDIMSampler(), FlowMatching())
    with pytest.raises(ValueError, match="valid samplers for ddpm: ddpm, ddim, dpmsolver"):
        EulerSampler().sample(model_fn, DDPM(), torch.randn(SHAPE))
    check_compatible(HeunSampler(), FlowMatching())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ddpm, ddim, dpmsolver, euler, midpoint, heun"):
        make_sampler("dpm++")
    with pytest.raises(ValueError, match="num_train_steps=100"):
        DDIMSampler(num_steps=101).sample(model_fn, DDPM(), torch.randn(SHAPE))
    with pytest.raises(ValueError, match="num_steps"):
        EulerSampler(num_steps=0)
    with pytest.raises(ValueError, match="num_steps"):
        HeunSampler().sample(model_fn, FlowMatching(), torch.randn(SHAPE), num_steps=0)
    with pytest.raises(ValueError, match="spacing"):
        DDPMSampler(spacing="even")
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(eta=3.0).sample(model_fn, DDPM(), torch.randn(SHAPE))
    with pytest.raises(ValueError, match="no default num_steps"):
        DDPMSampler().nfe()


def test_make_sampler_passes_settings():
    sampler = make_sampler("ddim", num_steps=4, eta=0.5, spacing="leading")
    assert isinstance(sampler, DDIMSampler) and (sampler.num_steps, sampler.eta, sampler.spacing) == (4, 0.5, "leading")
