"""Tests for policy/optim.py: schedule values, device and autocast choices, fused AdamW."""

import math

import pytest
import torch

from policy import optim
from policy.optim import autocast_enabled, make_optimizer, make_scheduler, resolve_device, warmup_cosine


def test_warmup_then_cosine_to_the_floor():
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_drives_the_optimizer_and_round_trips():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer([param], 1e-3, (0.9, 0.999), 0.0, torch.device("cpu"))
    sched = make_scheduler(opt, 2, 10)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])
    fresh_opt = make_optimizer([torch.nn.Parameter(torch.zeros(3))], 1e-3, (0.9, 0.999), 0.0, torch.device("cpu"))
    fresh = make_scheduler(fresh_opt, 2, 10)
    fresh.load_state_dict(sched.state_dict())
    assert fresh.get_last_lr() == pytest.approx(sched.get_last_lr())
    with pytest.raises(ValueError, match="warmup_steps"):
        make_scheduler(opt, -1, 10)


def test_device_and_autocast_choices(monkeypatch):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert autocast_enabled("auto", torch.device("cuda")) is True
    for native in (False, True):  # auto on CPU follows the hardware: emulated bf16 is slower than fp32
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert optim.cpu_has_native_bf16() is native
        assert autocast_enabled("auto", torch.device("cpu")) is native
        assert autocast_enabled("auto", torch.device("cpu"), images=False) is False  # low-dim UNets: fp32 on CPU
    assert autocast_enabled(True, torch.device("cpu"), images=False) is True
    assert autocast_enabled("auto", torch.device("cuda"), images=False) is True
    assert autocast_enabled(False, torch.device("cuda")) is False
    with pytest.raises(ValueError, match="amp"):
        autocast_enabled("maybe", torch.device("cpu"))
