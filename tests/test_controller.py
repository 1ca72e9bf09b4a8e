"""Tests for policy/controller.py: which actions get executed, replanning, history padding, ensembling."""

import math

import numpy as np
import pytest
import torch

from policy.controller import RecedingHorizonController
from policy.execution import Execution
from policy.rtc import soft_mask


class FakePolicy:
    """Chunk j of call c for env e: [100 * c + j, latest observed value of e]; records every call's obs."""

    def __init__(self, n_obs_steps=2, n_action_steps=3):
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.horizon = n_obs_steps - 1 + n_action_steps
        self.action_dim = 2
        self.obs_shapes = {"state": (1,)}
        self.device = torch.device("cpu")
        self.calls = []  # (obs (n, To) as numpy, kwargs)

    def predict_action(self, obs, *, sampler=None, num_steps=None, generator=None):
        state = obs["state"][..., 0]  # (n, To)
        self.calls.append((state.numpy().copy(), {"sampler": sampler, "num_steps": num_steps, "generator": generator}))
        c = len(self.calls) - 1
        n = state.shape[0]
        j = torch.arange(self.horizon, dtype=torch.float32) - (self.n_obs_steps - 1)  # the past positions are < 0
        pred = torch.stack([(100 * c + j).expand(n, -1), state[:, -1:].float().expand(-1, self.horizon)], -1)
        return {"action": pred[:, self.n_obs_steps - 1 :], "action_pred": pred}


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


class ScriptedChunks:
    """Call c, position p of action_pred: [100 c + p, latest observed value]; records obs and guidance per call.

    With RTC guidance it returns the target at the frozen positions, as ChunkPolicy does.
    """

    n_obs_steps, n_action_steps, horizon, action_dim = 1, 4, 8, 2  # H = 8
    obs_shapes = {"state": (1,)}
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []  # (obs values (n,), guidance or None)

    def predict_action(self, obs, *, sampler=None, num_steps=None, generator=None, guidance=None):
        state = obs["state"][:, -1, 0]  # (n,)
        c = len(self.calls)
        self.calls.append((state.numpy().copy(), guidance))
        p = torch.arange(self.horizon, dtype=torch.float32)
        pred = torch.stack([(100 * c + p).expand(len(state), -1), state[:, None].expand(-1, self.horizon)], -1)
        if guidance is not None:
            pred = torch.where(guidance.frozen[..., None], guidance.target, pred)
        return {"action": pred[:, : self.n_action_steps], "action_pred": pred}


def _scripted_run(execution):
    """12 steps of 2 envs (obs 1000 e + t); env 1 resets before step 6. Returns the policy and actions (2, 12, 2)."""
    policy = ScriptedChunks()
    ctrl = RecedingHorizonController(policy, 2, execution=execution)
    actions = []
    for t in range(12):
        if t == 6:
            ctrl.reset(np.array([False, True]))
        actions.append(ctrl.act(_obs(t)))
    return policy, ctrl, np.stack(actions, axis=1)


# Expected executed actions per strategy (d = 2, s = 4; env 1 restarts at step 6). Calls: 0 at step 0 (both envs),
# 1 at step 4 (both), 2 at step 6 (env 1's new episode: waited for), 3 at step 8 (env 0), 4 at step 10 (env 1).
SYNC = {
    0: ([0, 1, 2, 3, 100, 101, 102, 103, 300, 301, 302, 303], [0] * 4 + [4] * 4 + [8] * 4),
    1: ([0, 1, 2, 3, 100, 101, 200, 201, 202, 203, 400, 401], [1000] * 4 + [1004] * 2 + [1006] * 4 + [1010] * 2),
}
# async: call 1 (obs of step 4) arrives at step 6 and is executed from its position 2; env 1's is dropped by the reset
NAIVE = {
    0: ([0, 1, 2, 3, 4, 5, 102, 103, 104, 105, 302, 303], [0] * 6 + [4] * 4 + [8] * 2),
    1: ([0, 1, 2, 3, 4, 5, 200, 201, 202, 203, 204, 205], [1000] * 6 + [1006] * 6),
}
# blend: where the new chunk overlaps the plan (its positions 2, 3 here), 0.3 old + 0.7 new
BLEND = {
    0: (
        [*range(6), 0.3 * 6 + 0.7 * 102, 0.3 * 7 + 0.7 * 103, 104, 105, 0.3 * 106 + 0.7 * 302, 0.3 * 107 + 0.7 * 303],
        [0] * 6 + [0.7 * 4] * 2 + [4] * 2 + [0.3 * 4 + 0.7 * 8] * 2,
    ),
    1: NAIVE[1],
}


