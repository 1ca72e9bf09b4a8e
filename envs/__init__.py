"""actchunk's MuJoCo tasks, registered with gymnasium as ``actchunk/<Task>-v0``.

Importing this package only registers entry-point strings: MuJoCo and its renderer are imported when
an env is first made. ``MUJOCO_GL`` is chosen here (EGL, else OSMesa) so that it is set before any
later ``import mujoco``.
"""

from __future__ import annotations

import gymnasium

from envs.gl import select_gl_backend

select_gl_backend()

# env id -> (entry point, max episode steps)
TASKS: dict[str, tuple[str, int]] = {
    "actchunk/PushT-v0": ("envs.push_t:PushTEnv", 300),
    "actchunk/PushAround-v0": ("envs.push_around:PushAroundEnv", 100),
    "actchunk/PickPlace-v0": ("envs.pick_place:PickPlaceEnv", 200),
}

for _env_id, (_entry_point, _max_steps) in TASKS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point, max_episode_steps=_max_steps)
