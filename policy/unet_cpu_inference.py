"""Small-batch CPU inference path for ConditionalUnet1D: same maths, fewer ops, prepacked weights.

At batch 1 a denoiser step is a few dozen small matmuls plus ~300 tiny ops, so on CPU its time is
weight traffic and per-op overhead, not FLOPs. ``CpuInferencePlan`` is built from the UNet's
parameters (rebuilt when they change) and runs the same network as ``ConditionalUnet1D._denoise``.
Each piece is kept because it made the step faster (``benchmarks/bench_policy.py`` times the whole):

- Activations stay (B, T, C) throughout and every convolution is im2col (pad + unfold) + one
  matmul: no layout permutes, no module calls, no library convolution (whose per-call setup
  dominates at these sizes). GroupNorm reads a channels_last view of the same memory.
- Weights with >= ``PREPACK_MIN_WEIGHT`` elements are reordered once into oneDNN's blocked layout
  (``mkldnn._reorder_linear_weight``) and multiplied with ``mkldnn._linear_pointwise``, faster than
  ``F.linear`` (MKL) for these thin products, so a large UNet's step is bound by memory bandwidth.
  Smaller weights keep ``F.linear``, which is as fast or faster there.
- The timestep half of the FiLM (sinusoid, MLP, Mish and a 128 x F matmul) is cached per timestep
  value, in float32: samplers revisit the same timesteps on every chunk, and a bfloat16 copy then
  rounds the FiLM once, like the module path's fused addmm.
- FiLM scales and biases come from one split of the (B, 1, F) FiLM tensor, not a chunk per block.
- The stride-2 transposed convolution is rewritten once in polyphase form: output phase r at input
  position m is a 3-tap convolution of the input, so the up-sampler is one im2col matmul whose
  (B, T, 2C) result is already the interleaved (B, 2T, C) output (no fold, no overlap-add).

Costs: the plan keeps a packed copy of the large weights (about the model's size in memory), and
it is eager-only: oneDNN's opaque tensors do not trace, so under torch.compile the UNet takes its
module path.
The plan is not part of the module's state_dict, and copies of the module start without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# oneDNN's prepacked linear (private ops that inductor uses); without them every matmul is F.linear.
ONEDNN_LINEAR = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)
# Weights with at least this many elements are prepacked for oneDNN (below it F.linear is as fast).
PREPACK_MIN_WEIGHT = 1 << 17
# Timestep FiLM halves kept per plan (a DDPM-100 rollout uses 100; the cache is cleared when full).
MAX_CACHED_TIMESTEPS = 1024


class PackedLinear:
    """x (M, K) -> x @ W.T + b for a weight (N, K), prepacked once for oneDNN when it is large."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight = weight.contiguous()  # (N, K)
        self.bias = bias
        self.prepack = ONEDNN_LINEAR and weight.numel() >= PREPACK_MIN_WEIGHT
        # oneDNN-blocked copy; its batch-size hint barely matters (measured for M = 4..256), so one serves all M.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight) if self.prepack else None

    def __call__(self, x: Tensor) -> Tensor:
        """(M, K) -> (M, N)."""
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


class Im2colConv:
    """A Conv1d on (B, T, Cin) activations as pad + unfold + one matmul -> (B, T_out, Cout)."""

    def __init__(self, conv: nn.Conv1d) -> None:
        out_channels, _, self.kernel_size = conv.weight.shape
        self.stride, self.padding = conv.stride[0], conv.padding[0]
        # (Cout, k * Cin): a view of Conv1d's weight, stored (Cout, k, Cin)
        self.linear = PackedLinear(conv.weight.transpose(1, 2).reshape(out_channels, -1), conv.bias)

    def __call__(self, h: Tensor) -> Tensor:
        """(B, T, Cin) -> (B, T_out, Cout)."""
        batch = h.shape[0]
        if self.kernel_size == 1 and self.stride == 1 and self.padding == 0:
            return self.linear(h.reshape(-1, h.shape[2])).view(batch, h.shape[1], -1)
        padded = F.pad(h, (0, 0, self.padding, self.padding))
        cols = padded.unfold(1, self.kernel_size, self.stride).transpose(2, 3)  # (B, T_out, k, Cin)
        t_out = cols.shape[1]
        return self.linear(cols.reshape(batch * t_out, -1)).view(batch, t_out, -1)


class PolyphaseConvTranspose:
    """A ConvTranspose1d with kernel_size - 2 * padding == stride as one im2col matmul on (B, T, Cin)."""

    def __init__(self, conv: nn.ConvTranspose1d) -> None:
        weight = conv.weight  # (Cin, Cout, k)
        in_channels, out_channels, k = weight.shape
        stride, padding = conv.stride[0], conv.padding[0]
        if k - 2 * padding != stride or conv.output_padding[0] or conv.dilation[0] != 1 or conv.groups != 1:
            raise ValueError(
                f"polyphase transposed conv needs kernel_size - 2 * padding == stride and no output_padding, "
                f"dilation or groups; got k={k}, stride={stride}, padding={padding}"
            )
        # Output o = m * stride + r receives input m + d through tap j = r + padding - d * stride.
        taps = [(r, d, r + padding - d * stride) for r in range(stride) for d in range(-k, k + 1)]
        taps = [(r, d, j) for r, d, j in taps if 0 <= j < k]
        self.lo, self.hi = -min(d for _, d, _ in taps), max(d for _, d, _ in taps)
        self.window = self.lo + self.hi + 1
        poly = weight.new_zeros(stride, out_channels, in_channels, self.window)
        for r, d, j in taps:
            poly[r, :, :, d + self.lo] = weight[:, :, j].t()
        self.stride, self.out_channels = stride, out_channels
        poly = poly.reshape(stride * out_channels, in_channels * self.window)
        self.linear = PackedLinear(poly, conv.bias.repeat(stride))

    def __call__(self, h: Tensor) -> Tensor:
        """(B, T, Cin) -> (B, stride * T, Cout)."""
        batch, length, _ = h.shape
        cols = F.pad(h, (0, 0, self.lo, self.hi)).unfold(1, self.window, 1)  # (B, T, Cin, window)
        y = self.linear(cols.reshape(batch * length, -1))  # (B * T, stride * Cout), phase-major per position
        return y.view(batch, length * self.stride, self.out_channels)


