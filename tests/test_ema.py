"""Tests for policy/ema.py: Diffusion Policy's EMA decay on torch's AveragedModel."""

import pytest
import torch
from torch import nn

from policy.ema import EMA, ema_decay


def test_decay_curve_matches_diffusion_policy_formula():
    assert ema_decay(0) == 0.0 and ema_decay(1) == 0.0
    for n in (2, 10, 1000, 50_000):
        assert ema_decay(n) == pytest.approx(1 - (1 + (n - 1)) ** -0.75)
    assert ema_decay(2) == pytest.approx(1 - 2**-0.75)
    assert ema_decay(10**7) == 0.9999
    assert ema_decay(5, update_after_step=3) == pytest.approx(1 - 2**-0.75)
    assert ema_decay(3, inv_gamma=2.0, power=1.0) == pytest.approx(1 - (1 + 2 / 2.0) ** -1.0)
    assert ema_decay(2, min_value=0.5) == 0.5


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("stat", torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_averaged_weights_follow_the_schedule_and_buffers_track_the_model():
    torch.manual_seed(0)
    model = Toy()
    ema = EMA(model)
    expected = expected_stat = None
    for k in range(5):
        with torch.no_grad():
            model.lin.weight.add_(1.0)
            model.stat.fill_(float(k))
            model.count.fill_(k)
        current = model.lin.weight.detach().clone()
        ema.update_parameters(model)
        if k == 0:
            expected, expected_stat = current, torch.zeros(2)
        else:
            d = ema_decay(k)
            expected = d * expected + (1 - d) * current
            expected_stat = d * expected_stat + (1 - d) * float(k)
        torch.testing.assert_close(ema.module.lin.weight, expected)
        torch.testing.assert_close(ema.module.stat, expected_stat)  # float buffers are averaged too
    assert int(ema.n_averaged) == 5
    assert not torch.allclose(ema.module.lin.weight, model.lin.weight)
    assert int(ema.module.count) == 4  # integer buffers are copied


def test_constant_buffers_stay_exact_and_state_dict_round_trips():
    torch.manual_seed(0)
    model = Toy()
    with torch.no_grad():
        model.stat.copy_(torch.tensor([0.1234567, -3.3]))
    ema = EMA(model)
    for _ in range(4):
        with torch.no_grad():
            model.lin.bias.add_(0.5)
        ema.update_parameters(model)
    assert torch.equal(ema.module.stat, model.stat)
    restored = EMA(Toy())
    restored.load_state_dict(ema.state_dict())
    assert int(restored.n_averaged) == 4
    for a, b in zip(restored.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)


def test_structure_change_is_refused():
    model = Toy()
    ema = EMA(model)
    model.register_buffer("extra", torch.zeros(3))
    with pytest.raises(ValueError, match="create the EMA after"):
        ema.update_parameters(model)
    with pytest.raises(ValueError, match="max_value"):
        EMA(Toy(), max_value=1.0)
