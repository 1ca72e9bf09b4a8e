"""Tests for policy/unet.py: Diffusion Policy's ConditionalUnet1D with fused FiLM and tiny-input conv path."""

import pytest
import torch
import torch.nn.functional as F

from policy.unet import (
    ConditionalUnet1D,
    Conv1d,
    ConvTranspose1d,
    conv_as_matmul_in_training,
    from_channels_last,
    to_channels_last,
)


def _unet(**kw) -> ConditionalUnet1D:
    torch.manual_seed(0)
    args = dict(
        action_dim=2,
        cond_dim=5,
        n_obs_steps=2,
        horizon=16,
        down_dims=(16, 32, 64),
        n_groups=8,
        diffusion_step_embed_dim=16,
    )
    args.update(kw)
    return ConditionalUnet1D(**args)


def test_output_shape_dtype_and_batch_independence():
    unet = _unet()
    x, t, cond = torch.randn(3, 16, 2), torch.tensor([3.0, 50.0, 99.0]), torch.randn(3, 2, 5)
    out = unet(x, t, cond)
    assert out.shape == (3, 16, 2) and out.dtype == torch.float32
    # batch 1 runs the matmul conv path, batch 3 the library convolution: same numbers per sample
    single = unet(x[1:2], t[1:2], cond[1:2])
    torch.testing.assert_close(single, out[1:2], rtol=1e-4, atol=1e-5)


def test_output_depends_on_timestep_and_condition():
    unet = _unet()
    x, t, cond = torch.randn(2, 16, 2), torch.tensor([10.0, 10.0]), torch.randn(2, 2, 5)
    base = unet(x, t, cond)
    assert (unet(x, t + 40, cond) - base).abs().max() > 1e-3
    assert (unet(x, t, cond + 1) - base).abs().max() > 1e-3


def test_bind_matches_forward_and_scalar_timestep_broadcasts():
    unet = _unet()
    x, cond = torch.randn(2, 16, 2), torch.randn(2, 2, 5)
    t = torch.full((2,), 7.0)
    torch.testing.assert_close(unet.bind(cond)(x, t), unet(x, t, cond))
    torch.testing.assert_close(unet.bind(cond)(x, torch.tensor(7.0)), unet(x, t, cond))


def test_fused_film_equals_per_block_linear_on_concatenation():
    unet = _unet()
    cond, t = torch.randn(2, 2, 5), torch.tensor([4.0, 60.0])
    t_emb = unet.time_embedding(t)
    weight = torch.cat((unet.film_time.weight, unet.film_obs.weight), dim=1)
    expected = F.linear(F.mish(torch.cat((t_emb, cond.flatten(1)), dim=1)), weight, unet.film_obs.bias)
    obs_film = unet.film_obs(F.mish(cond.flatten(1)))
    got = torch.addmm(obs_film, F.mish(t_emb), unet.film_time.weight.t())
    torch.testing.assert_close(got, expected)
    assert sum(unet.film_sizes) == unet.film_time.out_features == 2 * (2 * 16 + 2 * 32 + 4 * 64 + 2 * 32 + 2 * 16)


@pytest.mark.parametrize(
    "down_dims, dim, expected",
    [((64, 128, 256), 128, 4_559_554), ((256, 512, 1024), 128, 63_554_434), ((256, 512, 1024), 256, 65_783_298)],
)
def test_parameter_count_matches_diffusion_policy_layout(down_dims, dim, expected):
    unet = ConditionalUnet1D(2, 20, 2, 16, down_dims, kernel_size=5, n_groups=8, diffusion_step_embed_dim=dim)
    assert sum(p.numel() for p in unet.parameters()) == expected


