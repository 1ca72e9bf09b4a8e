"""Text encoders for instructions: ``encoder(list[str]) -> TextEncoding``: tokens (B, L, D), mask (B, L), pooled (B, D).

Two encoders share that interface:

- ``VocabularyTextEncoder`` (default, offline): words (lower-cased runs of letters and digits) indexed in a
  vocabulary built from the training store's instructions (``build_vocabulary``), a learned embedding with
  positions, a small pre-norm transformer and a masked mean for the pooled vector. Trained with the policy.
  Words outside the vocabulary map to one unknown token and are reported once (a warning naming them).
- ``CLIPTextEncoder``: ``transformers``' ``CLIPTextModel`` and ``CLIPTokenizer`` loaded from ``path`` (a local
  directory or a hub id the user has), frozen by default. ``transformers`` is imported only when it is built.

The vocabulary is a constructor argument, so it is part of the policy config a checkpoint stores.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

WORD = re.compile(r"[a-z0-9]+")
PAD, UNKNOWN = 0, 1  # reserved token ids of the vocabulary encoder


class TextEncoding(NamedTuple):
    """Encoded instructions: tokens (B, L, D), mask (B, L) bool (True = a real token), pooled (B, D)."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor


def words(text: str) -> list[str]:
    """The vocabulary encoder's tokens of ``text``: lower-cased runs of letters and digits."""
    return WORD.findall(text.lower())


def build_vocabulary(instructions: Iterable[str]) -> list[str]:
    """The sorted distinct words of ``instructions`` (a training store's ``meta/instruction``)."""
    return sorted({w for text in instructions for w in words(text)})


class VocabularyTextEncoder(nn.Module):
    """Trainable word encoder over a fixed vocabulary: embedding + positions -> transformer -> tokens, masked mean."""

    def __init__(
        self,
        vocabulary: Sequence[str] | None,
        dim: int = 64,
        n_layers: int = 1,
        n_heads: int = 4,
        max_length: int = 32,
    ) -> None:
        super().__init__()
        if not vocabulary:
            raise ValueError(
                "the vocabulary text encoder needs a vocabulary; train.py builds it from the store's "
                "meta/instruction (collect the store with instructions), or pass build_vocabulary(instructions)"
            )
        if dim % n_heads:
            raise ValueError(f"text_encoder.dim={dim} is not divisible by n_heads={n_heads}; change one of them")
        self.vocabulary = list(vocabulary)
        self.index = {word: i + 2 for i, word in enumerate(self.vocabulary)}
        self.max_length = max_length
        self.output_dim = dim
        self.embed = nn.Embedding(len(self.vocabulary) + 2, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, n_heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False) if n_layers else None
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.Linear(dim, dim)
        self._reported: set[str] = set()

    def token_ids(self, instructions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids (B, L) int64 and mask (B, L) bool, L the longest instruction; warns once per unknown word."""
        split = [words(text) for text in instructions]
        too_long = [text for text, ws in zip(instructions, split) if len(ws) > self.max_length]
        if too_long:
            raise ValueError(
                f"instruction {too_long[0]!r} has {len(words(too_long[0]))} words, the text encoder takes at most "
                f"max_length={self.max_length}; shorten it or train with a larger text_encoder.max_length"
            )
        unknown = sorted({w for ws in split for w in ws if w not in self.index} - self._reported)
        if unknown:
            self._reported.update(unknown)
            warnings.warn(
                f"instruction words {unknown} are not in the policy's {len(self.vocabulary)}-word vocabulary; "
                "they are read as one unknown token",
                stacklevel=3,
            )
        length = max(1, max(len(ws) for ws in split))
        ids = torch.full((len(split), length), PAD, dtype=torch.long)
        for row, ws in enumerate(split):
            ids[row, : len(ws)] = torch.tensor([self.index.get(w, UNKNOWN) for w in ws], dtype=torch.long)
        return ids, ids != PAD

    def forward(self, instructions: Sequence[str]) -> TextEncoding:
        """Encode B instructions -> tokens (B, L, D), mask (B, L), pooled (B, D)."""
        ids, mask = self.token_ids(instructions)
        ids, mask = ids.to(self.position.device), mask.to(self.position.device)
        h = self.embed(ids) + self.position[: ids.shape[1]]  # (B, L, D)
        if self.layers is not None:
            h = self.layers(h, src_key_padding_mask=~mask)
        h = self.norm(h)
        weights = mask.to(h.dtype)[..., None]  # (B, L, 1)
        pooled = self.pool((h * weights).sum(1) / weights.sum(1).clamp(min=1))  # (B, D)
        return TextEncoding(h, mask, pooled)


def _import_transformers() -> Any:
    """Import ``transformers`` or raise ImportError saying how to install it."""
    try:
        import transformers
    except ModuleNotFoundError as err:
        raise ImportError("text_encoder=clip needs transformers: pip install -e .[clip]") from err
    return transformers


class CLIPTextEncoder(nn.Module):
    """``transformers``' CLIP text tower: tokens = last hidden states (B, L, D), pooled = its pooler output (B, D)."""

    def __init__(self, path: str | None, freeze: bool = True, max_length: int = 77) -> None:
        super().__init__()
        if not path:
            raise ValueError(
                "text_encoder=clip needs text_encoder.path=<a directory (or hub id) holding CLIP text weights "
                "and its tokenizer>"
            )
        transformers = _import_transformers()
        self.path = str(path)
        self.freeze = freeze
        self.max_length = max_length
        self.tokenizer = transformers.CLIPTokenizer.from_pretrained(self.path)
        self.model = transformers.CLIPTextModel.from_pretrained(self.path)
        self.output_dim = int(self.model.config.hidden_size)
        if freeze:
            self.model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> CLIPTextEncoder:
        """Set the mode; a frozen model stays in eval mode (no dropout while the policy trains)."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, instructions: Sequence[str]) -> TextEncoding:
        """Encode B instructions -> tokens (B, L, D), mask (B, L), pooled (B, D)."""
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(instructions), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            out = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        return TextEncoding(out.last_hidden_state, batch["attention_mask"].to(device).bool(), out.pooler_output)
