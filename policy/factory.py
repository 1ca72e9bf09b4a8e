"""Turn the hydra config groups policy/, objective/ and sampler/ (or a loaded checkpoint) into a policy's parts.

``shape_meta`` is the task's description of its data:
``{"obs": {key: {"shape": [...], "type": "rgb" | "low_dim"}}, "action": {"shape": [Da]}}``
(rgb shapes (H, W, 3) as stored). The encoder is built first; the denoiser then receives the
sizes only known at build time: action_dim, cond_dim (the encoder's output_dim), n_obs_steps
and horizon, plus ``step_conditioned=True`` when the objective conditions on a step size
(``objective.step_conditioned``, e.g. shortcut models). The parts are ChunkPolicy's constructor
arguments: ``ChunkPolicy.from_config`` and ``ChunkPolicy.from_checkpoint`` assemble them, so this
module never imports ChunkPolicy.

An instruction-conditioned policy's config holds ``instruction: {text_encoder: {...}, p_uncond: 0.1}`` (train.py
adds it for ``instruction_conditioning=true``, the vocabulary filled from the training store), so a checkpoint
rebuilds its text encoder alone; the denoiser then receives ``text_dim`` (the text encoder's output_dim). A policy
config without the entry builds the observation-only policy, exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from policy.checkpoint import CheckpointError
from policy.instruction import InstructionConditioner

POLICY_KEYS = ("horizon", "n_obs_steps", "n_action_steps", "encoder", "denoiser")


def build_parts(
    policy_cfg: DictConfig | Mapping[str, Any],
    objective_cfg: DictConfig | Mapping[str, Any],
    sampler_cfg: DictConfig | Mapping[str, Any],
    shape_meta: DictConfig | Mapping[str, Any],
) -> dict[str, Any]:
    """Instantiate encoder, denoiser, objective and sampler; returns ChunkPolicy's keyword arguments."""
    policy_cfg = OmegaConf.create(policy_cfg) if not isinstance(policy_cfg, DictConfig) else policy_cfg
    missing = [k for k in POLICY_KEYS if k not in policy_cfg]
    if missing:
        raise ValueError(f"policy config lacks {missing}; see configs/policy/unet.yaml")
    meta = OmegaConf.to_container(shape_meta, resolve=True) if isinstance(shape_meta, DictConfig) else shape_meta
    if "obs" not in meta or "action" not in meta:
        raise ValueError(f"shape_meta needs 'obs' and 'action' entries; got keys {sorted(meta)}")
    action_dim = int(meta["action"]["shape"][0])
    objective = instantiate(objective_cfg)
    encoder = instantiate(policy_cfg.encoder, shape_meta=meta["obs"], _convert_="all")
    extra = {"step_conditioned": True} if getattr(objective, "step_conditioned", False) else {}
    instruction = build_instruction(policy_cfg.get("instruction"))
    if instruction is not None:
        extra["text_dim"] = instruction.output_dim
    denoiser = instantiate(
        policy_cfg.denoiser,
        action_dim=action_dim,
        cond_dim=encoder.output_dim,
        n_obs_steps=policy_cfg.n_obs_steps,
        horizon=policy_cfg.horizon,
        **extra,
        _convert_="all",
    )
    return {
        "encoder": encoder,
        "denoiser": denoiser,
        "objective": objective,
        "sampler": instantiate(sampler_cfg),
        "horizon": policy_cfg.horizon,
        "n_obs_steps": policy_cfg.n_obs_steps,
        "n_action_steps": policy_cfg.n_action_steps,
        "action_dim": action_dim,
        "shape_meta": meta["obs"],
        "compile_denoiser": policy_cfg.get("compile_denoiser", False),
        "denoiser_dtype": policy_cfg.get("denoiser_dtype"),
        "instruction": instruction,
    }


def build_instruction(cfg: DictConfig | Mapping[str, Any] | None) -> InstructionConditioner | None:
    """The instruction conditioner a policy config's ``instruction`` entry describes (None: no instructions)."""
    if cfg is None:
        return None
    if "text_encoder" not in cfg:
        raise ValueError("policy.instruction lacks text_encoder; train with instruction_conditioning=true")
    encoder = instantiate(cfg["text_encoder"], _convert_="all")
    return InstructionConditioner(encoder, p_uncond=float(cfg.get("p_uncond", 0.1)))


def parts_from_checkpoint(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """ChunkPolicy's keyword arguments for the model a loaded checkpoint (``load_checkpoint``) describes."""
    build = ckpt["build"]
    return build_parts(build["policy"], build["objective"], build["sampler"], build["shape_meta"])


def load_weights(module: nn.Module, ckpt: Mapping[str, Any], *, use_ema: bool, path: str | Path) -> None:
    """Load the checkpoint's EMA (if use_ema and present) or raw weights; CheckpointError if they do not fit."""
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"checkpoint {path} weights do not fit the model its config builds: {first}") from exc
