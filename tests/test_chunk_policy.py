"""Tests for policy/chunk_policy.py: interface, round trips, multimodality (against the regression baseline)."""

import pytest
import torch

from data.normalizer import Normalizer
from policy.chunk_policy import ChunkPolicy
from policy.ema import EMA
from policy.objectives import DDPM, FlowMatching, Regression
from policy.obs_encoder import ObsEncoder
from policy.samplers import DDIMSampler, DDPMSampler, EulerSampler, RegressionSampler, ShortcutSampler
from policy.shortcut import ShortcutFlow
from policy.transformer import DiffusionTransformer
from policy.unet import ConditionalUnet1D

IMAGE_META = {"image": {"shape": [20, 20, 3], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}}
STATE_META = {"state": {"shape": [3], "type": "low_dim"}}


def _policy(meta=STATE_META, objective=None, sampler=None, horizon=8, transformer=False, seed=0) -> ChunkPolicy:
    torch.manual_seed(seed)
    encoder = ObsEncoder(meta, backbone="small", crop_shape=(16, 16), feature_dim=8, num_keypoints=4)
    objective = DDPM() if objective is None else objective
    step = getattr(objective, "step_conditioned", False)  # as policy.factory builds it
    if transformer:
        denoiser = DiffusionTransformer(
            2,
            encoder.output_dim,
            2,
            horizon,
            d_model=32,
            n_layers=2,
            n_heads=2,
            diffusion_step_embed_dim=16,
            step_conditioned=step,
        )
    else:
        denoiser = ConditionalUnet1D(
            2, encoder.output_dim, 2, horizon, (32, 64), diffusion_step_embed_dim=32, step_conditioned=step
        )
    sampler = DDIMSampler(num_steps=4) if sampler is None else sampler
    return ChunkPolicy(encoder, denoiser, objective, sampler, horizon, 2, 4, 2, meta)


def _fit(policy: ChunkPolicy, batch: dict) -> None:
    data = {k: v.flatten(0, 1) for k, v in batch.items()}
    policy.set_normalizer(Normalizer.fit(data, policy.normalizer_modes()))


def _image_batch(batch=3, horizon=8):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (batch, 2, 20, 20, 3), dtype=torch.uint8, generator=g),
        "agent_pos": torch.randn(batch, 2, 2, generator=g),
        "action": torch.randn(batch, horizon, 2, generator=g) * 5 + 3,
    }


