"""Names of MetaWorld's 50 v3 tasks and their actchunk env ids, known without importing MetaWorld.

MetaWorld is an optional extra, and importing it loads all 50 task classes, so ``import envs``
registers the ids from this static list instead; a test checks it equals
``metaworld.env_dict.ALL_V3_ENVIRONMENTS`` whenever MetaWorld is installed.
"""

from __future__ import annotations

METAWORLD_ENV_PREFIX = "actchunk/MetaWorld-"
METAWORLD_MAX_EPISODE_STEPS = 500  # MetaWorld's own task horizon (SawyerXYZEnv.max_path_length)

METAWORLD_TASK_NAMES: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)


def metaworld_env_id(task_name: str) -> str:
    """The gymnasium id of a MetaWorld task: ``pick-place-v3`` -> ``actchunk/MetaWorld-pick-place-v3``."""
    return f"{METAWORLD_ENV_PREFIX}{task_name}"
