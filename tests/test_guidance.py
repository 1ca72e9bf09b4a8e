"""Tests for policy/guidance.py: classifier-free guidance against closed forms, exactness at w = 0 and 1, batching."""

import math

import pytest
import torch

from policy.gaussian_mixture import GaussianMixture, stratified_normal
from policy.guidance import check_guidance_scale, classifier_free_guidance
from policy.objectives import DDPM, FlowMatching
from policy.samplers import DDIMSampler, EulerSampler, HeunSampler

N = 4000  # stratified noise points per sample


def _pair(cond, uncond):
    """A denoiser bound to 2B rows: the conditional one on the first B, the unconditional one on the rest."""
    calls = []

    def denoise(x, t):
        calls.append(x.shape[0])
        half = x.shape[0] // 2
        return torch.cat((cond(x[:half], t[:half]), uncond(x[half:], t[half:])))

    return denoise, calls


def _denoisers(law, objective):
    return law.ddpm_denoiser(objective) if isinstance(objective, DDPM) else law.flow_denoiser(objective)


SETUPS = [
    (DDPM(num_train_steps=1000, clip_sample=False), DDIMSampler(num_steps=50)),
    (FlowMatching(), EulerSampler(num_steps=50)),
]


@pytest.mark.parametrize(("objective", "sampler"), SETUPS, ids=["ddim", "euler"])
@pytest.mark.parametrize("w", [0.0, 1.0, 2.0])
def test_guided_gaussians_of_equal_variance_match_the_tilted_law(objective, sampler, w):
    # p(x | c) = N(1.5, 0.5^2), p(x) = N(-0.5, 0.5^2): every noised pair is again two Gaussians of one variance, so
    # the guided field is exactly the noised score of p(x | c)^w p(x)^(1 - w) = N(-0.5 + 2 w, 0.5^2).
    cond_law = GaussianMixture(weights=(1.0,), means=(1.5,), stds=(0.5,))
    uncond_law = GaussianMixture(weights=(1.0,), means=(-0.5,), stds=(0.5,))
    pair, calls = _pair(_denoisers(cond_law, objective), _denoisers(uncond_law, objective))
    x = sampler.sample(classifier_free_guidance(pair, w), objective, stratified_normal(N))
    mean = -0.5 + w * 2.0
    assert abs(x.mean().item() - mean) <= 0.05 * abs(mean)
    assert abs(x.std().item() - 0.5) <= 0.05 * 0.5
    assert calls == [2 * N] * sampler.num_steps  # one call per step, on the doubled batch


@pytest.mark.parametrize(("objective", "sampler"), SETUPS, ids=["ddim", "euler"])
@pytest.mark.parametrize("k", [0, 1])
def test_instruction_selecting_a_mixture_component(objective, sampler, k):
    # Instruction k selects component k of the mixture; the unconditional law is the mixture itself.
    mixture = GaussianMixture()
    cond, uncond = _denoisers(mixture.component(k), objective), _denoisers(mixture, objective)
    pair, _ = _pair(cond, uncond)
    unconditional = sampler.sample(classifier_free_guidance(pair, 0.0), objective, stratified_normal(N))
    conditional = sampler.sample(classifier_free_guidance(pair, 1.0), objective, stratified_normal(N))
    assert abs(unconditional.mean().item() - mixture.mean()) <= 0.05 * abs(mixture.mean())
    assert abs(conditional.mean().item() - mixture.means[k]) <= 0.05 * abs(mixture.means[k])
    # w = 2: the samplers integrate the guided field (against a fine Heun solution of the same field); CFG pushes
    # beyond the selected component, away from the other mode, further than the tilted law's mean (about mu_k).
    guided = sampler.sample(classifier_free_guidance(pair, 2.0), objective, stratified_normal(N))
    flow = FlowMatching()
    reference_pair, _ = _pair(_denoisers(mixture.component(k), flow), _denoisers(mixture, flow))
    reference = HeunSampler(num_steps=200).sample(
        classifier_free_guidance(reference_pair, 2.0), flow, stratified_normal(N)
    )
    assert abs(guided.mean().item() - reference.mean().item()) <= 0.05 * abs(reference.mean().item())
    away = math.copysign(1.0, mixture.means[k] - mixture.means[1 - k])
    assert (guided.mean().item() - mixture.means[k]) * away > 0


def test_unit_and_zero_scales_return_one_pass_exactly():
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    t = torch.full((5,), 3.0, dtype=torch.float64)
    cond, uncond = (lambda x, t: x * 2 + 1), (lambda x, t: x - 3)
    pair, _ = _pair(cond, uncond)
    assert torch.equal(classifier_free_guidance(pair, 1.0)(x, t), cond(x, t))
    assert torch.equal(classifier_free_guidance(pair, 0.0)(x, t), uncond(x, t))
    torch.testing.assert_close(
        classifier_free_guidance(pair, 2.5)(x, t), uncond(x, t) + 2.5 * (cond(x, t) - uncond(x, t))
    )


def test_step_conditioned_scalars_are_doubled_too():
    seen = []

    def pair(x, t, step):
        seen.append((x.shape[0], t.shape[0], step.shape[0]))
        return x

    classifier_free_guidance(pair, 2.0)(torch.zeros(3, 4, 2), torch.zeros(3), torch.ones(3))
    assert seen == [(6, 6, 6)]


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "2", True])
def test_bad_guidance_scales_are_refused(bad):
    with pytest.raises(ValueError, match="guidance_scale"):
        check_guidance_scale(bad)
