"""Time LeRobot's DiffusionPolicy (Diffusion Policy's UNet) on one config: bench_policy.py's reference side.

Runs inside LeRobot's own environment (``../shared/perfref/README.md`` installs it), so it imports nothing
from actchunk; bench_policy.py starts it with that interpreter between its own measurements, so both sides
are timed on the same machine in the same run. Prints one JSON object: parameter counts and median
milliseconds of ``generate_actions`` (one chunk at batch 1, DDIM-10) and of a training step
(``forward`` + backward + AdamW) at the given batch, in fp32 or under bf16 autocast.

    <lerobot venv>/bin/python benchmarks/lerobot_reference.py --down-dims 64 128 256 --state-dim 20 --batch 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

HORIZON, N_OBS, N_ACT = 16, 2, 8


def median_ms(fn: Callable[[], object], reps: int, warmup: int) -> float:
    """Median wall time (ms) of fn over reps calls after warmup calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def build(args: argparse.Namespace) -> tuple[DiffusionPolicy, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The policy, a batch-1 inference batch and a training batch (random data, normalization off)."""
    # LeRobot always conditions on observation.state and wants an image or an environment state beside it; a
    # low-dim config splits its state into the two, so the UNet sees the same conditioning width as ours.
    state_dim = args.state_dim if args.image_size else args.state_dim // 2
    env_dim = 0 if args.image_size else args.state_dim - state_dim
    features = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))}
    if env_dim:
        features["observation.environment_state"] = PolicyFeature(type=FeatureType.ENV, shape=(env_dim,))
    if args.image_size:
        features["observation.image"] = PolicyFeature(
            type=FeatureType.VISUAL, shape=(3, args.image_size, args.image_size)
        )
    cfg = DiffusionConfig(
        input_features=features,
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(args.action_dim,))},
        device="cpu",
        n_obs_steps=N_OBS,
        horizon=HORIZON,
        n_action_steps=N_ACT,
        down_dims=tuple(args.down_dims),
        diffusion_step_embed_dim=128,
        noise_scheduler_type="DDIM",
        num_inference_steps=10,
        crop_shape=(args.crop_size, args.crop_size) if args.image_size else None,
        use_group_norm=True,
        pretrained_backbone_weights=None,
    )
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    g = torch.Generator().manual_seed(0)

    def batch(size: int) -> dict[str, torch.Tensor]:
        out = {"action": torch.randn(size, HORIZON, args.action_dim, generator=g)}
        out["action_is_pad"] = torch.zeros(size, HORIZON, dtype=torch.bool)
        out["observation.state"] = torch.randn(size, N_OBS, state_dim, generator=g)
        if env_dim:
            out["observation.environment_state"] = torch.randn(size, N_OBS, env_dim, generator=g)
        if args.image_size:
            out["observation.images"] = torch.rand(size, N_OBS, 1, 3, args.image_size, args.image_size, generator=g)
            out["observation.image"] = out["observation.images"][:, :, 0]
        return out

    return policy, batch(1), batch(args.batch)


def main() -> None:
    """Parse the config, time both measurements, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down-dims", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--state-dim", type=int, default=20, help="low-dim observation size")
    parser.add_argument("--image-size", type=int, default=0, help="square image side (0: no image)")
    parser.add_argument("--crop-size", type=int, default=76)
    parser.add_argument("--action-dim", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="training batch")
    parser.add_argument("--bf16", action="store_true", help="train under bf16 autocast")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy, infer, train = build(args)
    unet = sum(p.numel() for p in policy.diffusion.unet.parameters())
    encoder = sum(p.numel() for p in policy.parameters()) - unet
    out = {"denoiser_parameters": unet, "encoder_parameters": encoder}

    policy.eval()
    with torch.inference_mode():
        out["predict_ddim10_ms"] = median_ms(lambda: policy.diffusion.generate_actions(infer), args.reps, 2)
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, weight_decay=1e-6)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss, _ = policy.forward(train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    out["train_step_ms"] = median_ms(step, max(3, args.reps // 2), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
