"""Tests for policy/mish.py: the sigmoid form of Mish equals F.mish in value and gradient."""

import torch
import torch.nn.functional as F

from policy.mish import FAST_MISH_MIN_NUMEL, Mish, mish


def test_values_and_gradients_match_torch_mish_including_extremes():
    x = torch.cat([torch.linspace(-100, 100, 20001), torch.randn(FAST_MISH_MIN_NUMEL) * 5]).double()
    x.requires_grad_(True)
    grad = torch.randn_like(x)
    ours = mish(x)
    ref = F.mish(x)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(ref, x, grad)[0])


def test_float32_large_and_small_tensors_and_module_form():
    torch.manual_seed(0)
    big, small = torch.randn(4, 64, 128) * 4, torch.randn(2, 8)
    torch.testing.assert_close(mish(big), F.mish(big), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(Mish()(small), F.mish(small))
    assert not torch.isnan(mish(torch.full((FAST_MISH_MIN_NUMEL,), 1e4))).any()
