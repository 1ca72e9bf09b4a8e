"""Tests for policy/rtc.py: soft mask, guidance weights, the VJP against finite differences, guided outputs,
plain sampling at beta = 0, the frozen prefix, and smoother chunk switches than async_naive on a trained policy."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from data.normalizer import Normalizer
from policy.chunk_policy import ChunkPolicy
from policy.controller import RecedingHorizonController
from policy.execution import Execution
from policy.objectives import DDPM, FlowMatching
from policy.obs_encoder import ObsEncoder
from policy.rtc import Guidance, ddpm_guidance_scale, flow_guidance_weight, guidance_gradient, soft_mask
from policy.samplers import DDIMSampler, DDPMSampler, EulerSampler, HeunSampler
from policy.unet import ConditionalUnet1D

STATE_META = {"state": {"shape": [3], "type": "low_dim"}}
HORIZON, N_OBS, N_ACTION = 8, 1, 4  # chunk length H = 8


class TinyDenoiser(nn.Module):
    """(B, T, D) -> (B, T, D) mixing all positions, float64, with a timestep input."""

    def __init__(self, horizon=4, dim=2):
        super().__init__()
        torch.manual_seed(0)
        self.shape = (horizon, dim)
        self.inner = nn.Linear(horizon * dim + 1, 16).double()
        self.outer = nn.Linear(16, horizon * dim).double()

    def forward(self, x, t):
        h = torch.cat([x.flatten(1), t[:, None] / 100], dim=1)
        return self.outer(torch.tanh(self.inner(h))).reshape(x.shape)


def test_soft_mask_is_one_on_the_delay_then_decays_to_zero_at_the_overlap_end():
    c = torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)  # (overlap - i) / (overlap - d + 1) for i = 2, 3
    exp = (c * torch.expm1(c) / (math.e - 1)).float()
    torch.testing.assert_close(soft_mask(8, 2, 4, "exp"), torch.tensor([1, 1, exp[0], exp[1], 0, 0, 0, 0]))
    torch.testing.assert_close(soft_mask(8, 2, 4, "linear"), torch.tensor([1, 1, 2 / 3, 1 / 3, 0, 0, 0, 0]))
    torch.testing.assert_close(soft_mask(8, 2, 4, "hard"), torch.tensor([1.0, 1, 0, 0, 0, 0, 0, 0]))
    assert soft_mask(8, 0, 4).tolist()[0] == pytest.approx(0.8 * math.expm1(0.8) / (math.e - 1))
    with pytest.raises(ValueError, match="unknown RTC mask 'cubic'; valid options: exp, linear, hard"):
        soft_mask(8, 2, 4, "cubic")
    with pytest.raises(ValueError, match="delay <= overlap"):
        soft_mask(8, 5, 4)


def test_guidance_weights_are_the_papers_clipped_at_beta_and_agree_between_objectives():
    assert flow_guidance_weight(0.5, 10.0) == pytest.approx(2.0)  # ((1-t)^2 + t^2) / (t (1-t)) at t = 1/2
    assert flow_guidance_weight(1.0, 5.0) == 5.0 and flow_guidance_weight(0.99, 5.0) == 5.0  # clipped near noise
    tau = 0.3  # the paper's time (tau = 1 - t): (1 - tau) / (tau r^2), r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)
    paper = (1 - tau) / (tau * (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2))
    assert flow_guidance_weight(1 - tau, 100.0) == pytest.approx(paper)
    for abar in (0.05, 0.5, 0.97):
        alpha, sigma = math.sqrt(abar), math.sqrt(1 - abar)
        t_flow = sigma / (alpha + sigma)  # the same noise level on the flow path
        assert ddpm_guidance_scale(alpha, sigma, 3.0) == pytest.approx(sigma * flow_guidance_weight(t_flow, 3.0))


@pytest.mark.parametrize("objective", ["flow", "ddpm"])
def test_guidance_gradient_matches_finite_differences(objective):
    net = TinyDenoiser()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    target = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    weights = torch.tensor([1.0, 0.7, 0.2, 0.0], dtype=torch.float64).expand(2, 4)[..., None]
    t_model = torch.full((2,), 60.0, dtype=torch.float64)
    ddpm = DDPM(clip_sample=False)
    alpha, sigma = (torch.tensor(v, dtype=torch.float64) for v in (0.6, 0.8))

    def clean(x_in):
        out = net(x_in, t_model)
        return out, (x_in - 0.6 * out if objective == "flow" else ddpm.x0_and_eps(out, x_in, alpha, sigma)[0])

    def loss(x_in):  # 1/2 sum W (Y - x0_hat)^2, whose negative gradient g must be
        return 0.5 * (weights * (target - clean(x_in)[1]) ** 2).sum()

    _, grad = guidance_gradient(clean, x, target, weights)
    numeric = torch.zeros_like(x)
    eps = 1e-6
    for i in range(x.numel()):
        step = torch.zeros(x.numel(), dtype=torch.float64)
        step[i] = eps
        step = step.reshape(x.shape)
        numeric.view(-1)[i] = -(loss(x + step) - loss(x - step)) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8)
    assert grad.abs().max() > 1e-3


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v"])
def test_ddpm_guidance_moves_the_samplers_x0_by_kappa_g_and_keeps_x_t_consistent(prediction):
    net = TinyDenoiser()
    objective = DDPM(prediction=prediction, clip_sample=False)
    step = 40
    abar = float(objective.alphas_cumprod[step])
    alpha, sigma = math.sqrt(abar), math.sqrt(1 - abar)
    a, s = (torch.tensor(v, dtype=torch.float64) for v in (alpha, sigma))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    raw_target = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    weights = torch.tensor([1.0, 1.0, 0.5, 0.0], dtype=torch.float64).expand(2, 4)
    guidance = Guidance(raw_target, weights, torch.zeros(2, 4, dtype=torch.bool), beta=2.0)
    t_model = torch.full((2,), float(step), dtype=torch.float64)
    guided_out = guidance.wrap(net, objective, raw_target)(x, t_model)
    x0, _ = objective.x0_and_eps(net(x, t_model), x, a, s)
    x0_guided, eps_guided = objective.x0_and_eps(guided_out, x, a, s)
    _, grad = guidance_gradient(
        lambda x_in: (net(x_in, t_model), objective.x0_and_eps(net(x_in, t_model), x_in, a, s)[0]),
        x,
        raw_target,
        weights[..., None],
    )
    torch.testing.assert_close(x0_guided, x0 + ddpm_guidance_scale(alpha, sigma, 2.0) * grad)
    torch.testing.assert_close(alpha * x0_guided + sigma * eps_guided, x)


def test_flow_guidance_moves_x0_by_t_w_g():
    net = TinyDenoiser()
    objective = FlowMatching()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    target = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    weights = torch.ones(2, 4, dtype=torch.float64)
    t = 0.4
    t_model = torch.full((2,), t * objective.time_scale, dtype=torch.float64)
    guided = Guidance(target, weights, torch.zeros(2, 4, dtype=torch.bool), beta=1.5).wrap(net, objective, target)
    _, grad = guidance_gradient(lambda x_in: (net(x_in, t_model), x_in - t * net(x_in, t_model)), x, target, 1.0)
    x0_guided = x - t * guided(x, t_model)
    torch.testing.assert_close(x0_guided, x - t * net(x, t_model) + t * flow_guidance_weight(t, 1.5) * grad)


def _policy(objective, sampler, seed=0) -> ChunkPolicy:
    torch.manual_seed(seed)
    encoder = ObsEncoder(STATE_META, feature_dim=8)
    denoiser = ConditionalUnet1D(2, encoder.output_dim, N_OBS, HORIZON, (32, 64), diffusion_step_embed_dim=32)
    return ChunkPolicy(encoder, denoiser, objective, sampler, HORIZON, N_OBS, N_ACTION, 2, STATE_META)


def _bimodal(n=512):
    """One observation; every chunk holds either [0.3, 0.7] or [0.3, -0.7] at all positions (two modes)."""
    which = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(1))
    y = torch.where(which[:, None] == 1, 0.7, -0.7).expand(n, HORIZON)
    action = torch.stack([torch.full((n, HORIZON), 0.3), y], dim=-1)  # (n, H, 2)
    return {"state": torch.tensor([0.3, -0.2, 0.5]).expand(n, N_OBS, 3).clone(), "action": action}


def _fit(policy, data):
    """Action limits [-1, 1] in both dims, so the modes sit inside DDPM's clip range rather than on its edge."""
    bounds = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    flat = {"state": data["state"].flatten(0, 1), "action": torch.cat([data["action"].flatten(0, 1), bounds])}
    policy.set_normalizer(Normalizer.fit(flat, policy.normalizer_modes()))


