"""Tests for policy/execution.py: delay from latency, plan alignment, chunk merging, settings checks."""

import numpy as np
import pytest

from policy.execution import Execution, align, delay_from_latency, merge


def test_delay_is_the_ceiling_of_latency_times_fps():
    assert [delay_from_latency(s, 10) for s in (0.0, 0.049, 0.1, 0.1001, 0.35)] == [0, 1, 1, 2, 4]
    assert delay_from_latency(0.05, 80) == 4


def test_align_shifts_each_plan_by_its_offset_and_marks_what_it_covers():
    plan = np.arange(2 * 4 * 1, dtype=np.float32).reshape(2, 4, 1)  # env 0: 0..3, env 1: 4..7
    values, covered = align(plan, np.array([1, 3]))
    assert values[..., 0].tolist() == [[1, 2, 3, 0], [7, 0, 0, 0]]
    assert covered.tolist() == [[True, True, True, False], [True, False, False, False]]


def test_merge_keeps_the_committed_prefix_and_blends_only_the_overlap():
    plan = np.full((1, 6, 1), 10.0, dtype=np.float32)
    chunk = np.full((1, 6, 1), 20.0, dtype=np.float32)
    offset = np.array([3])  # the old plan covers new positions 0..2
    naive = merge(Execution("async_naive", delay=1), plan, chunk, offset)
    assert naive[0, :, 0].tolist() == [10, 20, 20, 20, 20, 20]
    blend = merge(Execution("async_blend", delay=1, new_weight=0.75), plan, chunk, offset)
    assert blend[0, :, 0].tolist() == [10, 17.5, 17.5, 20, 20, 20]
    assert merge(Execution("async_naive"), plan, chunk, offset)[0, :, 0].tolist() == [20] * 6  # d = 0


def test_settings_are_checked_and_described():
    policy = type("P", (), {"horizon": 16, "n_obs_steps": 2, "n_action_steps": 8})()
    bound = Execution("rtc", delay=4, beta=2.0, mask="linear").bind(policy, "euler")
    assert bound.horizon == 8 and bound.describe() == {
        "execution": "rtc",
        "inference_delay": 4,
        "execution_horizon": 8,
        "rtc_beta": 2.0,
        "rtc_mask": "linear",
    }
    assert Execution("async_naive", delay=7).bind(policy).horizon == 8  # 7 <= 8 <= 15 - 7
    for bad, message in [
        (dict(strategy="later"), "unknown execution 'later'; valid options: sync, async_naive, async_blend, rtc"),
        (dict(strategy="rtc", delay=-1), "inference_delay must be an int >= 0 or auto; got -1"),
        (dict(strategy="rtc", beta=-1.0), "rtc beta must be >= 0"),
        (dict(strategy="rtc", mask="cubic"), "unknown rtc mask 'cubic'"),
        (dict(strategy="async_blend", new_weight=1.5), r"new_weight must be in \[0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            Execution(**bad)
    with pytest.raises(ValueError, match="d=8 need"):
        Execution("async_naive", delay=8).bind(policy)
    with pytest.raises(ValueError, match="got 'heun'"):
        Execution("rtc", delay=1).bind(policy, "heun")
