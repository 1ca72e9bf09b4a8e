"""ChunkPolicy: observation encoder + denoiser + objective + sampler, with its normalizer inside.

Training: ``compute_loss(batch)`` normalizes observations and the action chunk, encodes the
observations (random crops in training mode) and hands the objective a denoiser with the
conditioning bound; with a ``BatchShard`` (torchrun, policy.distributed) it encodes this process's rows
and the objective sees the whole global batch through a gathering denoiser. Inference:
``predict_action(obs)`` validates the observations, encodes them once, binds the conditioning once
(denoisers precompute their observation-only work in ``bind``), draws the noise with the caller's
generator on the model's device, runs the sampler and unnormalizes. Train/eval mode is the caller's
(``policy.eval()`` selects centre crops).

``compile_denoiser`` wraps the bound denoiser in ``torch.compile`` at inference only. On CPU the
first call compiles for tens of seconds and ConditionalUnet1D's compiled module path is slower than
its eager small-batch CPU plan (policy.unet_cpu_inference), so the default is off; turn it on for GPUs.

``denoiser_dtype="bfloat16"`` runs the denoiser on a bfloat16 copy at inference (re-cast only
when the weights change); noise, sampler arithmetic and unnormalization stay in the model's
dtype. It pays off where a large denoiser is bound by reading its weights (batch 1, big UNet);
small ones gain nothing, so the default is the model's own dtype.

Instructions (``instruction``, a ``policy.instruction.InstructionConditioner``, built from the policy config's
``instruction`` entry): the batch then carries ``"instruction"``, a list of B strings; training replaces each with
the learned null instruction with probability ``p_uncond``. ``predict_action(obs, instruction=..., guidance_scale=w)``
samples with classifier-free guidance (policy.guidance): w = 1 the conditional model (one pass on B rows), w = 0 the
unconditional one (the null instruction, no instruction needed), otherwise both passes batched into one denoiser
call on 2B rows per step (the NFE per chunk is the sampler's; each call's batch doubles). Every sampler runs it,
RTC's guidance included (its vector-Jacobian product goes through the guided output).

Construction: ``from_config`` (hydra config groups + shape_meta, via ``policy.factory``) and
``from_checkpoint`` (a checkpoint file alone, read by ``policy.checkpoint``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from data.normalizer import Normalizer
from policy.checkpoint import load_checkpoint
from policy.distributed import BatchShard, global_denoiser
from policy.factory import build_parts, load_weights, parts_from_checkpoint
from policy.guidance import check_guidance_scale, classifier_free_guidance
from policy.instruction import InstructionConditioner, cast_encoding, check_instructions, concat_encodings
from policy.rtc import Guidance
from policy.samplers import check_compatible
from policy.text_encoder import TextEncoding

# Reduced-precision copies the denoiser can run in at inference (weights are read once per step:
# halving their bytes matters when a large UNet is memory-bound at batch 1).
DENOISER_DTYPES = {"bfloat16": torch.bfloat16}


class Denoiser(Protocol):
    """What ChunkPolicy needs from a denoiser (ConditionalUnet1D, DiffusionTransformer)."""

    def bind(self, cond: Tensor) -> Callable[..., Tensor]:
        """Precompute observation-only work for cond (B, To, Dc); returns (x (B, T, Da), t (B,)) -> (B, T, Da).

        Step-conditioned denoisers (objectives with ``step_conditioned``, e.g. shortcut) take a step size (B,) third;
        the callable also takes the first B' <= B rows of the bound batch (targets computed on part of a batch).
        """
        ...


def _with_io_dtype(denoise: Callable[..., Tensor], dtype: torch.dtype) -> Callable[..., Tensor]:
    """Wrap a bound denoiser so it sees x in ``dtype`` and returns the caller's dtype (t and step are left as given)."""

    def wrapped(x: Tensor, *scalars: Tensor) -> Tensor:
        return denoise(x.to(dtype), *scalars).to(x.dtype)

    return wrapped


