"""Tests for policy/unet_cpu_inference.py: the small-batch CPU inference plan matches the reference UNet."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from policy.unet import ConditionalUnet1D
from policy.unet_cpu_inference import PREPACK_MIN_WEIGHT, CpuInferencePlan, PackedLinear, PolyphaseConvTranspose


def _unet(down_dims) -> ConditionalUnet1D:
    torch.manual_seed(0)
    return ConditionalUnet1D(2, 20, 2, 16, down_dims, kernel_size=5, n_groups=8, diffusion_step_embed_dim=128).eval()


@pytest.mark.parametrize("down_dims", [(64, 128, 256), (256, 512, 1024)])
def test_plan_matches_reference_path_at_small_and_larger_batch(down_dims):
    unet = _unet(down_dims)
    plan = CpuInferencePlan(unet)
    g = torch.Generator().manual_seed(1)
    for batch in (1, 5):
        x, cond = torch.randn(batch, 16, 2, generator=g), torch.randn(batch, 2, 20, generator=g)
        for t in (torch.full((batch,), 3.0), torch.rand(batch, generator=g) * 99, torch.tensor(60.0)):
            reference = unet(x, t, cond)  # grad enabled: the module path
            with torch.inference_mode():
                got = plan.denoise(x, t, unet.film_obs(F.mish(cond.flatten(1))))
            assert got.shape == (batch, 16, 2)
            assert (got - reference).abs().max() < 1e-4


def test_bind_takes_the_plan_only_for_small_cpu_batches_without_grad():
    unet = _unet((16, 32, 64))
    cond = torch.randn(1, 2, 20)
    assert unet.bind(cond).keywords["plan"] is None  # grad enabled: training path
    with torch.no_grad():
        assert isinstance(unet.bind(cond).keywords["plan"], CpuInferencePlan)
        assert isinstance(unet.bind(torch.randn(32, 2, 20)).keywords["plan"], CpuInferencePlan)
        assert unet.bind(torch.randn(33, 2, 20)).keywords["plan"] is None  # 528 rows: library convolutions
    assert not unet.uses_cpu_plan(1, torch.device("cuda"))


def test_plan_is_rebuilt_when_weights_change_and_not_copied_or_saved():
    unet = _unet((64, 128, 256))
    keys = set(unet.state_dict())
    x, t, cond = torch.randn(1, 16, 2), torch.tensor([5.0]), torch.randn(1, 2, 20)
    with torch.inference_mode():
        before = unet.bind(cond)(x, t)
        first = unet._cpu_plans.plan
    with torch.no_grad():
        unet.mid[0].block1.conv.weight.mul_(3.0)  # a prepacked weight: a stale plan would keep the old copy
    reference = unet(x, t, cond)
    with torch.inference_mode():
        after = unet.bind(cond)(x, t)
    assert unet._cpu_plans.plan is not first
    assert (after - before).abs().max() > 1e-3 and (after - reference).abs().max() < 1e-4
    assert set(unet.state_dict()) == keys
    assert copy.deepcopy(unet)._cpu_plans.plan is None


def test_plan_matches_the_module_path_for_a_step_conditioned_unet():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(2, 20, 2, 16, (16, 32, 64), diffusion_step_embed_dim=32, step_conditioned=True).eval()
    with torch.no_grad():
        unet.step_embedding.mlp[-1].weight.normal_()
    x, t, cond = torch.randn(2, 16, 2), torch.tensor([50.0, 50.0]), torch.randn(2, 2, 20)
    for step in (torch.tensor([25.0, 25.0]), torch.tensor([100.0, 0.0]), None):
        reference = unet(x, t, cond, step)  # grad enabled: the module path
        with torch.inference_mode():
            got = unet.bind(cond)(x, t, step)  # the plan, its timestep cache keyed by the step too
        assert unet._cpu_plans.plan is not None and (got - reference).abs().max() < 1e-4


def test_plan_is_bypassed_under_torch_compile():
    unet = _unet((16, 32, 64))
    x, t, cond = torch.randn(1, 16, 2), torch.tensor([5.0]), torch.randn(1, 2, 20)
    with torch.inference_mode():
        bound = unet.bind(cond)
        eager = bound(x, t)
        compiled = torch.compile(bound, backend="eager", fullgraph=True)(x, t)  # the oneDNN plan is not traceable
    assert (compiled - eager).abs().max() < 1e-4


@pytest.mark.parametrize("rows", [1, 4, 16])
def test_packed_linear_matches_f_linear(rows):
    torch.manual_seed(0)
    weight, bias = torch.randn(256, PREPACK_MIN_WEIGHT // 256), torch.randn(256)
    linear = PackedLinear(weight, bias)
    assert linear.prepack == torch.backends.mkldnn.is_available()
    x = torch.randn(rows, weight.shape[1])
    torch.testing.assert_close(linear(x), F.linear(x, weight, bias), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel_size, stride, padding", [(4, 2, 1), (3, 1, 1), (6, 2, 2), (3, 3, 0)])
def test_polyphase_transposed_conv_matches_library(kernel_size, stride, padding):
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d(6, 5, kernel_size, stride=stride, padding=padding)
    x = torch.randn(2, 7, 6)  # (B, T, C)
    with torch.no_grad():
        got = PolyphaseConvTranspose(conv)(x)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(got, ref)


def test_polyphase_transposed_conv_refuses_other_geometries():
    with pytest.raises(ValueError, match="kernel_size - 2 \\* padding == stride"):
        PolyphaseConvTranspose(nn.ConvTranspose1d(4, 4, 3, stride=2, padding=1))
