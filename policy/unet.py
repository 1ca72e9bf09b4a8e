"""ConditionalUnet1D: Diffusion Policy's 1D temporal UNet over an action chunk, with FiLM conditioning.

The architecture (and so the parameter count) follows Diffusion Policy's global-conditioning UNet:
a sinusoidal timestep embedding through an MLP, concatenated with the flattened observation
features, drives a FiLM (per-channel scale and bias) in every residual block; residual blocks are
Conv1d -> GroupNorm -> Mish twice with a 1x1 residual projection; a down path with stride-2
convolutions, two middle blocks, an up path with transposed convolutions and skip connections.

Written by hand (not taken from a library) because these changes make it faster with the same
parameters:

- All residual blocks' FiLM projections are one fused ``Linear`` (one matmul per call instead of
  one Mish + Linear per block). Its input is ``cat(mish(t_emb), mish(obs))``, so it splits into a
  timestep half and an observation half: ``bind(cond)`` computes the observation half once and the
  returned callable only adds the timestep half per denoising step. ``forward`` is ``bind`` + call.
- Activations are channels_last (B, C, 1, T), i.e. (B, T, C) in memory, and convolutions are
  (1, k) conv2d on them: oneDNN then skips the per-call NCW reorders, and the (B, T, Da) input and
  output need no transposes.
- Tiny CPU convolutions on the module path (at most ``SMALL_CONV_ROWS`` output positions: batch 1
  with autograd or under torch.compile) run as im2col + one matmul, faster there than the library's
  convolution, whose per-call setup dominates. CPU training convolutions under bf16 autocast over short
  sequences (the deep levels, where most of the FLOPs are) run as the same matmul too: oneDNN's bf16
  backward for them is slow, the matmul's is not. Other inputs and CUDA use the library's.
- Mish is ``policy.mish.mish`` (faster on large CPU tensors); the scale-and-shift is one
  ``addcmul`` per block; no einops in the hot path.
- Inference on CPU without autograd, up to ``CPU_PLAN_MAX_ROWS`` positions (batch 32 at horizon
  16), runs ``policy.unet_cpu_inference.CpuInferencePlan``: the same network with prepacked oneDNN
  weights and far fewer ops.

``step_conditioned=True`` (the factory sets it for objectives that condition on a step size, e.g.
shortcut models) adds a second sinusoidal embedding, of the step size, summed into the timestep
embedding; its last layer starts at zero. Without it the module has exactly Diffusion Policy's
parameters, so existing checkpoints load unchanged.

``text_dim > 0`` (instruction-conditioned policies) adds one bias-free Linear from the pooled instruction (B, text_dim)
to all FiLM inputs, summed with the observation half in ``bind(cond, text)``: the instruction enters every residual
block's FiLM beside the observation features, and still costs nothing per denoising step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policy.mish import mish
from policy.text_encoder import TextEncoding
from policy.unet_cpu_inference import CpuInferencePlan, PlanCache


class TimestepEmbedding(nn.Module):
    """Diffusion Policy's sinusoidal embedding of a (B,) timestep, then Linear -> Mish -> Linear (width 4x).

    The angles are computed in float32 whatever the module's dtype, so a bfloat16 copy of a denoiser
    still embeds t = 99 accurately (bfloat16 angles would be off by up to 0.4 rad).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"timestep embedding dim must be even and >= 4, got {dim}; use e.g. 128")
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))

    def forward(self, t: Tensor) -> Tensor:
        """Embed timesteps (B,) -> (B, dim) in the module's dtype."""
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        angles = t.to(torch.float32)[:, None] * freqs  # (B, dim/2)
        emb = torch.cat((angles.sin(), angles.cos()), dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def step_embedding(dim: int) -> TimestepEmbedding:
    """A second scalar embedding (step size) whose last layer starts at zero, so it first leaves the denoiser as is."""
    embedding = TimestepEmbedding(dim)
    nn.init.zeros_(embedding.mlp[-1].weight)
    nn.init.zeros_(embedding.mlp[-1].bias)
    return embedding


def first_rows(bound: Tensor, rows: int) -> Tensor:
    """The first ``rows`` rows of a tensor precomputed for a bound batch (B, ...); ValueError if rows > B."""
    if rows > bound.shape[0]:
        raise ValueError(f"x has {rows} rows but the denoiser was bound to a batch of {bound.shape[0]}")
    return bound if rows == bound.shape[0] else bound[:rows]


def check_text(denoiser: nn.Module, text: TextEncoding | None, batch: int) -> None:
    """ValueError unless ``text`` is given exactly when the denoiser is instruction-conditioned, for ``batch`` rows."""
    name = type(denoiser).__name__
    if text is None and denoiser.text_dim:
        raise ValueError(f"{name} was built for instructions (text_dim={denoiser.text_dim}); bind it with text=")
    if text is not None and not denoiser.text_dim:
        raise ValueError(f"{name} was built without instructions (text_dim=0); bind it without text=")
    if text is not None and (text.pooled.shape != (batch, denoiser.text_dim) or text.tokens.shape[0] != batch):
        raise ValueError(
            f"{name} expects instruction encodings of {batch} rows and width {denoiser.text_dim}, got tokens "
            f"{tuple(text.tokens.shape)} and pooled {tuple(text.pooled.shape)}"
        )


def time_and_step_embedding(denoiser: nn.Module, t: Tensor, step: Tensor | None) -> Tensor:
    """The denoiser's timestep embedding (B, Dt) of t (B,), plus its step-size embedding of step (B,) if it has one.

    Step-conditioned denoisers (``step_embedding`` not None) read step None as step size 0; the others refuse a step.
    """
    emb = denoiser.time_embedding(t)
    if denoiser.step_embedding is None:
        if step is not None:
            raise ValueError(
                f"{type(denoiser).__name__} was built without a step embedding; build it with step_conditioned=True "
                "(the factory does for objectives that condition on the step size, e.g. objective=shortcut)"
            )
        return emb
    step = torch.zeros_like(t) if step is None else step.expand(t.shape[0]) if step.ndim == 0 else step
    return emb + denoiser.step_embedding(step)


# Below this many output positions (batch x length) a CPU convolution runs faster as one matmul.
SMALL_CONV_ROWS = 16
# CPU training convolutions under bf16 autocast with at most this many output steps run as one matmul.
AUTOCAST_CONV_MATMUL_MAX_LENGTH = 8
# Up to this many positions (batch x horizon) CPU inference runs policy.unet_cpu_inference's plan
# (faster than the module path up to batch 32 for [64, 128, 256] and beyond 128 for [256, 512, 1024]).
CPU_PLAN_MAX_ROWS = 512


def to_channels_last(x: Tensor) -> Tensor:
    """(B, T, C) -> (B, C, 1, T) in channels_last format (a view when x is contiguous)."""
    batch, length, channels = x.shape
    return x.reshape(batch, 1, length, channels).permute(0, 3, 1, 2)


def from_channels_last(x: Tensor) -> Tensor:
    """(B, C, 1, T) channels_last -> (B, T, C) (no copy)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def conv1d_as_matmul(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Conv1d as im2col + one matmul: x (B, Cin, 1, T) channels_last, weight (Cout, Cin, k) -> (B, Cout, 1, T_out).

    The columns are k shifted slices concatenated along channels (not ``unfold``): their backward is k slice-adds,
    where unfold's strided copy scatters. Under CPU autocast the input is cast first, so the k-times larger columns
    are built in bfloat16.
    """
    batch = x.shape[0]
    out_channels, in_channels, k = weight.shape
    seq = from_channels_last(x)  # (B, T, Cin)
    if torch.is_autocast_enabled("cpu") and seq.device.type == "cpu":
        seq = seq.to(torch.get_autocast_dtype("cpu"))
    padded = F.pad(seq, (0, 0, padding, padding))
    t_out = (padded.shape[1] - k) // stride + 1
    span = stride * (t_out - 1) + 1
    cols = torch.cat([padded[:, j : j + span : stride] for j in range(k)], dim=-1)  # (B, T_out, k * Cin)
    # (Cout, k * Cin): a view of Conv1d's weight, stored (Cout, k, Cin)
    y = F.linear(cols.reshape(batch * t_out, k * in_channels), weight.transpose(1, 2).reshape(out_channels, -1), bias)
    return to_channels_last(y.view(batch, t_out, out_channels))


def conv_as_matmul_in_training(x: Tensor, t_out: int) -> bool:
    """Whether a CPU training convolution producing t_out positions runs faster as one matmul.

    Under bf16 autocast oneDNN's backward for (1, k) convolutions over short sequences is slow: on a Sapphire Rapids
    core at batch 256 the matmul form's forward + backward took about a quarter of the library's time at length 4,
    half to four fifths at length 8, and lost at length 16; in fp32 the two were even over a whole training step,
    so fp32 keeps the library's. benchmarks/bench_policy.py measures the whole step against LeRobot's.
    """
    if x.device.type != "cpu" or not torch.is_grad_enabled() or not torch.is_autocast_enabled("cpu"):
        return False
    return t_out <= AUTOCAST_CONV_MATMUL_MAX_LENGTH


class Conv1d(nn.Conv1d):
    """nn.Conv1d run as a (1, k) conv2d on channels_last (B, C, 1, T) activations.

    oneDNN convolves channels_last directly instead of reordering NCW inputs on every call. Tiny CPU
    inputs (batch-1 inference) run as one matmul. The weight keeps its (Cout, Cin, k) shape but is
    stored (Cout, k, Cin) in memory, oneDNN's layout for channels_last, so no call reorders it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight = nn.Parameter(self.weight.detach().transpose(1, 2).contiguous().transpose(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, 1, T) -> (B, Cout, 1, T_out), channels_last."""
        stride, padding = self.stride[0], self.padding[0]
        t_out = (x.shape[3] + 2 * padding - self.kernel_size[0]) // stride + 1
        small = x.device.type == "cpu" and x.shape[0] * t_out <= SMALL_CONV_ROWS
        if small or conv_as_matmul_in_training(x, t_out):
            return conv1d_as_matmul(x, self.weight, self.bias, stride, padding)
        return F.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, stride), (0, padding))


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d on channels_last (B, C, 1, T); tiny CPU inputs run as a matmul + overlap-add."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, 1, T) -> (B, Cout, 1, T_out), channels_last."""
        batch, in_channels, _, length = x.shape
        stride, padding, k = self.stride[0], self.padding[0], self.kernel_size[0]
        if x.device.type != "cpu" or batch * length * stride > SMALL_CONV_ROWS or self.output_padding[0]:
            y = F.conv_transpose2d(x, self.weight.unsqueeze(2), self.bias, (1, stride), (0, padding))
            return y.contiguous(memory_format=torch.channels_last)
        out_channels = self.weight.shape[1]
        cols = from_channels_last(x).reshape(batch * length, in_channels) @ self.weight.view(in_channels, -1)
        cols = cols.view(batch, length, out_channels * k).transpose(1, 2)  # (B, Cout * k, T)
        full = (length - 1) * stride + k
        y = F.fold(cols, (1, full), kernel_size=(1, k), stride=(1, stride))[..., padding : full - padding]
        return (y + self.bias[:, None, None]).contiguous(memory_format=torch.channels_last)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length-preserving."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, 1, T) -> (B, Cout, 1, T), channels_last."""
        return mish(self.norm(self.conv(x)))


class FiLMResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with a FiLM (scale, bias) between them and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.residual = Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.film_size = 2 * out_channels

    def forward(self, x: Tensor, film: Tensor) -> Tensor:
        """x (B, Cin, 1, T), film (B, 2 * Cout) = [scale, bias] -> (B, Cout, 1, T), channels_last."""
        scale, bias = film[:, :, None, None].chunk(2, dim=1)  # (B, Cout, 1, 1) each
        h = torch.addcmul(bias, self.block1(x), scale)
        return self.block2(h) + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """Diffusion Policy's UNet: denoiser(x (B, T, Da), t (B,), cond (B, To, Dc)) -> (B, T, Da)."""

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        n_obs_steps: int,
        horizon: int,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        diffusion_step_embed_dim: int = 128,
        step_conditioned: bool = False,
        text_dim: int = 0,
    ) -> None:
        """step_conditioned adds a step-size embedding summed into the timestep's (no parameters otherwise).

        ``text_dim`` > 0 (the factory sets it for instruction-conditioned policies) adds a FiLM input from the pooled
        instruction (B, text_dim) beside the observation features; 0 keeps Diffusion Policy's parameters.
        """
        super().__init__()
        down_dims = list(down_dims)
        if not down_dims:
            raise ValueError("ConditionalUnet1D needs at least one entry in down_dims, e.g. [256, 512, 1024]")
        bad = [d for d in down_dims if d % n_groups]
        if bad:
            raise ValueError(f"down_dims {bad} are not divisible by n_groups={n_groups}; change one of them")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the chunk length, got {kernel_size}")
        if horizon % 2 ** (len(down_dims) - 1):
            raise ValueError(
                f"horizon={horizon} must be a multiple of 2^(len(down_dims) - 1) = {2 ** (len(down_dims) - 1)}; "
                "change the horizon or the number of down_dims"
            )
        self.action_dim = action_dim
        self.cond_dim = cond_dim
        self.n_obs_steps = n_obs_steps
        self.horizon = horizon
        self.time_embedding = TimestepEmbedding(diffusion_step_embed_dim)
        self.step_embedding = step_embedding(diffusion_step_embed_dim) if step_conditioned else None

        def block(cin: int, cout: int) -> FiLMResidualBlock1D:
            return FiLMResidualBlock1D(cin, cout, kernel_size, n_groups)

        dims = [action_dim] + down_dims
        levels = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(levels):
            last = i == len(levels) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        block(cin, cout),
                        block(cout, cout),
                        nn.Identity() if last else Conv1d(cout, cout, 3, stride=2, padding=1),
                    ]
                )
            )
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for cin, cout in reversed(levels[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        block(cout * 2, cin),
                        block(cin, cin),
                        ConvTranspose1d(cin, cin, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final_block = Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups)
        self.final_conv = Conv1d(down_dims[0], action_dim, 1)

        film_blocks = [m for m in self.modules() if isinstance(m, FiLMResidualBlock1D)]
        self.film_sizes = [b.film_size for b in film_blocks]
        # Every block's FiLM Linear stacked (Diffusion Policy's per-block Mish + Linear on cat(t_emb, obs)),
        # stored as its timestep columns and its observation columns: same parameters, split use.
        self.film_time = nn.Linear(diffusion_step_embed_dim, sum(self.film_sizes), bias=False)
        self.film_obs = nn.Linear(n_obs_steps * cond_dim, sum(self.film_sizes))
        bound = (diffusion_step_embed_dim + n_obs_steps * cond_dim) ** -0.5  # nn.Linear's init of the joint layer
        for p in (self.film_time.weight, self.film_obs.weight, self.film_obs.bias):
            nn.init.uniform_(p, -bound, bound)
        self.text_dim = text_dim
        self.film_text = nn.Linear(text_dim, sum(self.film_sizes), bias=False) if text_dim else None
        self._cpu_plans = PlanCache()  # not a submodule: no state_dict entries

    def uses_cpu_plan(self, batch: int, device: torch.device) -> bool:
        """Whether bind() under no_grad/inference_mode takes the small-batch CPU inference path."""
        return device.type == "cpu" and not torch.is_grad_enabled() and batch * self.horizon <= CPU_PLAN_MAX_ROWS

    def embed_time(self, t: Tensor, step: Tensor | None = None) -> Tensor:
        """Timestep embedding (B, Dt) of t (B,), plus the step-size embedding of step (B,) when step-conditioned."""
        return time_and_step_embedding(self, t, step)

    def bind(self, cond: Tensor, text: TextEncoding | None = None) -> Callable[..., Tensor]:
        """Precompute the observation (and instruction) part of the FiLM from cond (B, To, Dc); returns (x, t[, step]).

        ``text``: the encoded instruction of an instruction-conditioned UNet (its pooled (B, text_dim) enters the
        FiLM). The returned callable also takes the first B' <= B rows of the bound batch (x (B', T, Da), t (B',)).
        """
        if cond.ndim != 3 or cond.shape[1:] != (self.n_obs_steps, self.cond_dim):
            raise ValueError(
                f"ConditionalUnet1D expects cond of shape (B, {self.n_obs_steps}, {self.cond_dim}), "
                f"got {tuple(cond.shape)}; check n_obs_steps and the encoder's output_dim"
            )
        check_text(self, text, cond.shape[0])
        obs_film = self.film_obs(F.mish(cond.flatten(1)))  # (B, F)
        if text is not None:
            obs_film = obs_film + self.film_text(F.mish(text.pooled))  # (B, F)
        plan = self._cpu_plans.get(self) if self.uses_cpu_plan(cond.shape[0], cond.device) else None
        return functools.partial(self._denoise, obs_film=obs_film, plan=plan)

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
        obs_film: Tensor,
        plan: CpuInferencePlan | None = None,
    ) -> Tensor:
        """Run the UNet with a precomputed observation FiLM half (B, F), on ``plan`` when given and grad is off."""
        if x.ndim != 3 or x.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(
                f"ConditionalUnet1D expects x of shape (B, {self.horizon}, {self.action_dim}), got {tuple(x.shape)}"
            )
        obs_film = first_rows(obs_film, x.shape[0])  # (B', F)
        if plan is not None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return plan.denoise(x, t, obs_film, step)  # eager only: torch.compile traces the module path below
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        t_emb = F.mish(self.embed_time(t, step))  # (B, Dt)
        films = iter(torch.addmm(obs_film, t_emb, self.film_time.weight.t()).split(self.film_sizes, dim=1))

        h = to_channels_last(x)  # (B, Da, 1, T)
        skips = []
        for block1, block2, downsample in self.down:
            h = block2(block1(h, next(films)), next(films))
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, next(films))
        for block1, block2, upsample in self.up:
            h = torch.cat((h, skips.pop()), dim=1)
            h = block2(block1(h, next(films)), next(films))
            h = upsample(h)
        h = self.final_conv(self.final_block(h))  # (B, Da, 1, T)
        return from_channels_last(h)