@pytest.fixture(scope="module", params=["flow", "ddpm"])
def trained(request):
    objective, sampler = (FlowMatching(), EulerSampler(8)) if request.param == "flow" else (DDPM(), DDIMSampler(8))
    policy = _policy(objective, sampler)
    data = _bimodal()
    _fit(policy, data)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    for _ in range(250):
        idx = torch.randint(0, data["action"].shape[0], (64,), generator=g)
        opt.zero_grad(set_to_none=True)
        policy.compute_loss({k: v[idx] for k, v in data.items()}).backward()
        opt.step()
    return policy.eval()


def _obs(n):
    return {"state": torch.tensor([0.3, -0.2, 0.5]).expand(n, N_OBS, 3).clone()}


def _guidance(n, delay=2, beta=5.0):
    """Follow the y = +0.7 mode; the committed first ``delay`` positions differ per env (to tell them apart)."""
    target = torch.tensor([0.3, 0.7]).expand(n, HORIZON, 2).clone()
    target[:, :delay, 1] = torch.linspace(0.6, 0.8, n)[:, None]
    weights = soft_mask(HORIZON, delay, HORIZON - N_ACTION).expand(n, HORIZON)
    frozen = torch.zeros(n, HORIZON, dtype=torch.bool)
    frozen[:, :delay] = True
    return Guidance(target, weights, frozen, beta=beta)


