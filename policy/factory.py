"""Build a ChunkPolicy from the hydra config groups policy/, objective/ and sampler/.

``shape_meta`` is the task's description of its data:
``{"obs": {key: {"shape": [...], "type": "rgb" | "low_dim"}}, "action": {"shape": [Da]}}``
(rgb shapes (H, W, 3) as stored). The encoder is built first; the denoiser then receives the
sizes only known at build time: action_dim, cond_dim (the encoder's output_dim), n_obs_steps
and horizon.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from policy.chunk_policy import ChunkPolicy

POLICY_KEYS = ("horizon", "n_obs_steps", "n_action_steps", "encoder", "denoiser")


def build_policy(
    policy_cfg: DictConfig | Mapping[str, Any],
    objective_cfg: DictConfig | Mapping[str, Any],
    sampler_cfg: DictConfig | Mapping[str, Any],
    shape_meta: DictConfig | Mapping[str, Any],
) -> ChunkPolicy:
    """Instantiate encoder, denoiser, objective and sampler and assemble the ChunkPolicy."""
    policy_cfg = OmegaConf.create(policy_cfg) if not isinstance(policy_cfg, DictConfig) else policy_cfg
    missing = [k for k in POLICY_KEYS if k not in policy_cfg]
    if missing:
        raise ValueError(f"policy config lacks {missing}; see configs/policy/unet.yaml")
    meta = OmegaConf.to_container(shape_meta, resolve=True) if isinstance(shape_meta, DictConfig) else shape_meta
    if "obs" not in meta or "action" not in meta:
        raise ValueError(f"shape_meta needs 'obs' and 'action' entries; got keys {sorted(meta)}")
    action_dim = int(meta["action"]["shape"][0])
    encoder = instantiate(policy_cfg.encoder, shape_meta=meta["obs"], _convert_="all")
    denoiser = instantiate(
        policy_cfg.denoiser,
        action_dim=action_dim,
        cond_dim=encoder.output_dim,
        n_obs_steps=policy_cfg.n_obs_steps,
        horizon=policy_cfg.horizon,
        _convert_="all",
    )
    return ChunkPolicy(
        encoder=encoder,
        denoiser=denoiser,
        objective=instantiate(objective_cfg),
        sampler=instantiate(sampler_cfg),
        horizon=policy_cfg.horizon,
        n_obs_steps=policy_cfg.n_obs_steps,
        n_action_steps=policy_cfg.n_action_steps,
        action_dim=action_dim,
        shape_meta=meta["obs"],
        compile_denoiser=policy_cfg.get("compile_denoiser", False),
        denoiser_dtype=policy_cfg.get("denoiser_dtype"),
    )