class NormMish:
    """GroupNorm -> Mish on (B, T, C) activations (GroupNorm runs on a channels_last view, no copy)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        self.groups, self.weight, self.bias, self.eps = norm.num_groups, norm.weight, norm.bias, norm.eps

    def __call__(self, h: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        batch, length, channels = h.shape
        view = h.reshape(batch, 1, length, channels).permute(0, 3, 1, 2)  # (B, C, 1, T) channels_last
        out = F.group_norm(view, self.groups, self.weight, self.bias, self.eps)
        return F.mish(out.permute(0, 2, 3, 1).reshape(batch, length, channels))


class ResidualBlockPlan:
    """FiLMResidualBlock1D on (B, T, C): conv-norm-mish, FiLM, conv-norm-mish, plus the residual."""

    def __init__(self, block: nn.Module) -> None:
        self.conv1, self.norm1 = Im2colConv(block.block1.conv), NormMish(block.block1.norm)
        self.conv2, self.norm2 = Im2colConv(block.block2.conv), NormMish(block.block2.norm)
        self.residual = None if isinstance(block.residual, nn.Identity) else Im2colConv(block.residual)

    def __call__(self, h: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        """h (B, T, Cin), FiLM scale and bias (B, 1, Cout) -> (B, T, Cout)."""
        y = torch.addcmul(bias, self.norm1(self.conv1(h)), scale)
        y = self.norm2(self.conv2(y))
        return y.add_(h if self.residual is None else self.residual(h))


class CpuInferencePlan:
    """ConditionalUnet1D's denoising pass for small CPU batches without autograd; same outputs."""

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet
        self.down = [
            (ResidualBlockPlan(b1), ResidualBlockPlan(b2), None if isinstance(ds, nn.Identity) else Im2colConv(ds))
            for b1, b2, ds in unet.down
        ]
        self.mid = [ResidualBlockPlan(b) for b in unet.mid]
        self.up = [(ResidualBlockPlan(b1), ResidualBlockPlan(b2), PolyphaseConvTranspose(us)) for b1, b2, us in unet.up]
        self.final_conv, self.final_norm = Im2colConv(unet.final_block.conv), NormMish(unet.final_block.norm)
        self.out_conv = Im2colConv(unet.final_conv)
        self.film_halves = [size // 2 for size in unet.film_sizes for _ in range(2)]  # [scale, bias] per block
        self._time_films: dict[tuple, Tensor] = {}  # timestep values -> their FiLM half (B, F), float32

    def time_film(self, t: Tensor, step: Tensor | None = None) -> Tensor:
        """The timestep (and step-size) half of every block's FiLM for t (B,) in float32, cached per their values."""
        key = (t.dtype, *t.tolist(), None if step is None else tuple(step.expand(t.shape).tolist()))
        film = self._time_films.get(key)
        if film is None:
            if len(self._time_films) >= MAX_CACHED_TIMESTEPS:
                self._time_films.clear()
            t_emb = F.mish(self.unet.embed_time(t, step)).float()  # (B, Dt)
            film = self._time_films[key] = F.linear(t_emb, self.unet.film_time.weight.float())  # (B, F)
        return film

    def denoise(self, x: Tensor, t: Tensor, obs_film: Tensor, step: Tensor | None = None) -> Tensor:
        """x (B, T, Da), t (B,) or scalar, obs_film (B, F), step size (B,), scalar or None -> (B, T, Da)."""
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        film = (self.time_film(t, step) + obs_film).to(obs_film.dtype)  # one rounding in reduced-precision copies
        films = iter(film[:, None, :].split(self.film_halves, dim=2))  # (B, 1, C) each
        h, skips = x, []
        for block1, block2, downsample in self.down:
            h = block2(block1(h, next(films), next(films)), next(films), next(films))
            skips.append(h)
            h = h if downsample is None else downsample(h)
        for block in self.mid:
            h = block(h, next(films), next(films))
        for block1, block2, upsample in self.up:
            h = torch.cat((h, skips.pop()), dim=2)
            h = upsample(block2(block1(h, next(films), next(films)), next(films), next(films)))
        return self.out_conv(self.final_norm(self.final_conv(h)))


class PlanCache:
    """Holds one CpuInferencePlan keyed by the parameters' storage and version; copies start empty."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.plan: CpuInferencePlan | None = None

    def get(self, unet: nn.Module) -> CpuInferencePlan:
        """The plan for unet's current parameters, rebuilt after optimizer steps, loads or moves."""
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in unet.parameters())
        if self.plan is None or key != self.key:
            with torch.no_grad():
                self.plan = CpuInferencePlan(unet)
            self.key = key
        return self.plan

    def __deepcopy__(self, memo: dict) -> PlanCache:
        """A deep copy of the module gets an empty cache (packed oneDNN tensors are not copyable)."""
        return PlanCache()

    def __getstate__(self) -> dict:
        """Pickles empty, for the same reason."""
        return {"key": None, "plan": None}
