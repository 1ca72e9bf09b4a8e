"""Tests for policy/controller.py: which actions get executed, replanning, history padding, ensembling."""

import math

import numpy as np
import pytest
import torch

from policy.controller import RecedingHorizonController


class FakePolicy:
    """Chunk j of call c for env e: [100 * c + j, latest observed value of e]; records every call's obs."""

    def __init__(self, n_obs_steps=2, n_action_steps=3):
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.action_dim = 2
        self.obs_shapes = {"state": (1,)}
        self.device = torch.device("cpu")
        self.calls = []  # (obs (n, To) as numpy, kwargs)

    def predict_action(self, obs, *, sampler=None, num_steps=None, generator=None):
        state = obs["state"][..., 0]  # (n, To)
        self.calls.append((state.numpy().copy(), {"sampler": sampler, "num_steps": num_steps, "generator": generator}))
        c = len(self.calls) - 1
        n = state.shape[0]
        j = torch.arange(self.n_action_steps, dtype=torch.float32)
        action = torch.stack([(100 * c + j).expand(n, -1), state[:, -1:].float().expand(-1, self.n_action_steps)], -1)
        return {"action": action, "action_pred": action}


def _obs(step, n_envs=2):
    """state of env e at step t: 1000 * e + t, shape (n_envs, 1)."""
    return {"state": np.array([[1000.0 * e + step] for e in range(n_envs)], dtype=np.float32)}


def test_executes_the_action_window_then_replans_with_padded_history_and_forwards_settings():
    policy = FakePolicy(n_obs_steps=2, n_action_steps=3)
    gen = torch.Generator().manual_seed(0)
    ctrl = RecedingHorizonController(policy, 2, sampler="S", num_steps=7, generator=gen)
    actions = [ctrl.act(_obs(t)) for t in range(7)]
    # calls at steps 0, 3, 6; action = [100 * call + index within the chunk, obs value at planning]
    assert [a[0, 0] for a in actions] == [0, 1, 2, 100, 101, 102, 200]
    assert [a[1, 1] for a in actions] == [1000, 1000, 1000, 1003, 1003, 1003, 1006]
    assert len(policy.calls) == 3 and len(ctrl.latencies) == 3 and all(x >= 0 for x in ctrl.latencies)
    np.testing.assert_array_equal(policy.calls[0][0], [[0, 0], [1000, 1000]])  # first obs repeated
    np.testing.assert_array_equal(policy.calls[1][0], [[2, 3], [1002, 1003]])  # the last two obs
    assert policy.calls[0][1] == {"sampler": "S", "num_steps": 7, "generator": gen}
    assert actions[0].dtype == np.float32 and actions[0].shape == (2, 2)


def test_per_env_reset_replans_only_that_env_while_the_other_keeps_its_queue():
    policy = FakePolicy(n_obs_steps=3, n_action_steps=4)
    ctrl = RecedingHorizonController(policy, 2)
    for t in range(2):
        ctrl.act(_obs(t))
    ctrl.reset(np.array([False, True]))
    action = ctrl.act(_obs(2))
    assert len(policy.calls) == 2
    np.testing.assert_array_equal(policy.calls[1][0], [[1002, 1002, 1002]])  # env 1 alone, padded with its new obs
    assert action[0, 0] == 2 and action[1, 0] == 100  # env 0: third action of call 0; env 1: first of call 1
    action = ctrl.act(_obs(3))
    assert action[0, 0] == 3 and action[1, 0] == 101
    ctrl.act(_obs(4))  # env 0's queue is empty: it replans alone with its unbroken history
    np.testing.assert_array_equal(policy.calls[2][0], [[2, 3, 4]])


def test_inactive_envs_repeat_their_last_action_without_planning():
    policy = FakePolicy(n_obs_steps=1, n_action_steps=2)
    ctrl = RecedingHorizonController(policy, 2)
    first = ctrl.act(_obs(0))
    held = ctrl.act(_obs(1), active=np.array([True, False]))
    again = ctrl.act(_obs(2), active=np.array([True, False]))
    assert held[0, 0] == 1 and again[0, 0] == 100 and policy.calls[1][0].shape == (1, 1)
    np.testing.assert_array_equal(held[1], first[1])
    np.testing.assert_array_equal(again[1], first[1])


def test_temporal_ensemble_matches_hand_computed_weights():
    k = 0.5
    policy = FakePolicy(n_obs_steps=1, n_action_steps=3)
    ctrl = RecedingHorizonController(policy, 1, temporal_ensemble_k=k)
    got = [ctrl.act(_obs(t, n_envs=1))[0, 0] for t in range(4)]
    w = [1.0, math.exp(-k), math.exp(-2 * k)]  # oldest chunk first
    expected = [
        0.0,
        (w[0] * 1 + w[1] * 100) / (w[0] + w[1]),  # call 0 step 1, call 1 step 0
        (w[0] * 2 + w[1] * 101 + w[2] * 200) / sum(w),
        (w[0] * 102 + w[1] * 201 + w[2] * 300) / sum(w),  # call 0 no longer covers step 3
    ]
    assert got == pytest.approx(expected)
    assert len(policy.calls) == 4
    ctrl.reset()
    assert ctrl.act(_obs(4, n_envs=1))[0, 0] == 400  # after reset only the new chunk counts


def test_bad_inputs_are_refused():
    policy = FakePolicy()
    with pytest.raises(ValueError, match="n_envs"):
        RecedingHorizonController(policy, 0)
    ctrl = RecedingHorizonController(policy, 2)
    with pytest.raises(ValueError, match="lack the policy's keys"):
        ctrl.act({"image": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="batch size 3"):
        ctrl.act({"state": np.zeros((3, 1), dtype=np.float32)})
    with pytest.raises(ValueError, match="reset mask"):
        ctrl.reset(np.array([True]))
