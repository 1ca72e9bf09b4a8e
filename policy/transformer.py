"""DiffusionTransformer: a transformer over action tokens, conditioned on observation tokens and t.

Each action step is a token (Linear(Da) + learned position). Every block is
adaLN self-attention -> cross-attention to the observation tokens -> adaLN MLP (PixArt-alpha's
layout):

- The timestep enters through adaLN-Zero (shift, scale, gate per sublayer, regressed from the
  timestep embedding, zero-initialized so every block starts as the identity): DiT found it the
  best of in-context token, cross-attention and adaLN for the diffusion time, at the lowest cost.
- Observations enter through cross-attention: they stay n_obs_steps separate tokens (one per
  observation step), so the action tokens can attend to the step they need, and adding cameras or
  steps adds tokens rather than widening a pooled vector.

Written by hand (not ``nn.TransformerDecoder``) so the observation-only work is done once:
``bind(cond)`` projects the observation tokens and every block's cross-attention keys/values once
per ``predict_action``, and each denoising step computes all blocks' adaLN modulations with one
matmul. Attention is ``F.scaled_dot_product_attention`` (flash/efficient kernels on CUDA).

``text_dim > 0`` (instruction-conditioned policies): the instruction's tokens, projected to d_model, join the
observation tokens in every block's cross-attention memory (padding masked), so the action tokens attend to the
words they need beside the observation steps.

``step_conditioned=True`` adds a step-size embedding summed into the timestep embedding (as in
ConditionalUnet1D); without it the parameters are unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy.text_encoder import TextEncoding
from policy.unet import TimestepEmbedding, check_text, first_rows, step_embedding, time_and_step_embedding


def _heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, L, D) -> (B, H, L, D / H)."""
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift with (B, D) modulation over (B, L, D) tokens."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


class TransformerBlock(nn.Module):
    """adaLN-Zero self-attention, cross-attention to observation tokens, adaLN-Zero MLP."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_q = nn.Linear(d_model, d_model)
        self.cross_kv = nn.Linear(d_model, 2 * d_model)
        self.cross_out = nn.Linear(d_model, d_model)
        self.norm3 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(4 * d_model, d_model),
        )
        self.modulation_size = 6 * d_model

    def memory(self, obs_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values (B, H, M, D / H) each, from memory tokens (B, M, D)."""
        k, v = self.cross_kv(obs_tokens).chunk(2, dim=-1)
        return _heads(k, self.n_heads), _heads(v, self.n_heads)

    def forward(
        self, x: Tensor, modulation: Tensor, memory: tuple[Tensor, Tensor], memory_mask: Tensor | None = None
    ) -> Tensor:
        """x (B, T, D), modulation (B, 6 D), memory from ``memory``, key mask (B, 1, 1, M) or None -> (B, T, D)."""
        shift1, scale1, gate1, shift3, scale3, gate3 = modulation.chunk(6, dim=-1)
        p = self.dropout if self.training else 0.0
        q, k, v = (_heads(z, self.n_heads) for z in self.qkv(_modulate(self.norm1(x), shift1, scale1)).chunk(3, dim=-1))
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).flatten(2)  # (B, T, D)
        x = torch.addcmul(x, gate1[:, None], self.attn_out(attn))
        q = _heads(self.cross_q(self.norm2(x)), self.n_heads)
        cross = F.scaled_dot_product_attention(q, *memory, attn_mask=memory_mask, dropout_p=p)
        cross = cross.transpose(1, 2).flatten(2)  # (B, T, D)
        x = x + self.cross_out(cross)
        return torch.addcmul(x, gate3[:, None], self.mlp(_modulate(self.norm3(x), shift3, scale3)))


