"""Tests for policy/resume_config.py: what a resumed run may change and how a refusal names the keys."""

from policy.resume_config import flatten, unsafe_changes

STORED = {
    "objective": {"_target_": "policy.objectives.FlowMatching"},
    "policy": {"denoiser": {"down_dims": [16, 32]}},
    "training": {"max_steps": 10, "lr": 1e-4, "log_every": 5},
    "rollout": {"every": 0, "n_envs": 2},
    "device": "cpu",
    "seed": 0,
}


def test_run_control_may_change():
    new = {**STORED, "training": {**STORED["training"], "max_steps": 50, "log_every": 1}}
    new |= {"rollout": {"every": 100, "n_envs": 4}, "device": "cuda"}
    assert unsafe_changes(STORED, new) == []


def test_model_objective_optimizer_and_seed_changes_are_named():
    new = {
        **STORED,
        "objective": {"_target_": "policy.objectives.DDPM", "prediction": "epsilon"},
        "policy": {"denoiser": {"down_dims": [8, 16]}},
        "training": {**STORED["training"], "lr": 3e-4},
        "seed": 1,
    }
    assert unsafe_changes(STORED, new) == [
        "objective._target_: 'policy.objectives.FlowMatching' -> 'policy.objectives.DDPM'",
        "objective.prediction: '(absent)' -> 'epsilon'",
        "policy.denoiser.down_dims: [16, 32] -> [8, 16]",
        "seed: 0 -> 1",
        "training.lr: 0.0001 -> 0.0003",
    ]
    assert flatten({"a": {"b": {"c": 1}, "d": {}}}) == {"a.b.c": 1, "a.d": {}}
