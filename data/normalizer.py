"""Per-key affine normalization whose statistics live in a ``state_dict``.

Every mode is an affine map ``x_n = x * scale + offset`` applied over the last dimension:

- ``limits``: each dimension to [-1, 1] from its min/max. A dimension whose range is below
  ``range_eps`` (constant in the data) is only centred (scale 1), so it maps to 0 instead of
  dividing by zero.
- ``gaussian``: zero mean, unit std per dimension (std below ``range_eps`` is treated as 1).
- ``image``: uint8 pixels 0..255 to float [0, 1] (no fitting; a scalar scale 1/255, so any
  layout, HWC or CHW, works; only the dtype is read, so lazy zarr arrays are never loaded).
- ``identity``: unchanged (cast to float).

Because every mode is affine, a checkpoint only needs ``scale`` and ``offset`` per key; the
input statistics (min, max, mean, std) are kept too so a user can inspect what was fitted.
A fresh ``Normalizer()`` accepts ``load_state_dict`` of a fitted one: the buffers are created
on load, so a policy restored from a checkpoint needs no data to rebuild its normalizer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

MODES = ("limits", "gaussian", "image", "identity")
_STATS = ("scale", "offset", "input_min", "input_max", "input_mean", "input_std")


class Normalizer(nn.Module):
    """Per-key affine normalization x_n = x * scale + offset; statistics are buffers in state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: list[str] = []

    @classmethod
    def fit(
        cls,
        data: Mapping[str, np.ndarray | Tensor],
        modes: Mapping[str, str],
        *,
        range_eps: float = 1e-4,
    ) -> "Normalizer":
        """Fit one affine map per key in ``modes`` from ``data[key]`` of shape (N, ..., D)."""
        norm = cls()
        for key, mode in modes.items():
            if mode not in MODES:
                raise ValueError(f"normalizer mode {mode!r} for key {key!r} is unknown; use one of {MODES}")
            if key not in data:
                raise KeyError(f"normalizer: no data for key {key!r}; available keys: {sorted(data)}")
            norm._add_key(key, _fit_stats(key, data[key], mode, range_eps))
        return norm

    def _add_key(self, key: str, stats: dict[str, Tensor]) -> None:
        """Register the buffers of one key."""
        if "." in key or "/" in key:
            raise ValueError(f"normalizer key {key!r} may not contain '.' or '/'; rename the key")
        for name, value in stats.items():
            self.register_buffer(f"{key}__{name}", value.to(torch.float32).contiguous())
        if key not in self._keys:
            self._keys.append(key)

    def keys(self) -> list[str]:
        """Keys this normalizer was fitted on."""
        return list(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def _params(self, key: str) -> tuple[Tensor, Tensor]:
        """(scale, offset) buffers of ``key``."""
        if key not in self._keys:
            raise KeyError(f"normalizer has no statistics for key {key!r}; fitted keys: {self._keys}")
        return getattr(self, f"{key}__scale"), getattr(self, f"{key}__offset")

    def stats(self, key: str) -> dict[str, Tensor]:
        """All fitted statistics of ``key`` (scale, offset, input min/max/mean/std)."""
        self._params(key)
        return {name: getattr(self, f"{key}__{name}") for name in _STATS}

    def normalize_key(self, key: str, x: Tensor) -> Tensor:
        """Normalize one tensor (..., D); integer input (uint8 images) is converted to float32."""
        scale, offset = self._params(key)
        x = _to_float(x, scale)
        return x * scale + offset

    def unnormalize_key(self, key: str, x: Tensor) -> Tensor:
        """Invert ``normalize_key``."""
        scale, offset = self._params(key)
        x = _to_float(x, scale)
        return (x - offset) / scale

    def normalize(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Normalize every fitted key of ``batch``; other keys pass through unchanged."""
        return {k: self.normalize_key(k, v) if k in self._keys else v for k, v in batch.items()}

    def unnormalize(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Unnormalize every fitted key of ``batch``; other keys pass through unchanged."""
        return {k: self.unnormalize_key(k, v) if k in self._keys else v for k, v in batch.items()}

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        """Create buffers for keys present in ``state_dict`` so a fresh Normalizer can be restored."""
        found: dict[str, dict[str, Tensor]] = {}
        for full_name, value in state_dict.items():
            if not full_name.startswith(prefix):
                continue
            name = full_name[len(prefix) :]
            if "." in name or "__" not in name:
                continue
            key, stat = name.rsplit("__", 1)
            if stat in _STATS:
                found.setdefault(key, {})[stat] = value
        for key, stats in found.items():
            if key not in self._keys:
                missing = [s for s in _STATS if s not in stats]
                if missing:
                    error_msgs.append(f"normalizer state for key {key!r} lacks {missing}")
                    continue
                self._add_key(key, {s: torch.empty_like(stats[s], dtype=torch.float32) for s in _STATS})
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"keys={self._keys}"


def _to_float(x: Tensor, like: Tensor) -> Tensor:
    """Cast to the statistics' float dtype (uint8 -> float32) on the tensor's own device."""
    if not torch.is_floating_point(x):
        return x.to(like.dtype)
    return x


def _is_uint8(values: object) -> bool:
    """True for uint8 numpy/zarr arrays and torch tensors."""
    dtype = getattr(values, "dtype", None)
    return dtype == torch.uint8 or (not isinstance(dtype, torch.dtype) and np.dtype(dtype) == np.uint8)


def _fit_stats(key: str, values: np.ndarray | Tensor, mode: str, range_eps: float) -> dict[str, Tensor]:
    """Compute scale/offset and input statistics of one key over all leading dims."""
    if mode == "image":
        # Pixels need no statistics: only the dtype is read, so a lazy (zarr) array is never loaded.
        if not _is_uint8(values):
            raise ValueError(f"normalizer key {key!r}: mode 'image' expects uint8 pixels, got {values.dtype}")
        one = torch.ones(1, dtype=torch.float64)
        return {
            "scale": one / 255.0,
            "offset": 0.0 * one,
            "input_min": 0.0 * one,
            "input_max": 255.0 * one,
            "input_mean": 127.5 * one,
            "input_std": 127.5 * one,
        }
    x = values if isinstance(values, Tensor) else torch.from_numpy(np.asarray(values))
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"normalizer key {key!r}: no samples to fit (shape {tuple(x.shape)})")
    flat = x.reshape(-1, x.shape[-1]).to(torch.float64)
    if not torch.isfinite(flat).all():
        raise ValueError(f"normalizer key {key!r}: data contains NaN or inf; clean the dataset first")
    lo, hi = flat.min(0).values, flat.max(0).values
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    if mode == "limits":
        rng = hi - lo
        const = rng < range_eps
        scale = torch.where(const, torch.ones_like(rng), 2.0 / rng.clamp_min(range_eps))
        offset = torch.where(const, -(hi + lo) / 2.0, -1.0 - lo * scale)
    elif mode == "gaussian":
        safe = torch.where(std < range_eps, torch.ones_like(std), std)
        scale = 1.0 / safe
        offset = -mean / safe
    else:
        scale = torch.ones_like(lo)
        offset = torch.zeros_like(lo)
    return {"scale": scale, "offset": offset, "input_min": lo, "input_max": hi, "input_mean": mean, "input_std": std}