class DiffusionTransformer(nn.Module):
    """Transformer denoiser: denoiser(x (B, T, Da), t (B,), cond (B, To, Dc)) -> (B, T, Da)."""

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        n_obs_steps: int,
        horizon: int,
        d_model: int = 256,
        n_layers: int = 8,
        n_heads: int = 4,
        dropout: float = 0.1,
        diffusion_step_embed_dim: int = 128,
        step_conditioned: bool = False,
        text_dim: int = 0,
    ) -> None:
        """step_conditioned adds a step-size embedding summed into the timestep's (no parameters otherwise).

        ``text_dim`` > 0 (instruction-conditioned policies) adds instruction tokens (B, L, text_dim), projected to
        d_model, to the cross-attention memory beside the observation tokens; 0 keeps the parameters unchanged.
        """
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}; change one of them")
        self.action_dim = action_dim
        self.cond_dim = cond_dim
        self.n_obs_steps = n_obs_steps
        self.horizon = horizon
        self.action_in = nn.Linear(action_dim, d_model)
        self.action_pos = nn.Parameter(torch.randn(1, horizon, d_model) * 0.02)
        self.obs_in = nn.Linear(cond_dim, d_model)
        self.obs_pos = nn.Parameter(torch.randn(1, n_obs_steps, d_model) * 0.02)
        self.text_dim = text_dim
        self.text_in = nn.Linear(text_dim, d_model) if text_dim else None
        self.time_embedding = TimestepEmbedding(diffusion_step_embed_dim)
        self.step_embedding = step_embedding(diffusion_step_embed_dim) if step_conditioned else None
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, dropout) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.action_out = nn.Linear(d_model, action_dim)
        self.modulation_sizes = [b.modulation_size for b in self.blocks] + [2 * d_model]
        # Every block's adaLN regression (and the final layer's shift/scale) in one Linear on SiLU(t_emb).
        self.modulation = nn.Linear(diffusion_step_embed_dim, sum(self.modulation_sizes))
        for zero in (self.modulation, self.action_out):
            nn.init.zeros_(zero.weight)
            nn.init.zeros_(zero.bias)

    def bind(self, cond: Tensor, text: TextEncoding | None = None) -> Callable[..., Tensor]:
        """Precompute every block's cross-attention keys/values from cond (B, To, Dc); returns (x, t[, step]) -> out.

        ``text``: the encoded instruction of an instruction-conditioned transformer; its tokens (B, L, text_dim) join
        the memory after the observation tokens (its padding masked). The returned callable also takes the first
        B' <= B rows of the bound batch (x (B', T, Da), t (B',)).
        """
        if cond.ndim != 3 or cond.shape[1:] != (self.n_obs_steps, self.cond_dim):
            raise ValueError(
                f"DiffusionTransformer expects cond of shape (B, {self.n_obs_steps}, {self.cond_dim}), "
                f"got {tuple(cond.shape)}; check n_obs_steps and the encoder's output_dim"
            )
        check_text(self, text, cond.shape[0])
        tokens = self.obs_in(cond) + self.obs_pos  # (B, To, D)
        mask = None
        if text is not None:
            tokens = torch.cat((tokens, self.text_in(text.tokens.to(tokens.dtype))), dim=1)  # (B, To + L, D)
            observed = torch.ones(cond.shape[:2], dtype=torch.bool, device=cond.device)
            mask = torch.cat((observed, text.mask), dim=1)[:, None, None]  # (B, 1, 1, To + L)
        memories = [block.memory(tokens) for block in self.blocks]
        return functools.partial(self._denoise, memories=memories, memory_mask=mask)

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor, step: Tensor | None = None, text: TextEncoding | None = None
    ) -> Tensor:
        """Denoise x (B, T, Da) at timestep t (B,) (and step size step (B,)) given cond (B, To, Dc) -> (B, T, Da)."""
        return self.bind(cond, text)(x, t, step)

    def _denoise(
        self,
        x: Tensor,
        t: Tensor,
        step: Tensor | None = None,
        *,
        memories: list[tuple[Tensor, Tensor]],
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """Run the blocks with precomputed cross-attention memories (and their key mask)."""
        if x.ndim != 3 or x.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(
                f"DiffusionTransformer expects x of shape (B, {self.horizon}, {self.action_dim}), got {tuple(x.shape)}"
            )
        memories = [(first_rows(k, x.shape[0]), first_rows(v, x.shape[0])) for k, v in memories]
        mask = None if memory_mask is None else first_rows(memory_mask, x.shape[0])
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        t_emb = time_and_step_embedding(self, t, step)  # (B, Dt)
        modulations = self.modulation(F.silu(t_emb)).split(self.modulation_sizes, dim=-1)
        h = self.action_in(x) + self.action_pos  # (B, T, D)
        for block, modulation, memory in zip(self.blocks, modulations, memories):
            h = block(h, modulation, memory, mask)
        shift, scale = modulations[-1].chunk(2, dim=-1)
        return self.action_out(_modulate(self.final_norm(h), shift, scale))
