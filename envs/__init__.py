"""actchunk's MuJoCo tasks, registered with gymnasium as ``actchunk/<Task>-v0``, and MetaWorld's v3 tasks as
``actchunk/MetaWorld-<task name>`` (optional extra ``metaworld``, imported only when such an env is made).

Importing this package only registers entry-point strings: MuJoCo and its renderer are imported when
an env is first made. ``MUJOCO_GL`` is chosen here (EGL, else OSMesa) so that it is set before any
later ``import mujoco``.
"""

from __future__ import annotations

import gymnasium

from envs.gl import preload_triton, quiet_pyopengl, select_gl_backend
from envs.metaworld_tasks import METAWORLD_MAX_EPISODE_STEPS, METAWORLD_TASK_NAMES, metaworld_env_id

select_gl_backend()
quiet_pyopengl()
preload_triton()  # before any GL context: see envs/gl.py

# env id -> (entry point, max episode steps)
TASKS: dict[str, tuple[str, int]] = {
    "actchunk/PushT-v0": ("envs.push_t:PushTEnv", 300),
    "actchunk/PushAround-v0": ("envs.push_around:PushAroundEnv", 100),
    "actchunk/PickPlace-v0": ("envs.pick_place:PickPlaceEnv", 200),
}

for _env_id, (_entry_point, _max_steps) in TASKS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point, max_episode_steps=_max_steps)

# env id -> MetaWorld task name
METAWORLD_TASKS: dict[str, str] = {metaworld_env_id(name): name for name in METAWORLD_TASK_NAMES}

for _env_id, _task_name in METAWORLD_TASKS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(
            id=_env_id,
            entry_point="envs.metaworld:MetaWorldEnv",
            max_episode_steps=METAWORLD_MAX_EPISODE_STEPS,
            kwargs={"task_name": _task_name},
        )


def check_env_id(env_id: str) -> None:
    """ValueError naming the valid ids unless ``env_id`` is one of our tasks or a MetaWorld v3 task."""
    if env_id not in TASKS and env_id not in METAWORLD_TASKS:
        raise ValueError(
            f"unknown env id {env_id!r} (a task's env_id); "
            f"choose one of {sorted(TASKS)} or actchunk/MetaWorld-<v3 task name>"
        )
