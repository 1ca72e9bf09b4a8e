"""Shortcut models (policy/shortcut.py and ShortcutSampler): targets, the training grid, sampling, one step on the
closed-form mixture where Euler collapses, refused settings."""

import pytest
import torch
from torch import nn

from policy.gaussian_mixture import GaussianMixture, stratified_normal
from policy.objectives import FlowMatching
from policy.samplers import EulerSampler, ShortcutSampler, check_compatible
from policy.shortcut import ShortcutFlow

MIXTURE = GaussianMixture(weights=(0.3, 0.7), means=(-2.0, 1.5), stds=(0.3, 0.6))


class MixtureMLP(nn.Module):
    """A tiny denoiser for 1-D samples (B, 1, 1): an MLP of x and its scalar inputs (t_model, and step_model)."""

    def __init__(self, n_scalars: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1 + n_scalars, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 1),
        )

    def forward(self, x: torch.Tensor, *scalars: torch.Tensor) -> torch.Tensor:
        features = [x.reshape(-1, 1)] + [s.reshape(-1, 1).to(x.dtype) / 100 for s in scalars]
        return self.net(torch.cat(features, dim=1)).reshape(x.shape)


def fit_mixture(loss_fn, net: nn.Module, steps: int, after=None) -> nn.Module:
    """Adam on fresh mixture batches of 256 (seeded): loss_fn(net, x0, generator) per step, then after()."""
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = loss_fn(net, MIXTURE.sample(256, generator=generator).float(), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after is not None:
            after()
    return net


def test_straight_paths_have_zero_loss_and_a_wrong_big_step_costs_only_on_consistency_rows():
    x0 = torch.full((64, 3, 2), 0.7, dtype=torch.float64)  # one data point: every path is straight

    def exact(x, t, step):  # the average velocity of a straight path is its velocity, for every step size
        return (x - 0.7) / (t / 100).reshape(-1, 1, 1)

    def wrong(x, t, step):  # right at d = 0, too long for d > 0
        return exact(x, t, step) * (1 + step / 100).reshape(-1, 1, 1)

    objective = ShortcutFlow(max_steps=8)
    assert objective.loss(exact, x0, generator=torch.Generator().manual_seed(0)) < 1e-12
    flow_only = ShortcutFlow(max_steps=8, consistency_fraction=0.0)
    assert flow_only.loss(wrong, x0, generator=torch.Generator().manual_seed(0)) < 1e-12
    assert objective.loss(wrong, x0, generator=torch.Generator().manual_seed(0)) > 0.05


def test_targets_use_two_half_steps_on_the_sampling_grid():
    calls = []

    def record(x, t, step):
        calls.append((x.shape[0], t.clone(), step.clone()))
        return torch.ones_like(x)

    objective = ShortcutFlow(max_steps=8, consistency_fraction=0.5)
    objective.loss(record, torch.zeros(200, 4, 2), generator=torch.Generator().manual_seed(0))
    (n1, t1, half), (n2, t2, half2), (n, t, step) = calls  # two target passes on the first rows, then the model
    assert n1 == n2 == 100 and n == 200 and torch.equal(half, half2)
    d, t = step[:100] / 100, t[:100] / 100  # self-consistency rows: 2d in {1/8, ..., 1}, t a multiple of 2d
    assert set(d.tolist()) == {1.0, 0.5, 0.25, 0.125}
    assert torch.allclose(t / d, (t / d).round()) and (t <= 1).all() and (t >= d).all()
    finest = d == 0.125
    torch.testing.assert_close(half[~finest] / 100, d[~finest] / 2)  # half steps of d, the velocity at the finest
    assert (half[finest] == 0).all()
    torch.testing.assert_close(t1, t * 100)
    torch.testing.assert_close(t2 / 100, t - d / 2)
    assert (step[100:] == 0).all()  # flow rows: d = 0


def test_sampler_takes_equal_steps_and_one_evaluation_each():
    calls = []

    def record(x, t, step):
        calls.append((t[0].item(), step[0].item()))
        return torch.full_like(x, 2.0)

    noise = torch.randn(3, 4, 2)
    sampler = ShortcutSampler(num_steps=4)
    out = sampler.sample(record, ShortcutFlow(max_steps=8), noise)
    assert calls == [(100.0, 25.0), (75.0, 25.0), (50.0, 25.0), (25.0, 25.0)]
    torch.testing.assert_close(out, noise - 2.0)  # x_0 = x_1 - sum of d * s
    assert sampler.nfe() == 4 and sampler.nfe(1) == 1


def test_one_step_keeps_both_mixture_modes_where_euler_collapses():
    noise = stratified_normal(4000)
    flow = FlowMatching()
    euler = MIXTURE.mode_errors(EulerSampler(num_steps=1).sample(MIXTURE.flow_denoiser(flow), flow, noise))
    assert euler["weight_err"] > 0.25  # one Euler step lands every sample on E[x_0]: one mode takes all

    objective = ShortcutFlow(max_steps=16)
    torch.manual_seed(0)
    net = fit_mixture(lambda net, x0, g: objective.loss(net, x0, generator=g), MixtureMLP(2), steps=1500)
    with torch.no_grad():
        errors = MIXTURE.mode_errors(ShortcutSampler(num_steps=1).sample(net, objective, noise.float()))
    assert errors["weight_err"] < 0.05, errors
    assert errors["mean_rel_err"] < 0.15, errors


def test_refused_settings_and_samplers():
    with pytest.raises(ValueError, match="power of two"):
        ShortcutFlow(max_steps=6)
    with pytest.raises(ValueError, match="consistency_fraction"):
        ShortcutFlow(consistency_fraction=1.5)
    with pytest.raises(ValueError, match="power-of-two number of steps up to its max_steps=8"):
        ShortcutSampler(num_steps=3).resolve_steps(ShortcutFlow(max_steps=8))
    with pytest.raises(ValueError, match="got num_steps=16"):
        ShortcutSampler().resolve_steps(ShortcutFlow(max_steps=8), 16)
    with pytest.raises(ValueError, match=r"valid samplers for shortcut: shortcut \(ShortcutSampler\)"):
        check_compatible(EulerSampler(), ShortcutFlow())
    with pytest.raises(ValueError, match="'shortcut' needs a shortcut model; valid samplers for flow: euler"):
        check_compatible(ShortcutSampler(), FlowMatching())