class ChunkPolicy(nn.Module):
    """Action-chunk policy: predict (B, horizon, Da) actions from (B, n_obs_steps, ...) observations."""

    def __init__(
        self,
        encoder: nn.Module,
        denoiser: nn.Module,
        objective: Any,
        sampler: Any,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        action_dim: int,
        shape_meta: Mapping[str, Mapping],
        compile_denoiser: bool = False,
        denoiser_dtype: str | None = None,
        instruction: InstructionConditioner | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= n_obs_steps <= horizon or not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(
                f"need 1 <= n_obs_steps <= horizon and 1 <= n_action_steps <= horizon - n_obs_steps + 1; "
                f"got horizon={horizon}, n_obs_steps={n_obs_steps}, n_action_steps={n_action_steps}"
            )
        if not callable(getattr(denoiser, "bind", None)):
            raise ValueError(
                f"{type(denoiser).__name__} lacks bind(cond); denoisers must follow policy.chunk_policy.Denoiser"
            )
        if denoiser_dtype is not None and denoiser_dtype not in DENOISER_DTYPES:
            raise ValueError(
                f"denoiser_dtype {denoiser_dtype!r} is unknown; use null or one of {sorted(DENOISER_DTYPES)}"
            )
        check_compatible(sampler, objective)
        self.encoder = encoder
        self.denoiser = denoiser
        self.objective = objective
        self.sampler = sampler
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.action_dim = action_dim
        self.obs_shapes = {key: tuple(meta["shape"]) for key, meta in shape_meta.items()}
        self.obs_types = {key: meta["type"] for key, meta in shape_meta.items()}
        self.compile_denoiser = compile_denoiser
        self.denoiser_dtype = denoiser_dtype
        self._cast_cache: dict[str, tuple[tuple, nn.Module]] = {}  # plain dict: not a submodule, not in state_dict
        self.normalizer = Normalizer()
        self.instruction = instruction  # None: an observation-only policy (no state_dict entries)
        self.instruction_config: dict[str, Any] | None = None  # the policy config's instruction entry (checkpoints)

    @classmethod
    def from_config(
        cls,
        policy_cfg: Mapping[str, Any],
        objective_cfg: Mapping[str, Any],
        sampler_cfg: Mapping[str, Any],
        shape_meta: Mapping[str, Any],
    ) -> ChunkPolicy:
        """Build a policy from the config groups policy/, objective/, sampler/ and the task's shape_meta."""
        policy = cls(**build_parts(policy_cfg, objective_cfg, sampler_cfg, shape_meta))
        entry = policy_cfg.get("instruction")
        policy.instruction_config = None if entry is None else OmegaConf.to_container(OmegaConf.create(entry))
        return policy

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        use_ema: bool = True,
        map_location: str | torch.device = "cpu",
        loaded: Mapping[str, Any] | None = None,
    ) -> ChunkPolicy:
        """Load a policy from a checkpoint file alone (no config files needed), in eval mode.

        ``loaded`` is the file's content when the caller has already read it with ``load_checkpoint``.
        """
        ckpt = load_checkpoint(path, map_location) if loaded is None else loaded
        policy = cls(**parts_from_checkpoint(ckpt))
        policy.instruction_config = ckpt["build"]["policy"].get("instruction")
        load_weights(policy, ckpt, use_ema=use_ema, path=path)
        return policy.eval()

    @property
    def device(self) -> torch.device:
        """Device of the policy's parameters."""
        return next(self.parameters()).device

    def normalizer_modes(self) -> dict[str, str]:
        """Normalizer mode per key for ``Normalizer.fit``: "image" for rgb keys, "limits" for the rest."""
        modes = {key: "image" if kind == "rgb" else "limits" for key, kind in self.obs_types.items()}
        return {**modes, "action": "limits"}

    def set_normalizer(self, normalizer: Normalizer) -> None:
        """Copy a fitted normalizer (all obs keys and "action") into the policy, on the policy's device."""
        missing = [k for k in [*self.obs_shapes, "action"] if k not in normalizer]
        if missing:
            raise ValueError(f"normalizer lacks keys {missing}; fit it on every obs key and 'action'")
        fresh = Normalizer()
        fresh.load_state_dict(normalizer.state_dict())
        self.normalizer = fresh.to(self.device)

    def encode(self, obs: Mapping[str, Tensor], shard: BatchShard | None = None) -> Tensor:
        """Raw obs {key: (B, To, ...)} -> conditioning features (B, To, Dc); validates keys and shapes."""
        self._check_obs(obs)
        if "action" not in self.normalizer:
            raise ValueError("ChunkPolicy has no fitted normalizer; call policy.set_normalizer(Normalizer.fit(...))")
        normalized = self.normalizer.normalize({k: obs[k] for k in self.obs_shapes})
        return self.encoder(normalized) if shard is None else self.encoder(normalized, shard=shard)

    def loss_inputs(self, batch: Mapping[str, Tensor], shard: BatchShard | None = None) -> tuple[Tensor, Tensor]:
        """A training batch's conditioning (B, To, Dc) and normalized action chunk (B, horizon, Da), validated.

        ``shard``: the batch is this process's rows of a global batch split over processes (policy.distributed); the
        conditioning is then of these rows (random crops drawn for the whole global batch), the chunk the global one.
        """
        action = batch.get("action")
        expected = (self.horizon, self.action_dim)
        if action is None or action.ndim != 3 or tuple(action.shape[1:]) != expected:
            got = None if action is None else tuple(action.shape)
            raise ValueError(f"batch['action'] must have shape (B, {expected[0]}, {expected[1]}); got {got}")
        cond = self.encode(batch, shard)  # (B, To, Dc), this rank's rows
        action = self.normalizer.normalize_key("action", action)  # (B, horizon, Da)
        return cond, action if shard is None else shard.gather(action)

    @property
    def conditioned(self) -> bool:
        """Whether the policy takes instructions."""
        return self.instruction is not None

    def instruction_drop(self, batch: Mapping[str, Any], shard: BatchShard | None = None) -> Tensor | None:
        """(B,) bool rows whose instruction training replaces by the null one (None: not conditioned or eval mode)."""
        if not self.conditioned or not self.training or self.instruction.p_uncond == 0:
            return None
        return self.instruction.draw_drop(len(self._batch_instructions(batch)), self.device, shard)

    def encode_instruction(self, batch: Mapping[str, Any], drop: Tensor | None = None) -> TextEncoding | None:
        """The batch's instructions encoded (rows in ``drop`` nulled); None for a policy without instructions."""
        if not self.conditioned:
            return None
        return self.instruction(self._batch_instructions(batch), drop)

    def bind(self, cond: Tensor, text: TextEncoding | None) -> Callable[..., Tensor]:
        """The denoiser bound to cond (B, To, Dc) and, for a conditioned policy, the instruction encoding."""
        return self.denoiser.bind(cond) if text is None else self.denoiser.bind(cond, text)

    def compute_loss(self, batch: Mapping[str, Any], shard: BatchShard | None = None) -> Tensor:
        """Scalar training loss for a batch {obs keys: (B, To, ...), "action": (B, horizon, Da)[, "instruction"]}.

        With ``shard`` the objective draws its noise for, and averages over, the whole global batch, as one process.
        """
        cond, action_norm = self.loss_inputs(batch, shard)
        text = self.encode_instruction(batch, self.instruction_drop(batch, shard))
        return self.objective.loss(global_denoiser(self.bind(cond, text), shard), action_norm)

    def predict_action(
        self,
        obs: Mapping[str, Tensor],
        *,
        sampler: Any = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        guidance: Guidance | None = None,
        instruction: str | list[str] | None = None,
        guidance_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """Sample chunks: {"action": (B, n_action_steps, Da), "action_pred": (B, horizon, Da)}, unnormalized.

        ``guidance`` (policy.rtc.Guidance) samples with real-time chunking's guidance towards a previous chunk.
        ``instruction`` (one string, or B) and ``guidance_scale`` w: classifier-free guidance of a conditioned policy
        (w = 1 conditional, 0 unconditional; otherwise each denoiser call runs on 2B rows).
        """
        sampler = self.sampler if sampler is None else sampler
        check_compatible(sampler, self.objective)
        scale = self.check_instruction_use(instruction, guidance_scale)
        denoiser = self._inference_denoiser()
        # RTC's guidance backpropagates through the denoiser: no_grad (not inference tensors) around the sampling
        with torch.inference_mode() if guidance is None else torch.no_grad():
            cond = self.encode(obs)  # (B, To, Dc)
            noise = torch.randn(
                (cond.shape[0], self.horizon, self.action_dim),
                generator=generator,
                device=cond.device,
                dtype=cond.dtype,
            )
            denoise = self._bind_guided(denoiser, cond, instruction, scale)
            if self.compile_denoiser:  # compiled graphs are cached per code object and guarded per module
                denoise = torch.compile(denoise, dynamic=False)
            if guidance is not None:
                guidance.check(sampler.name, tuple(noise.shape))
                target = self.normalizer.normalize_key("action", guidance.target.to(noise))  # (B, horizon, Da)
                denoise = guidance.wrap(denoise, self.objective, target)
            sample = sampler.sample(denoise, self.objective, noise, num_steps=num_steps, generator=generator)
            action_pred = self.normalizer.unnormalize_key("action", sample)  # (B, horizon, Da)
            if guidance is not None:
                action_pred = guidance.freeze(action_pred)
        start = self.n_obs_steps - 1
        return {"action": action_pred[:, start : start + self.n_action_steps], "action_pred": action_pred}

    def check_instruction_use(self, instruction: str | list[str] | None, guidance_scale: float) -> float:
        """The guidance scale; ValueError for instructions a policy cannot take or a missing one it needs."""
        scale = check_guidance_scale(guidance_scale)
        if not self.conditioned:
            if instruction is not None:
                raise ValueError(
                    "this policy was trained without instructions; drop instruction= "
                    "(or train one with instruction_conditioning=true)"
                )
            if scale != 1:
                raise ValueError(
                    f"guidance_scale={guidance_scale} needs an instruction-conditioned policy; this one was trained "
                    "without instructions (use guidance_scale=1)"
                )
        elif instruction is None and scale != 0:
            raise ValueError(
                "this policy is instruction-conditioned: pass instruction='...' "
                "(or guidance_scale=0 for its unconditional model)"
            )
        return scale

    def _bind_guided(
        self, denoiser: nn.Module, cond: Tensor, instruction: str | list[str] | None, scale: float
    ) -> Callable[..., Tensor]:
        """The bound inference denoiser for cond (B, To, Dc): plain, conditional, unconditional, or CFG on 2B rows."""
        batch = cond.shape[0]
        text, pair = None, False
        if self.conditioned:
            null = self.instruction.null(batch)
            texts = None if instruction is None else check_instructions(instruction, batch)  # checked even at w = 0
            if scale == 0:
                text = null
            else:
                text = self.instruction(texts)
                if scale != 1:
                    cond, text, pair = torch.cat((cond, cond)), concat_encodings(text, null), True  # (2B, ...)
        if self.denoiser_dtype is None:
            denoise = denoiser.bind(cond) if text is None else denoiser.bind(cond, text)
        else:
            dtype = DENOISER_DTYPES[self.denoiser_dtype]
            cast = cond.to(dtype)
            bound = denoiser.bind(cast) if text is None else denoiser.bind(cast, cast_encoding(text, dtype))
            denoise = _with_io_dtype(bound, dtype)
        return classifier_free_guidance(denoise, scale) if pair else denoise

    def _batch_instructions(self, batch: Mapping[str, Any]) -> list[str]:
        """The batch's "instruction" list, checked; ValueError naming the fix when it is missing."""
        if "instruction" not in batch:
            raise ValueError(
                "this policy is instruction-conditioned but the batch has no 'instruction'; train on a store with "
                "meta/instruction (python -m data.collect writes it)"
            )
        first = next(iter(self.obs_shapes))
        return check_instructions(batch["instruction"], batch[first].shape[0])

    def _inference_denoiser(self) -> nn.Module:
        """The denoiser itself, or its ``denoiser_dtype`` copy, cast again whenever the weights change."""
        if self.denoiser_dtype is None:
            return self.denoiser
        # A parameter's storage or in-place version changes on optimizer steps, load_state_dict and .to().
        key = tuple((p.data_ptr(), p._version) for p in self.denoiser.parameters())
        cached = self._cast_cache.get(self.denoiser_dtype)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cast = copy.deepcopy(self.denoiser).to(DENOISER_DTYPES[self.denoiser_dtype])
            self._cast_cache = {self.denoiser_dtype: (key, cast)}
        return self._cast_cache[self.denoiser_dtype][1].train(self.denoiser.training)

    def _check_obs(self, obs: Mapping[str, Tensor]) -> None:
        """ValueError naming the first missing key or mis-shaped observation."""
        batch = None
        for key, shape in self.obs_shapes.items():
            if key not in obs:
                raise ValueError(f"observation key {key!r} is missing; got keys {sorted(obs)}")
            value = obs[key]
            batch = value.shape[0] if batch is None else batch
            expected = (batch, self.n_obs_steps, *shape)
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"observation {key!r} must have shape (B, n_obs_steps, *{shape}) = {expected}; "
                    f"got {tuple(value.shape)}"
                )
