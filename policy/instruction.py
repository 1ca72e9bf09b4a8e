"""Instruction conditioning: a text encoder, the learned null instruction of classifier-free guidance, checks.

``InstructionConditioner`` turns B instructions into a ``TextEncoding`` (tokens (B, L, D), mask (B, L), pooled
(B, D)) for the denoiser. In training each row's instruction is replaced by a learned null embedding (one null
token, a null pooled vector) with probability ``p_uncond``, so the same network is also the unconditional model
that classifier-free guidance needs (policy.guidance). The null embedding is that model's input at inference too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policy.distributed import BatchShard
from policy.text_encoder import TextEncoding


def check_instructions(instructions: str | Sequence[str], batch: int) -> list[str]:
    """B instructions (one string is repeated B times); ValueError for a wrong count, a non-string or an empty one."""
    texts = [instructions] * batch if isinstance(instructions, str) else list(instructions)
    if len(texts) != batch:
        raise ValueError(f"got {len(texts)} instructions for a batch of {batch}; pass one per row (or one string)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"instruction {i} is {type(text).__name__}, not a string; pass text")
        if not text.strip():
            raise ValueError(f"instruction {i} is empty; pass a sentence such as 'put the cube in the left bin'")
    return texts


def pad_tokens(encoding: TextEncoding, length: int) -> TextEncoding:
    """The encoding with tokens (B, length, D) and mask (B, length), padded with masked zeros."""
    extra = length - encoding.tokens.shape[1]
    if extra <= 0:
        return encoding
    tokens = torch.nn.functional.pad(encoding.tokens, (0, 0, 0, extra))
    mask = torch.nn.functional.pad(encoding.mask, (0, extra), value=False)
    return TextEncoding(tokens, mask, encoding.pooled)


def concat_encodings(first: TextEncoding, second: TextEncoding) -> TextEncoding:
    """Rows of ``first`` then ``second`` (B1 + B2 rows), token lengths padded to the longer one."""
    length = max(first.tokens.shape[1], second.tokens.shape[1])
    a, b = pad_tokens(first, length), pad_tokens(second, length)
    return TextEncoding(*(torch.cat(pair) for pair in zip(a, b)))


def cast_encoding(encoding: TextEncoding, dtype: torch.dtype) -> TextEncoding:
    """The encoding's tokens and pooled vector in ``dtype`` (the mask stays bool)."""
    return TextEncoding(encoding.tokens.to(dtype), encoding.mask, encoding.pooled.to(dtype))


class InstructionConditioner(nn.Module):
    """Text encoder + learned null instruction; drops instructions with probability ``p_uncond`` in training."""

    def __init__(self, text_encoder: nn.Module, p_uncond: float = 0.1) -> None:
        super().__init__()
        if not 0 <= p_uncond < 1:
            raise ValueError(f"cfg.p_uncond={p_uncond} must be in [0, 1) (0.1 is the usual value)")
        self.text_encoder = text_encoder
        self.p_uncond = p_uncond
        self.output_dim = int(text_encoder.output_dim)
        self.null_token = nn.Parameter(torch.randn(1, self.output_dim) * 0.02)  # (1, D)
        self.null_pooled = nn.Parameter(torch.randn(self.output_dim) * 0.02)  # (D,)

    def null(self, batch: int) -> TextEncoding:
        """The null instruction for ``batch`` rows: one token (B, 1, D), mask (B, 1), pooled (B, D)."""
        tokens = self.null_token.expand(batch, 1, -1)
        mask = torch.ones(batch, 1, dtype=torch.bool, device=tokens.device)
        return TextEncoding(tokens, mask, self.null_pooled.expand(batch, -1))

    def draw_drop(self, batch: int, device: torch.device, shard: BatchShard | None = None) -> Tensor:
        """(B,) bool, True where training replaces the instruction by the null one; drawn for the global batch."""

        def draw(count: int) -> Tensor:
            return torch.rand(count, device=device) < self.p_uncond

        return draw(batch) if shard is None else shard.take(draw, batch)

    def forward(self, instructions: Sequence[str], drop: Tensor | None = None) -> TextEncoding:
        """Encode B instructions; rows where ``drop`` (B,) is True get the null instruction."""
        encoding = self.text_encoder(instructions)
        if drop is None:
            return encoding
        null = pad_tokens(self.null(len(instructions)), encoding.tokens.shape[1])
        encoding = pad_tokens(encoding, null.tokens.shape[1])
        rows = drop.to(encoding.tokens.device)
        return TextEncoding(
            torch.where(rows[:, None, None], null.tokens.to(encoding.tokens.dtype), encoding.tokens),
            torch.where(rows[:, None], null.mask, encoding.mask),
            torch.where(rows[:, None], null.pooled.to(encoding.pooled.dtype), encoding.pooled),
        )
