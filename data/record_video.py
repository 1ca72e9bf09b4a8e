"""Write a short mp4 of the scripted expert acting in a task (render() frames, one episode after another).

python -m data.record_video --env actchunk/PushAround-v0 --out outputs/videos/push_around.mp4 --episodes 4
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import gymnasium
import imageio.v2 as imageio
import numpy as np

import envs
from data.atomic import atomic_path
from envs import check_env_id
from envs.experts import make_expert

HOLD_STEPS = 5  # frames kept after the first success before the next episode starts


def record_expert_video(
    env_id: str, out: str | Path, *, episodes: int = 2, seed: int = 0, render_size: int = 256
) -> dict:
    """Roll out the expert for `episodes` seeded episodes, write the frames to `out` (mp4), return per-episode stats."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    check_env_id(env_id)
    env = gymnasium.make(env_id, render_size=render_size, include_image=False, disable_env_checker=True)
    expert = make_expert(env_id)
    stats = []
    with atomic_path(out) as tmp, imageio.get_writer(tmp, fps=env.metadata["render_fps"], macro_block_size=1) as writer:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            expert.reset(env, np.random.default_rng([seed + episode, 1]))
            writer.append_data(env.render())
            steps, success, steps_after_success = 0, bool(info["is_success"]), 0
            while steps_after_success <= HOLD_STEPS:
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                writer.append_data(env.render())  # (render_size, render_size, 3) uint8
                steps += 1
                success = success or bool(info["is_success"])
                steps_after_success += success
                if terminated or truncated:
                    break
            stats.append(
                {"seed": seed + episode, "mode": expert.mode_names[expert.mode], "steps": steps, "success": success}
            )
    env.close()
    return {"out": str(out), "episodes": stats}


def main() -> None:
    """Command line: record a video of the expert for one task."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="actchunk/PushAround-v0", help=f"task id, one of {sorted(envs.TASKS)}")
    parser.add_argument("--out", default=None, help="mp4 path (default outputs/videos/<task in snake case>.mp4)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes in the video")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--size", type=int, default=256, help="frame side (px)")
    args = parser.parse_args()
    task = re.sub(r"(?<!^)(?=[A-Z])", "_", args.env.split("/")[-1].removesuffix("-v0")).lower()
    out = args.out or f"outputs/videos/{task}.mp4"
    result = record_expert_video(args.env, out, episodes=args.episodes, seed=args.seed, render_size=args.size)
    for episode in result["episodes"]:
        print(f"seed {episode['seed']}: mode {episode['mode']}, {episode['steps']} steps, success {episode['success']}")
    print(f"wrote {result['out']}")


if __name__ == "__main__":
    main()
