"""Consistency distillation's training-time parts (policy/distillation.py): a distilled policy acts in one network call
on the bimodal action chunks, the EMA target, and the one-line refusals of teachers that cannot be distilled."""

import pytest
import torch
from test_checkpoint import BUILD, _state
from test_chunk_policy import _bimodal_data, _policy, _rms_to, _train

from configs import compose_config
from policy.checkpoint import CheckpointError, save_checkpoint
from policy.consistency import ConsistencyDistillation
from policy.distillation import ConsistencyDistiller, distillation_config, load_teacher
from policy.objectives import FlowMatching
from policy.samplers import ConsistencySampler, EulerSampler


def _distill(teacher, student, data: dict, steps: int, batch: int = 64) -> ConsistencyDistiller:
    """Train ``student`` (started from the teacher's weights) by consistency distillation, as policy.training does."""
    student.load_state_dict(teacher.state_dict())
    distiller = ConsistencyDistiller(teacher, student)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(3)
    student.train()
    for _ in range(steps):
        idx = torch.randint(0, data["action"].shape[0], (batch,), generator=g)
        opt.zero_grad(set_to_none=True)
        distiller.loss(student, {k: v[idx] for k, v in data.items()}).backward()
        opt.step()
        distiller.update_target(student)
    student.eval()
    return distiller


def test_distilled_flow_policy_produces_both_modes_in_one_network_call():
    modes, data = _bimodal_data()
    teacher = _train(_policy(objective=FlowMatching(), sampler=EulerSampler(num_steps=1)), data, steps=300, batch=64)
    obs = {"state": data["state"][:200]}
    collapsed = teacher.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"]
    assert _rms_to(collapsed, modes).min(1).values.median() > 0.35  # Euler-1 lands near the modes' average (0.44)
    student = _policy(objective=ConsistencyDistillation(teacher_objective=FlowMatching()), sampler=ConsistencySampler())
    _distill(teacher, student, data, steps=150)
    samples = student.predict_action(obs, generator=torch.Generator().manual_seed(0))["action_pred"]
    dist = _rms_to(samples, modes)  # (200, 2); the modes are 0.87 apart, 0.44 from their average
    assert (dist.min(1).values < 0.3).float().mean() >= 0.75 and dist.min(1).values.median() < 0.2
    assert 0.25 <= (dist.argmin(1) == 0).float().mean() <= 0.75


def test_target_follows_the_student_by_its_decay_and_round_trips():
    teacher = _policy(objective=FlowMatching(), sampler=EulerSampler())
    student = _policy(objective=ConsistencyDistillation(target_decay=0.9), sampler=ConsistencySampler(), seed=1)
    _, data = _bimodal_data(n=16)
    for policy in (teacher, student):
        _train(policy, data, steps=0)  # fits the normalizer
    distiller = ConsistencyDistiller(teacher, student)
    before = {k: v.clone() for k, v in distiller.target.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    distiller.update_target(student)
    for key, value in distiller.target.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * before[key] + 0.1 * student.state_dict()[key])
    other = ConsistencyDistiller(teacher, _policy(objective=student.objective, sampler=ConsistencySampler(), seed=2))
    other.load_state_dict(distiller.state_dict())
    for key, value in other.target.state_dict().items():
        assert torch.equal(value, distiller.target.state_dict()[key])
    assert not any(p.requires_grad for p in (*distiller.teacher.parameters(), *distiller.target.parameters()))


def _teacher_file(tmp_path, name: str, objective: dict, sampler: dict) -> str:
    path = tmp_path / f"{name}.ckpt"
    save_checkpoint(path, _state(build={**BUILD, "objective": objective, "sampler": sampler}))
    return str(path)


def test_config_takes_the_teachers_policy_and_noise_process(tmp_path):
    path = _teacher_file(
        tmp_path, "flow", {"_target_": "policy.objectives.FlowMatching", "time_scale": 50.0}, BUILD["sampler"]
    )
    cfg = compose_config("train", ["objective=consistency", f"teacher={path}"])
    prepared, ckpt = distillation_config(cfg)
    assert prepared.policy.denoiser.down_dims == [16, 32] and cfg.policy.denoiser.down_dims != [16, 32]
    assert prepared.objective.teacher_objective.time_scale == 50.0 and cfg.objective.teacher_objective is None
    assert prepared.sampler._target_.endswith("ConsistencySampler")
    teacher = load_teacher(path, ckpt, BUILD["shape_meta"])
    assert not teacher.training and teacher.objective == FlowMatching(time_scale=50.0)


def test_teachers_that_cannot_be_distilled_are_refused_in_one_line_naming_both_sides(tmp_path):
    flow = _teacher_file(tmp_path, "flow", BUILD["objective"], BUILD["sampler"])
    regression = _teacher_file(
        tmp_path,
        "regression",
        {"_target_": "policy.objectives.Regression"},
        {"_target_": "policy.samplers.RegressionSampler"},
    )
    cases = [
        (["objective=consistency", f"teacher={tmp_path / 'none.ckpt'}"], CheckpointError, "none.ckpt does not exist"),
        (
            ["objective=consistency", f"teacher={regression}"],
            ValueError,
            "is a regression model .* needs a ddpm or flow",
        ),
        (["objective=consistency"], ValueError, "pass teacher="),
        (["objective=flow", f"teacher={flow}"], ValueError, "only read by objective=consistency.*FlowMatching"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message) as raised:
            distillation_config(compose_config("train", overrides))
        assert "\n" not in str(raised.value)
    _, ckpt = distillation_config(compose_config("train", ["objective=consistency", f"teacher={flow}"]))
    other = {"obs": {"state": {"shape": [5], "type": "low_dim"}}, "action": {"shape": [2]}}
    with pytest.raises(ValueError, match=r"trained on .*'shape': \[3\].* the training data here has .*'shape': \[5\]"):
        load_teacher(flow, ckpt, other)