@pytest.mark.parametrize(
    "execution, expected",
    [
        (Execution(), SYNC),
        (Execution("async_naive", delay=0), SYNC),  # no delay: the same as sync
        (Execution("async_naive", delay=2), NAIVE),
        (Execution("async_blend", delay=2), BLEND),
        (Execution("rtc", delay=2), NAIVE),  # the scripted chunks ignore the guidance beyond the frozen prefix
    ],
    ids=["sync", "naive_d0", "naive_d2", "blend_d2", "rtc_d2"],
)
def test_each_strategy_executes_the_expected_action_at_every_step_per_env_across_resets(execution, expected):
    policy, ctrl, actions = _scripted_run(execution)
    for env, (first, second) in expected.items():
        np.testing.assert_allclose(actions[env, :, 0], first, rtol=0, atol=1e-4)
        np.testing.assert_allclose(actions[env, :, 1], second, rtol=0, atol=1e-4)
    obs_per_call = [values.tolist() for values, _ in policy.calls]
    assert obs_per_call == [[0, 1000], [4, 1004], [1006], [8], [1010]]  # conditioned on the request step's obs
    assert ctrl.jump_summary()["n_switches"] == (4 if execution.delay == 0 else 2)  # not the first chunks


def test_rtc_guidance_targets_the_plan_seen_from_the_request_step():
    policy, _, _ = _scripted_run(Execution("rtc", delay=2))
    assert policy.calls[0][1] is None and policy.calls[2][1] is None  # first chunks of an episode: unguided
    guidance = policy.calls[1][1]  # step 4, both envs: plan 0 seen 4 steps later
    np.testing.assert_array_equal(guidance.target[:, :, 0], [[4, 5, 6, 7, 0, 0, 0, 0]] * 2)
    np.testing.assert_array_equal(guidance.target[1, :4, 1], [1000] * 4)
    torch.testing.assert_close(guidance.weights, soft_mask(8, 2, 4).expand(2, 8))
    assert guidance.frozen.tolist() == [[True, True] + [False] * 6] * 2 and guidance.beta == 5.0
    # step 8, env 0: call 1 with its committed prefix (plan 0's 4, 5) then its own 102.. seen from 4 steps later
    np.testing.assert_array_equal(policy.calls[3][1].target[0, :, 0], [104, 105, 106, 107, 0, 0, 0, 0])
    np.testing.assert_array_equal(policy.calls[4][1].target[0, :4, 0], [204, 205, 206, 207])


def test_jumps_at_chunk_switches_and_within_chunks_are_kept_apart():
    _, ctrl, actions = _scripted_run(Execution("async_naive", delay=2))
    steps = np.linalg.norm(np.diff(actions, axis=1), axis=-1)  # (2, 11): |a_t - a_(t-1)|
    switch = [steps[0, 5], steps[0, 9]]  # env 0 at steps 6 and 10
    within = np.delete(steps[0], [5, 9]).tolist() + np.delete(steps[1], [5]).tolist()  # env 1's step 6: new episode
    summary = ctrl.jump_summary()
    assert summary["n_switches"] == 2
    assert summary["switch_jump"] == pytest.approx(np.mean(switch))
    assert summary["within_jump"] == pytest.approx(np.mean(within))


def test_invalid_execution_settings_are_one_line_errors():
    policy = ScriptedChunks()
    with pytest.raises(ValueError, match=r"s=4 and inference_delay d=5 need 1 <= s, d <= s <= H - d, H = .* = 8"):
        RecedingHorizonController(policy, 1, execution=Execution("async_naive", delay=5))
    with pytest.raises(ValueError, match="s=7 and inference_delay d=2"):
        RecedingHorizonController(policy, 1, execution=Execution("rtc", delay=2, horizon=7))
    with pytest.raises(ValueError, match="execution=sync pauses the world .* inference_delay must be 0 \\(got 2\\)"):
        Execution("sync", delay=2)
    with pytest.raises(ValueError, match="temporal_ensemble_k replans every step"):
        RecedingHorizonController(policy, 1, temporal_ensemble_k=0.1, execution=Execution("rtc", delay=1))
    with pytest.raises(ValueError, match="auto must be resolved"):
        RecedingHorizonController(policy, 1, execution=Execution("rtc", delay="auto"))


def test_an_env_restarting_while_another_replans_is_sampled_unguided():
    policy = ScriptedChunks()
    ctrl = RecedingHorizonController(policy, 2, execution=Execution("rtc", delay=2))
    for t in range(17):
        if t == 16:  # env 1's last plan started at step 12: its clock restarts at 0, far behind that plan
            ctrl.reset(np.array([False, True]))
        ctrl.act(_obs(t))
    values, guidance = policy.calls[-1]
    assert values.tolist() == [16, 1016]  # one call for both envs at step 16
    assert guidance.frozen[0, :2].all() and not guidance.frozen[1].any()
    assert not guidance.weights[1].any() and not guidance.target[1].any()
    np.testing.assert_array_equal(guidance.target[0, :4, 0], [304, 305, 306, 307])  # env 0: call 3 seen from now