@pytest.mark.parametrize("transformer", [False, True])
def test_loss_and_prediction_shapes_dtypes_and_action_window(transformer):
    policy = _policy(IMAGE_META, transformer=transformer)
    batch = _image_batch()
    _fit(policy, batch)
    loss = policy.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in policy.denoiser.parameters())
    policy.eval()
    obs = {k: v for k, v in batch.items() if k != "action"}
    out = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert out["action_pred"].shape == (3, 8, 2) and out["action"].shape == (3, 4, 2)
    assert out["action"].dtype == torch.float32
    torch.testing.assert_close(out["action"], out["action_pred"][:, 1:5])
    again = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["action_pred"], out["action_pred"])
    other = policy.predict_action(obs, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(other["action_pred"], out["action_pred"])


def test_predict_action_is_unnormalized_with_clipped_ddpm_samples():
    policy = _policy(IMAGE_META).eval()
    batch = _image_batch(batch=16)
    _fit(policy, batch)
    out = policy.predict_action({k: v for k, v in batch.items() if k != "action"}, sampler=DDPMSampler(num_steps=3))
    lo, hi = batch["action"].amin((0, 1)), batch["action"].amax((0, 1))
    # clip_sample keeps normalized x0 in [-1, 1], i.e. inside the fitted action range once unnormalized
    assert (out["action_pred"] >= lo - 1e-4).all() and (out["action_pred"] <= hi + 1e-4).all()
    assert out["action_pred"].abs().max() > 1.5  # not left in normalized units


def test_observation_validation_names_the_key():
    policy = _policy(IMAGE_META).eval()
    batch = _image_batch()
    _fit(policy, batch)
    with pytest.raises(ValueError, match="'agent_pos' is missing"):
        policy.predict_action({"image": batch["image"]})
    with pytest.raises(ValueError, match=r"'image' must have shape .*got \(3, 2, 18, 20, 3\)"):
        policy.predict_action({"image": batch["image"][:, :, :18], "agent_pos": batch["agent_pos"]})
    with pytest.raises(ValueError, match="n_obs_steps"):
        policy.predict_action({"image": batch["image"][:, :1], "agent_pos": batch["agent_pos"][:, :1]})
    with pytest.raises(ValueError, match=r"batch\['action'\]"):
        policy.compute_loss({**batch, "action": batch["action"][:, :4]})


def test_missing_normalizer_and_incompatible_samplers_are_refused():
    policy = _policy()
    with pytest.raises(ValueError, match="set_normalizer"):
        policy.compute_loss({"state": torch.zeros(2, 2, 3), "action": torch.zeros(2, 8, 2)})
    with pytest.raises(ValueError, match="lacks keys"):
        policy.set_normalizer(Normalizer.fit({"state": torch.zeros(4, 3)}, {"state": "limits"}))
    with pytest.raises(ValueError, match="euler"):
        _policy(objective=FlowMatching(), sampler=DDIMSampler())
    flow = _policy(objective=FlowMatching(), sampler=EulerSampler(num_steps=2))
    _fit(flow, {"state": torch.randn(4, 2, 3), "action": torch.randn(4, 8, 2)})
    with pytest.raises(ValueError, match="ddim"):
        flow.predict_action({"state": torch.randn(1, 2, 3)}, sampler=DDIMSampler())
    with pytest.raises(ValueError, match="RegressionSampler"):
        _policy(objective=Regression(), sampler=DDIMSampler())


def test_state_dict_round_trip_restores_normalizer_and_ema_and_device_moves():
    policy = _policy(IMAGE_META)
    batch = _image_batch()
    _fit(policy, batch)
    ema = EMA(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        policy.compute_loss(batch).backward()
        opt.step()
        ema.update_parameters(policy)
    obs = {k: v for k, v in batch.items() if k != "action"}
    expected = policy.eval().predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"]

    restored = _policy(IMAGE_META, seed=1)  # fresh weights, empty normalizer
    restored.load_state_dict(policy.state_dict())
    got = restored.eval().predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"]
    torch.testing.assert_close(got, expected)

    restored_ema = EMA(_policy(IMAGE_META, seed=1))
    restored_ema.load_state_dict(ema.state_dict())
    assert torch.equal(restored_ema.module.normalizer.action__scale, policy.normalizer.action__scale)
    ema_out = ema.module.eval().predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"]
    torch.testing.assert_close(
        restored_ema.module.eval().predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"],
        ema_out,
    )
    assert not torch.allclose(ema_out, expected)  # the average differs from the last weights

    moved = restored.to(torch.device("cpu"))
    assert moved.device == torch.device("cpu") and moved.normalizer.action__scale.device == moved.device
    torch.testing.assert_close(
        moved.predict_action(obs, generator=torch.Generator().manual_seed(3))["action_pred"], expected
    )
    moved = moved.to(torch.float64)  # buffers follow the module: noise and outputs take the model's dtype
    obs64 = {"image": obs["image"], "agent_pos": obs["agent_pos"].double()}
    out64 = moved.predict_action(obs64, generator=torch.Generator().manual_seed(3))["action_pred"]
    assert moved.normalizer.action__scale.dtype == torch.float64 and out64.dtype == torch.float64


def _bimodal_data(n=512, horizon=8):
    t = torch.linspace(0, 1, horizon)
    modes = torch.stack([torch.stack([t, 0.5 + 0.5 * t], -1), torch.stack([t, -0.5 - 0.5 * t], -1)])  # (2, H, 2)
    which = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(1))
    state = torch.tensor([0.3, -0.2, 0.5]).expand(n, 2, 3).clone()  # one observation for every sample
    return modes, {"state": state, "action": modes[which]}


def _train(policy: ChunkPolicy, data: dict, steps: int, batch: int = 128) -> ChunkPolicy:
    _fit(policy, data)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        idx = torch.randint(0, data["action"].shape[0], (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        policy.compute_loss({k: v[idx] for k, v in data.items()}).backward()
        opt.step()
    return policy.eval()


def _rms_to(samples: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """RMS distance (N, K) of each sample (N, H, D) to each target (K, H, D)."""
    return (samples[:, None] - targets[None]).pow(2).mean((-1, -2)).sqrt()


@pytest.mark.parametrize(
    "objective, sampler", [(DDPM(), DDIMSampler(num_steps=10)), (FlowMatching(), EulerSampler(10))]
)
def test_generative_policies_produce_both_modes(objective, sampler):
    modes, data = _bimodal_data()
    policy = _train(_policy(objective=objective, sampler=sampler), data, steps=300)
    samples = policy.predict_action({"state": data["state"][:200]}, generator=torch.Generator().manual_seed(0))
    dist = _rms_to(samples["action_pred"], modes)  # (200, 2); the modes are 0.87 apart
    nearest = dist.argmin(1)
    assert (dist.min(1).values < 0.15).float().mean() >= 0.85
    assert 0.25 <= (nearest == 0).float().mean() <= 0.75


def test_shortcut_policy_produces_both_modes_in_one_network_call():
    modes, data = _bimodal_data()
    shortcut = _policy(objective=ShortcutFlow(max_steps=8), sampler=ShortcutSampler(num_steps=1))
    policy = _train(shortcut, data, steps=300, batch=64)
    obs = {"state": data["state"][:200]}
    samples = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"]
    dist = _rms_to(samples, modes)  # (200, 2); the modes are 0.87 apart, 0.44 from their average
    assert (dist.min(1).values < 0.3).float().mean() >= 0.75 and dist.min(1).values.median() < 0.2
    assert 0.25 <= (dist.argmin(1) == 0).float().mean() <= 0.75
    with torch.inference_mode():  # one Euler step of the same model's velocity (d = 0) collapses to the average
        x = torch.randn(200, 8, 2, generator=torch.Generator().manual_seed(0))
        euler = x - policy.denoiser.bind(policy.encode(obs))(x, torch.full((200,), 100.0), torch.zeros(200))
        euler = policy.normalizer.unnormalize_key("action", euler)
    assert _rms_to(euler, modes).min(1).values.median() > 0.35


def test_regression_head_collapses_to_the_average():
    modes, data = _bimodal_data()
    policy = _train(_policy(objective=Regression(), sampler=RegressionSampler()), data, steps=150)
    samples = policy.predict_action({"state": data["state"][:8]})["action_pred"]
    assert (_rms_to(samples, modes) > 0.3).all()
    assert (_rms_to(samples, modes.mean(0, keepdim=True)) < 0.15).all()
    with pytest.raises(ValueError, match="one step"):
        policy.predict_action({"state": data["state"][:1]}, num_steps=5)


def test_bfloat16_denoiser_copy_tracks_weights_and_stays_out_of_the_state_dict():
    policy = _policy(IMAGE_META)
    batch = _image_batch()
    _fit(policy, batch)
    obs = {k: v for k, v in batch.items() if k != "action"}
    keys = set(policy.state_dict())

    def predict(dtype):
        policy.denoiser_dtype = dtype
        return policy.eval().predict_action(obs, generator=torch.Generator().manual_seed(5))["action_pred"]

    scale = batch["action"].std()
    before32, before16 = predict(None), predict("bfloat16")
    assert before16.dtype == torch.float32
    torch.testing.assert_close(before16, before32, rtol=0, atol=0.05 * scale)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    policy.train().compute_loss(batch).backward()
    opt.step()
    after32, after16 = predict(None), predict("bfloat16")
    assert (after32 - before32).abs().max() > 0.2 * scale  # the step changed the model...
    torch.testing.assert_close(after16, after32, rtol=0, atol=0.05 * scale)  # ...and the bf16 copy followed
    assert set(policy.state_dict()) == keys
    with pytest.raises(ValueError, match="denoiser_dtype"):
        ChunkPolicy(
            policy.encoder, policy.denoiser, DDPM(), DDIMSampler(), 8, 2, 4, 2, IMAGE_META, denoiser_dtype="int8"
        )