@pytest.mark.parametrize("batch, length, stride", [(1, 4, 1), (1, 16, 2), (2, 8, 1), (4, 16, 1), (4, 16, 2)])
def test_channels_last_conv_matches_library_convolution(batch, length, stride):
    torch.manual_seed(0)
    conv = Conv1d(6, 8, 5 if stride == 1 else 3, stride=stride, padding=2 if stride == 1 else 1)
    x = torch.randn(batch, length, 6, requires_grad=True)  # (B, T, C)
    out = conv(to_channels_last(x))
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, stride=stride, padding=conv.padding[0])
    torch.testing.assert_close(out[:, :, 0], ref)
    grad_out = torch.autograd.grad(out.sum(), (x, conv.weight))
    grad_ref = torch.autograd.grad(ref.sum(), (x, conv.weight))
    for a, b in zip(grad_out, grad_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("length, stride", [(8, 1), (4, 1), (16, 2)])
def test_bf16_training_conv_runs_as_matmul_and_matches_library(length, stride):
    torch.manual_seed(0)
    conv = Conv1d(16, 24, 5 if stride == 1 else 3, stride=stride, padding=2 if stride == 1 else 1)
    x = torch.randn(32, length, 16, requires_grad=True)  # (B, T, C)
    t_out = length // stride
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv_as_matmul_in_training(to_channels_last(x), t_out)
        out = conv(to_channels_last(x))
        ref = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, stride=stride, padding=conv.padding[0])
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out[:, :, 0].float(), ref.float(), atol=0.02, rtol=0.01)
    grad_out = torch.autograd.grad(out.float().square().sum(), (x, conv.weight))
    grad_ref = torch.autograd.grad(ref.float().square().sum(), (x, conv.weight))
    for a, b in zip(grad_out, grad_ref):
        torch.testing.assert_close(a, b, atol=0.1, rtol=0.02)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv_as_matmul_in_training(to_channels_last(x), t_out)  # inference keeps its own paths
    assert not conv_as_matmul_in_training(to_channels_last(x), t_out)  # fp32 training keeps the library's
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv_as_matmul_in_training(to_channels_last(torch.randn(2, 16, 16)), 16)  # long: library's


@pytest.mark.parametrize("batch, length", [(1, 8), (3, 8)])
def test_channels_last_transposed_conv_matches_library(batch, length):
    torch.manual_seed(0)
    up = ConvTranspose1d(6, 4, 4, stride=2, padding=1)
    x = torch.randn(batch, length, 6)
    out = up(to_channels_last(x))
    assert out.shape == (batch, 4, 1, 2 * length) and out.is_contiguous(memory_format=torch.channels_last)
    ref = F.conv_transpose1d(x.transpose(1, 2), up.weight, up.bias, stride=2, padding=1)
    torch.testing.assert_close(out[:, :, 0], ref)


def test_channels_last_round_trip_is_a_view():
    x = torch.randn(2, 16, 3)
    cl = to_channels_last(x)
    assert cl.shape == (2, 3, 1, 16) and cl.data_ptr() == x.data_ptr()
    assert torch.equal(from_channels_last(cl), x)


def test_bad_shapes_raise_value_error():
    unet = _unet()
    with pytest.raises(ValueError, match="cond of shape"):
        unet(torch.randn(1, 16, 2), torch.zeros(1), torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="x of shape"):
        unet(torch.randn(1, 12, 2), torch.zeros(1), torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="multiple of"):
        _unet(horizon=10)
    with pytest.raises(ValueError, match="n_groups"):
        _unet(down_dims=(12, 32))


def test_conv_weight_is_stored_channels_last_and_loads_plain_state_dicts():
    torch.manual_seed(0)
    conv = Conv1d(6, 8, 5, padding=2)
    assert conv.weight.shape == (8, 6, 5) and conv.weight.transpose(1, 2).is_contiguous()
    plain = {k: v.contiguous() + 1 for k, v in conv.state_dict().items()}
    conv.load_state_dict(plain)
    assert conv.weight.transpose(1, 2).is_contiguous() and torch.equal(conv.weight, plain["weight"])


def test_step_embedding_adds_parameters_only_when_asked_and_starts_as_the_plain_network():
    plain, stepped = _unet(), _unet(step_conditioned=True)
    assert not any(k.startswith("step_embedding") for k in plain.state_dict())  # old checkpoints load unchanged
    extra = set(stepped.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("step_embedding.") for k in extra)
    stepped.load_state_dict(plain.state_dict(), strict=False)
    x, t, cond = torch.randn(2, 16, 2), torch.tensor([10.0, 70.0]), torch.randn(2, 2, 5)
    torch.testing.assert_close(stepped(x, t, cond, torch.tensor([25.0, 100.0])), plain(x, t, cond))  # zero init
    with torch.no_grad():
        stepped.step_embedding.mlp[-1].weight.normal_()
    assert (stepped(x, t, cond, torch.tensor([25.0, 100.0])) - plain(x, t, cond)).abs().max() > 1e-3
    torch.testing.assert_close(stepped(x, t, cond), stepped(x, t, cond, torch.zeros(2)))  # no step: step size 0
    with pytest.raises(ValueError, match="without a step embedding"):
        plain(x, t, cond, torch.zeros(2))


def test_bound_denoiser_takes_the_first_rows_of_its_batch():
    unet = _unet()
    x, t, cond = torch.randn(3, 16, 2), torch.tensor([3.0, 50.0, 99.0]), torch.randn(3, 2, 5)
    bound = unet.bind(cond)
    torch.testing.assert_close(bound(x[:2], t[:2]), unet(x[:2], t[:2], cond[:2]))
    with pytest.raises(ValueError, match="bound to a batch of 3"):
        bound(torch.randn(4, 16, 2), torch.zeros(4))