def test_rtc_with_no_delay_and_beta_zero_is_plain_sampling_with_the_same_noise(trained):
    plain = trained.predict_action(_obs(4), generator=torch.Generator().manual_seed(7))
    guided = trained.predict_action(_obs(4), generator=torch.Generator().manual_seed(7), guidance=_guidance(4, 0, 0.0))
    assert torch.equal(plain["action_pred"], guided["action_pred"]) and torch.equal(plain["action"], guided["action"])


def test_frozen_prefix_is_the_committed_actions_exactly_and_guidance_pulls_the_overlap(trained):
    guidance = _guidance(16)
    plain = trained.predict_action(_obs(16), generator=torch.Generator().manual_seed(7))["action_pred"]
    out = trained.predict_action(_obs(16), generator=torch.Generator().manual_seed(7), guidance=guidance)["action_pred"]
    assert torch.equal(out[:, :2], guidance.target[:, :2])
    overlap = slice(2, HORIZON - N_ACTION)
    guided_error = (out[:, overlap] - guidance.target[:, overlap]).abs().mean()
    assert guided_error < 0.5 * (plain[:, overlap] - guidance.target[:, overlap]).abs().mean()
    with pytest.raises(ValueError, match="execution=rtc runs with sampler euler .* or ddim"):
        other = HeunSampler(2) if isinstance(trained.objective, FlowMatching) else DDPMSampler(2)
        trained.predict_action(_obs(4), sampler=other, guidance=guidance)


def _run(policy, execution, n_envs=24, steps=3 * N_ACTION + 3):
    ctrl = RecedingHorizonController(policy, n_envs, generator=torch.Generator().manual_seed(11), execution=execution)
    obs = {"state": np.tile(np.array([0.3, -0.2, 0.5], dtype=np.float32), (n_envs, 1))}
    actions = [ctrl.act(obs) for _ in range(steps)]
    return ctrl, np.stack(actions, axis=1)  # (n_envs, steps, Da)


def test_controller_rtc_d0_beta0_equals_sync_and_commits_the_prefix_exactly(trained):
    sync_ctrl, sync = _run(trained, Execution(), n_envs=3)
    _, rtc = _run(trained, Execution("rtc", delay=0, beta=0.0), n_envs=3)
    assert np.array_equal(sync, rtc)
    ctrl, executed = _run(trained, Execution("rtc", delay=2), n_envs=3, steps=N_ACTION + 3)
    # the chunk requested at step 4 arrives at 6: steps 4, 5 ran the first chunk's positions 4, 5 ...
    assert np.array_equal(ctrl._plan[:, :2], executed[:, 4:6]) and ctrl._plan_start.tolist() == [4, 4, 4]
    assert np.array_equal(executed[:, 6], ctrl._plan[:, 2])  # ... and step 6 its own position 2


def test_rtc_switches_chunks_more_smoothly_than_async_naive_on_the_same_seeds(trained):
    naive, _ = _run(trained, Execution("async_naive", delay=2))
    rtc, _ = _run(trained, Execution("rtc", delay=2))
    naive_jump, rtc_jump = naive.jump_summary()["switch_jump"], rtc.jump_summary()["switch_jump"]
    assert naive.jump_summary()["n_switches"] == rtc.jump_summary()["n_switches"] == 24 * 3
    assert naive_jump > 0.3  # independent chunks change mode about half the time (the modes are 1.4 apart)
    assert rtc_jump < 0.5 * naive_jump
