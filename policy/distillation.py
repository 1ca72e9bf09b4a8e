"""Consistency distillation's training-time parts: the teacher from its checkpoint, the student, the EMA target.

``python train.py objective=consistency teacher=<checkpoint>`` distills a trained DDPM or flow policy. The teacher
is loaded from its checkpoint alone (EMA weights, frozen, eval mode). ``distillation_config`` gives the student the
teacher's policy config (architecture, horizons) and copies the teacher's noise process into the student's
objective, so the student's checkpoint is self-contained like any other; ``policy.training`` then starts the student
from the teacher's weights and normalizer (the standard initialization of consistency distillation) and trains it
through ``ConsistencyDistiller.loss`` in the ordinary training loop. The maths is in policy/consistency.py.

Teachers that cannot be distilled are refused with one line naming both sides: a missing or unreadable file, a
model of another kind (regression, shortcut, consistency), or one trained on other observations or actions than the
data at hand. ``teacher=`` with any other objective is refused too.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from policy.checkpoint import CheckpointError, load_checkpoint
from policy.chunk_policy import ChunkPolicy
from policy.distributed import BatchShard, global_denoiser
from policy.objectives import DDPM, FlowMatching

TEACHER_KINDS = (DDPM.kind, FlowMatching.kind)


def needs_teacher(cfg: DictConfig) -> bool:
    """Whether cfg's objective is distilled from a teacher (its class declares ``needs_teacher``)."""
    return bool(getattr(get_class(cfg.objective._target_), "needs_teacher", False))


def distillation_config(cfg: DictConfig) -> tuple[DictConfig, dict[str, Any] | None]:
    """For distillation, cfg with the teacher's policy config and noise process, and the teacher's checkpoint.

    Objectives trained from scratch get (cfg, None). ValueError (one line) if the objective and ``teacher`` do not
    go together or the teacher cannot be distilled. Applying it to its own result gives the same config.
    """
    path = cfg.get("teacher")
    if not needs_teacher(cfg):
        if path is None:
            return cfg, None
        raise ValueError(
            f"teacher={path} is only read by objective=consistency (distillation); this config trains "
            f"{cfg.objective._target_.rsplit('.', 1)[-1]} from scratch, so drop teacher="
        )
    if path is None:
        raise ValueError(
            "objective=consistency distills a trained policy: pass teacher=<run dir>/checkpoints/latest.ckpt "
            "of a DDPM or flow model"
        )
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"teacher checkpoint {path} does not exist; pass teacher=<run dir>/checkpoints/latest.ckpt "
            "of a trained DDPM or flow model"
        )
    ckpt = load_checkpoint(path)
    objective = ckpt["build"]["objective"]
    kind = getattr(get_class(objective["_target_"]), "kind", None)
    if kind not in TEACHER_KINDS:
        raise ValueError(
            f"teacher {path} is a {kind} model ({objective['_target_']}); consistency distillation needs a "
            f"{' or '.join(TEACHER_KINDS)} teacher"
        )
    prepared = copy.deepcopy(cfg)
    with open_dict(prepared):
        prepared.policy = OmegaConf.create(ckpt["build"]["policy"])
        prepared.objective.teacher_objective = OmegaConf.create(objective)
    return prepared, ckpt


def load_teacher(path: str | Path, ckpt: Mapping[str, Any], shape_meta: Mapping[str, Any]) -> ChunkPolicy:
    """The frozen teacher (EMA weights, eval mode) of a checkpoint read by ``distillation_config``.

    ValueError naming both sides if it was trained on other observations or actions than ``shape_meta``.
    """
    teacher_meta = ckpt["build"]["shape_meta"]
    if teacher_meta != dict(shape_meta):
        raise ValueError(
            f"teacher {path} was trained on {teacher_meta}, the training data here has {dict(shape_meta)}; "
            "distill on the teacher's task and obs"
        )
    return ChunkPolicy.from_checkpoint(path, loaded=ckpt).requires_grad_(False)


class ConsistencyDistiller:
    """The frozen teacher and the EMA target network beside a consistency student; the student's training loss."""

    def __init__(self, teacher: ChunkPolicy, student: ChunkPolicy) -> None:
        """The target starts as a copy of the student (which starts as the teacher)."""
        if not getattr(student.objective, "needs_teacher", False):
            raise ValueError(f"the student's objective {type(student.objective).__name__} is not distilled")
        if teacher.objective != student.objective.teacher_objective:
            raise ValueError(
                f"the teacher's objective {teacher.objective} is not the student's teacher_objective "
                f"{student.objective.teacher_objective}; build the student with distillation_config"
            )
        self.teacher = teacher.eval().requires_grad_(False)
        self.target = copy.deepcopy(student).eval().requires_grad_(False)

    def to(self, device: torch.device) -> ConsistencyDistiller:
        """Move the teacher and the target to device."""
        self.teacher.to(device)
        self.target.to(device)
        return self

    def loss(self, student: ChunkPolicy, batch: Mapping[str, Tensor], shard: BatchShard | None = None) -> Tensor:
        """The distillation loss of ``student`` on a batch {obs keys: (B, To, ...), "action": (B, H, Da)}.

        ``shard``: the batch is this process's rows of a global batch (torchrun), as in ``ChunkPolicy.compute_loss``.
        """
        cond, action = student.loss_inputs(batch, shard)  # (B, To, Dc), (B, H, Da) normalized
        drop = student.instruction_drop(batch, shard)  # the same null rows for student, teacher and target
        with torch.no_grad():
            teacher_cond, teacher_text = self.teacher.encode(batch, shard), self.teacher.encode_instruction(batch, drop)
            target_cond, target_text = self.target.encode(batch, shard), self.target.encode_instruction(batch, drop)
        # bound outside no_grad: the UNet would otherwise take its inference plan, rebuilt for the target every step
        return student.objective.loss(
            global_denoiser(student.bind(cond, student.encode_instruction(batch, drop)), shard),
            action,
            teacher=global_denoiser(self.teacher.bind(teacher_cond, teacher_text), shard),
            target=global_denoiser(self.target.bind(target_cond, target_text), shard),
        )

    @torch.no_grad()
    def update_target(self, student: ChunkPolicy) -> None:
        """target <- decay target + (1 - decay) student, for floating-point parameters and buffers (after a step)."""
        weight = 1 - student.objective.target_decay
        pairs = [
            (t, s)
            for t, s in zip(self.target.state_dict().values(), student.state_dict().values())
            if t.is_floating_point()
        ]
        torch._foreach_lerp_([t for t, _ in pairs], [s for _, s in pairs], weight)

    def state_dict(self) -> dict[str, Any]:
        """The target network's weights (the teacher is reloaded from its checkpoint)."""
        return {"target": self.target.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.target.load_state_dict(state["target"])
