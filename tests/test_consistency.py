"""Consistency distillation maths (policy/consistency.py and ConsistencySampler): the grid and its boundary, the
teacher's solver step, one step on the closed-form mixture from the exact teacher, sampling, refused settings."""

import copy

import pytest
import torch
from test_shortcut import MIXTURE, MixtureMLP, fit_mixture

from policy.consistency import ConsistencyDistillation
from policy.gaussian_mixture import stratified_normal
from policy.objectives import DDPM, FlowMatching, Regression
from policy.samplers import ConsistencySampler, DDIMSampler, EulerSampler, check_compatible

TEACHERS = {
    "flow": FlowMatching(),
    "ddpm": DDPM(clip_sample=False),
    "ddpm-v": DDPM(prediction="v", clip_sample=False),
    "ddpm-sample": DDPM(prediction="sample", clip_sample=False),
}


def exact_teacher(objective):
    """The mixture's exact denoiser for a flow or DDPM objective."""
    if isinstance(objective, FlowMatching):
        return MIXTURE.flow_denoiser(objective)
    return MIXTURE.ddpm_denoiser(objective)


def test_ddpm_grid_takes_trailing_timesteps_and_flow_grid_is_uniform():
    ddpm = ConsistencyDistillation(teacher_objective=DDPM(num_train_steps=100), num_intervals=20)
    assert ddpm.grid[1:, 2].tolist() == [float(5 * n - 1) for n in range(1, 21)]  # round(n T / N) - 1, ends at T-1
    assert ConsistencyDistillation(teacher_objective=DDPM(), num_intervals=100).grid[1:, 2].tolist() == list(
        map(float, range(100))
    )
    flow = ConsistencyDistillation(num_intervals=4)  # teacher_objective None: flow matching's defaults
    assert flow.teacher_objective == FlowMatching()
    torch.testing.assert_close(flow.grid[:, 1], torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    torch.testing.assert_close(flow.grid[:, 2], flow.grid[:, 1] * 100)


@pytest.mark.parametrize("teacher", TEACHERS, ids=list(TEACHERS))
def test_boundary_holds_for_any_network_and_the_parametrization_is_bounded(teacher):
    objective = ConsistencyDistillation(teacher_objective=TEACHERS[teacher], num_intervals=10)
    alpha, sigma, _, c_skip, c_out = objective.grid.T
    assert (alpha[0], sigma[0], c_skip[0], c_out[0]) == (1.0, 0.0, 1.0, 0.0)
    assert c_skip.abs().max() < 1.2 and c_out.abs().max() <= 1.0  # no 1 / alpha at the noise end
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    f = objective.consistency_function(lambda x, t: torch.full_like(x, 1e3), x, torch.zeros(5, dtype=torch.long))
    assert torch.equal(f, x)  # f(x, 0) = x whatever the network says


@pytest.mark.parametrize("teacher", ["flow", "ddpm-v"])
def test_student_with_the_teachers_weights_starts_as_the_teachers_x0_estimate(teacher):
    objective = ConsistencyDistillation(teacher_objective=TEACHERS[teacher], num_intervals=10)
    denoiser = exact_teacher(TEACHERS[teacher])
    x = torch.randn(6, 1, 1, dtype=torch.float64)
    n = torch.tensor([1, 3, 5, 7, 9, 10])
    alpha, sigma = (objective.grid[n, i].reshape(-1, 1, 1) for i in (0, 1))
    x0_mean, _ = MIXTURE.posterior_means(x, alpha, sigma)
    torch.testing.assert_close(objective.consistency_function(denoiser, x, n), x0_mean)


@pytest.mark.parametrize("teacher, sampler", [("ddpm", DDIMSampler()), ("flow", EulerSampler())], ids=["ddim", "euler"])
def test_teacher_steps_chain_into_the_teachers_own_sampler(teacher, sampler):
    objective = ConsistencyDistillation(teacher_objective=TEACHERS[teacher], num_intervals=10)
    denoiser = exact_teacher(TEACHERS[teacher])
    noise = stratified_normal(64)
    x = noise
    for n in range(10, 0, -1):
        x = objective.teacher_step(denoiser, x, torch.full((64,), n))
    torch.testing.assert_close(x, sampler.sample(denoiser, TEACHERS[teacher], noise, num_steps=10))


@pytest.mark.parametrize(
    "teacher, collapsing", [("flow", EulerSampler()), ("ddpm", DDIMSampler())], ids=["flow", "ddpm"]
)
def test_distilled_from_the_exact_teacher_one_step_keeps_both_modes_where_the_teacher_collapses(teacher, collapsing):
    teacher_objective, noise = TEACHERS[teacher], stratified_normal(4000)
    one_step = collapsing.sample(exact_teacher(teacher_objective), teacher_objective, noise, num_steps=1)
    assert MIXTURE.mode_errors(one_step)["weight_err"] > 0.25  # the teacher's one step: E[x_0], a single mode

    objective = ConsistencyDistillation(teacher_objective=teacher_objective, num_intervals=20)
    exact = exact_teacher(teacher_objective)
    torch.manual_seed(0)
    net = MixtureMLP(1)
    target = copy.deepcopy(net).requires_grad_(False)

    def loss(net, x0, generator):
        return objective.loss(net, x0, generator=generator, teacher=lambda x, t: exact(x, t).float(), target=target)

    def update_target():
        with torch.no_grad():
            for t, s in zip(target.parameters(), net.parameters()):
                t.lerp_(s, 1 - objective.target_decay)

    fit_mixture(loss, net, steps=1000, after=update_target)
    with torch.no_grad():
        samples = ConsistencySampler().sample(net, objective, noise.float())
    errors = MIXTURE.mode_errors(samples)
    assert errors["weight_err"] < 0.05, errors
    assert errors["mean_rel_err"] < 0.1, errors


def test_multistep_sampling_renoises_at_evenly_spaced_grid_points():
    calls = []

    def record(x, t):
        calls.append(t[0].item())
        return torch.zeros_like(x)

    objective = ConsistencyDistillation(num_intervals=20)
    noise = torch.randn(3, 4, 2)
    sampler = ConsistencySampler(num_steps=4)
    sampler.sample(record, objective, noise, generator=torch.Generator().manual_seed(0))
    assert calls == [100.0, 75.0, 50.0, 25.0] and sampler.nfe() == 4

    def run(steps, seed):
        return ConsistencySampler().sample(
            record, objective, noise, num_steps=steps, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(1, 0), run(1, 1))  # one step is deterministic given the noise
    assert not torch.allclose(run(2, 0), run(2, 1))  # the second step starts from fresh noise


def test_refused_settings_samplers_and_training_without_a_teacher():
    with pytest.raises(ValueError, match="num_intervals=101 exceeds the DDPM teacher's num_train_steps=100"):
        ConsistencyDistillation(teacher_objective=DDPM(), num_intervals=101)
    with pytest.raises(ValueError, match="DDPM or FlowMatching"):
        ConsistencyDistillation(teacher_objective=Regression())
    with pytest.raises(ValueError, match="target_decay"):
        ConsistencyDistillation(target_decay=1.0)
    with pytest.raises(ValueError, match="exceeds the consistency model's num_intervals=20"):
        ConsistencySampler(num_steps=21).resolve_steps(ConsistencyDistillation())
    with pytest.raises(ValueError, match=r"valid samplers for consistency: consistency \(ConsistencySampler\)"):
        check_compatible(EulerSampler(), ConsistencyDistillation())
    with pytest.raises(ValueError, match="needs a consistency-distilled model; valid samplers for ddpm"):
        check_compatible(ConsistencySampler(), DDPM())
    with pytest.raises(ValueError, match="objective=consistency teacher="):
        ConsistencyDistillation().loss(lambda x, t: x, torch.zeros(2, 4, 2))
