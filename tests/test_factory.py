"""Tests for policy/factory.py and the policy/objective/sampler config groups."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from policy.chunk_policy import ChunkPolicy
from policy.objectives import DDPM, FlowMatching
from policy.samplers import SAMPLERS
from policy.transformer import DiffusionTransformer
from policy.unet import ConditionalUnet1D

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPE_META = {
    "obs": {"image": {"shape": [84, 84, 3], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}
LOW_DIM_META = {"obs": {"state": {"shape": [20], "type": "low_dim"}}, "action": {"shape": [2]}}


def _compose(policy: str, objective: str, sampler: str, *extra: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(
            config_name=None, overrides=[f"+policy={policy}", f"+objective={objective}", f"+sampler={sampler}", *extra]
        )


@pytest.mark.parametrize(
    "policy, objective, sampler, denoiser_cls, objective_cls",
    [
        ("unet", "ddpm", "ddim", ConditionalUnet1D, DDPM),
        ("transformer", "flow", "heun", DiffusionTransformer, FlowMatching),
    ],
)
def test_build_from_config_groups_and_run(policy, objective, sampler, denoiser_cls, objective_cls):
    cfg = _compose(policy, objective, sampler, "policy.encoder.crop_shape=[76,76]")
    built = ChunkPolicy.from_config(cfg.policy, cfg.objective, cfg.sampler, SHAPE_META)
    assert isinstance(built.denoiser, denoiser_cls) and isinstance(built.objective, objective_cls)
    assert built.sampler.name == sampler and (built.horizon, built.n_obs_steps, built.n_action_steps) == (16, 2, 8)
    assert built.encoder.output_dim == 64 + 2 and built.encoder.crop_hw["image"] == (76, 76)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_config_builds_its_class(name):
    objective = SAMPLERS[name].objective_kind
    cfg = _compose("unet", objective, name)
    built = ChunkPolicy.from_config(cfg.policy, cfg.objective, cfg.sampler, LOW_DIM_META)
    assert type(built.sampler) is SAMPLERS[name]


def test_mismatched_objective_and_sampler_are_refused():
    cfg = _compose("unet", "flow", "ddim")
    with pytest.raises(ValueError, match="valid samplers for flow"):
        ChunkPolicy.from_config(cfg.policy, cfg.objective, cfg.sampler, LOW_DIM_META)


def test_overrides_reach_the_modules_and_full_size_config_matches_diffusion_policy():
    cfg = _compose(
        "unet",
        "ddpm",
        "ddim",
        "policy.denoiser.down_dims=[32,64]",
        "policy.horizon=8",
        "policy.n_action_steps=4",
        "policy.denoiser_dtype=bfloat16",
        "policy.compile_denoiser=true",
    )
    built = ChunkPolicy.from_config(cfg.policy, cfg.objective, cfg.sampler, LOW_DIM_META)
    assert built.denoiser.horizon == 8 and len(built.denoiser.down) == 2
    assert built.denoiser_dtype == "bfloat16" and built.compile_denoiser
    full = _compose("unet_dp", "ddpm", "ddim").policy
    assert full.encoder.backbone == "resnet18"
    with torch.device("meta"):
        denoiser = instantiate(full.denoiser, action_dim=2, cond_dim=20, n_obs_steps=2, horizon=16)
    assert sum(p.numel() for p in denoiser.parameters()) == 63_554_434


def test_bad_shape_meta_and_policy_config_are_refused():
    cfg = _compose("unet", "ddpm", "ddim")
    with pytest.raises(ValueError, match="'obs' and 'action'"):
        ChunkPolicy.from_config(cfg.policy, cfg.objective, cfg.sampler, {"obs": LOW_DIM_META["obs"]})
    with pytest.raises(ValueError, match="lacks"):
        ChunkPolicy.from_config({"horizon": 16}, cfg.objective, cfg.sampler, LOW_DIM_META)


def test_every_config_option_has_a_comment():
    for path in sorted(CONFIGS.rglob("*.yaml")):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if (
                stripped
                and not stripped.startswith("#")
                and not stripped.startswith("_target_")
                and not stripped.endswith(":")
            ):
                assert "  # " in line, f"{path.name}: option without a comment: {line!r}"


def _train_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="train", overrides=list(overrides))


def test_a_tasks_recipe_applies_with_the_cpu_defaults_and_yields_to_the_command_line():
    push_t, metaworld, generic = _train_cfg("task=push_t"), _train_cfg("task=metaworld"), _train_cfg("task=push_around")
    assert push_t.obs == "state" and push_t.training.batch_size == 128 and push_t.training.lr == 5e-4
    assert list(push_t.policy.denoiser.down_dims) == [32, 64, 128] and push_t.policy.n_action_steps == 2
    assert (metaworld.policy.horizon, metaworld.policy.n_obs_steps, metaworld.policy.n_action_steps) == (4, 2, 3)
    assert metaworld.dataset.val_ratio == 0.0 and metaworld.rollout.every == 1000
    assert metaworld.training.max_steps == 7000
    assert (generic.policy.horizon, generic.training.batch_size, generic.rollout.every) == (16, 64, 0)  # no recipe
    assert _train_cfg("task=metaworld_multi").policy.horizon == 4  # the multi-task store takes the single-task recipe
    dp = _train_cfg("task=push_t", "policy=unet_dp", "training=dp")  # Diffusion Policy's setup is left alone
    assert list(dp.policy.denoiser.down_dims) == [256, 512, 1024] and dp.training.max_steps == 200000
    assert dp.obs == "image" and dp.training.batch_size == 64
    assert _train_cfg("task=push_t", "training.batch_size=32").training.batch_size == 32  # the command line wins
    dropped = _train_cfg("task=push_t", "~recipe")
    assert dropped.obs == "image" and dropped.training.batch_size == 64 and dropped.rollout.every == 0
    image = _train_cfg("+experiment=push_t_image")
    assert image.obs == "image" and image.training.batch_size == 64 and image.training.max_steps == 8500
    assert image.policy.n_obs_steps == 1 and push_t.policy.n_obs_steps == 2  # one frame for images only
    assert push_t.training.max_steps == 12000
    pinned = _train_cfg("+experiment=metaworld", "task=metaworld_multi", "policy.horizon=8")
    assert pinned.policy.horizon == 8 and pinned.policy.n_action_steps == 3
