"""LeRobot's dataset format v3.0: its paths, its feature dtypes, and the key names on our side and on LeRobot's.

A LeRobot v3.0 dataset directory::

    meta/info.json                                  codebase_version "v3.0", fps, features {key: dtype, shape, names}
    meta/stats.json                                 {key: {min, max, mean, std, count, ...}}
    meta/tasks.parquet                              task strings (the pandas index) -> task_index
    meta/episodes/chunk-XXX/file-YYY.parquet        one row per episode: length, tasks, which data and video file
                                                    holds it, its rows (dataset_from/to_index) and its time span in
                                                    each video (videos/<key>/from_timestamp, to_timestamp)
    data/chunk-XXX/file-YYY.parquet                 one row per frame: the non-video features, timestamp,
                                                    frame_index, episode_index, index, task_index
    videos/<key>/chunk-XXX/file-YYY.mp4             the frames of the video keys, episodes one after another

Files hold many episodes and chunk directories many files (``chunks_size``); data and video files are
numbered independently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CODEBASE_VERSION = "v3.0"
INFO_PATH = Path("meta", "info.json")
STATS_PATH = Path("meta", "stats.json")
TASKS_PATH = Path("meta", "tasks.parquet")
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # LeRobot adds these itself
NUMERIC_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)
IMAGE_DTYPES = ("video", "image")  # video: frames in mp4 files; image: PNG/JPEG bytes in the data parquet
CONVERTER = (
    "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id={repo_id} --root={root} --push-to-hub=false"
)


class LeRobotFormatError(ValueError):
    """A directory that is not a LeRobot v3.0 dataset, or one whose parts disagree."""


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json of a v3.0 dataset; LeRobotFormatError (with LeRobot's converter command for v2.x) otherwise."""
    path = root / INFO_PATH
    if not root.is_dir():
        raise LeRobotFormatError(f"{root}: no such directory")
    if not path.is_file():
        raise LeRobotFormatError(f"{root}: no {INFO_PATH}; not a LeRobot dataset directory")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LeRobotFormatError(f"{path}: not valid JSON ({exc})") from None
    version = str(info.get("codebase_version", "unknown"))
    if version.startswith(("v1.", "v2.")):
        command = CONVERTER.format(repo_id=f"local/{root.name}", root=root)
        raise LeRobotFormatError(
            f"{root} is a LeRobot {version} dataset; this reads {CODEBASE_VERSION}: convert it with LeRobot's "
            f"converter first (it works in place): {command}"
        )
    if not version.startswith("v3."):
        raise LeRobotFormatError(f"{root}: codebase_version {version!r} is not {CODEBASE_VERSION}")
    for key in ("fps", "features", "chunks_size"):
        if key not in info:
            raise LeRobotFormatError(f"{path} has no {key!r}")
    return info


def default_import_name(key: str, state_key: str) -> str:
    """Our store key for a LeRobot feature: observation.image -> image, observation.images.<cam> -> <cam>_image,
    observation.state -> ``state_key``, observation.environment_state -> state (when ``state_key`` is agent_pos),
    next.reward -> reward, action -> action, others without ``observation.`` and with dots as underscores."""
    if key == "observation.image":
        return "image"
    if key.startswith("observation.images."):
        return key.removeprefix("observation.images.").replace(".", "_") + "_image"
    if key == "observation.state":
        return state_key
    if key == "observation.environment_state" and state_key != "state":
        return "state"
    if key == "next.reward":
        return "reward"
    return key.removeprefix("observation.").replace(".", "_")


def default_export_name(key: str, keys: Sequence[str]) -> str:
    """LeRobot's feature name for our store key (the inverse of ``default_import_name``; ``keys``: the store's).

    agent_pos -> observation.state and state -> observation.environment_state, or state -> observation.state
    when the store has no agent_pos.
    """
    if key == "image":
        return "observation.image"
    if key.endswith("_image"):
        return "observation.images." + key.removesuffix("_image")
    if key == "agent_pos" or (key == "state" and "agent_pos" not in keys):
        return "observation.state"
    if key == "state":
        return "observation.environment_state"
    if key in ("action", "reward"):
        return "action" if key == "action" else "next.reward"
    return "observation." + key


def parse_map(items: Sequence[str]) -> dict[str, str]:
    """``SRC=DST`` items as a dict (an empty DST drops SRC); LeRobotFormatError for anything else."""
    out = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src:
            raise LeRobotFormatError(f"--map expects SRC=DST (or SRC= to leave SRC out), got {item!r}")
        out[src] = dst
    return out


def resolve_names(
    keys: Sequence[str], defaults: Mapping[str, str], key_map: Mapping[str, str], side: str
) -> dict[str, str]:
    """{source key: destination key} for ``keys``, the overrides of ``key_map`` applied (empty: left out).

    LeRobotFormatError if ``key_map`` names an unknown key or two sources land on one destination.
    """
    unknown = sorted(set(key_map) - set(keys))
    if unknown:
        raise LeRobotFormatError(f"--map names {unknown}, which the {side} does not have; it has {sorted(keys)}")
    names = {key: key_map.get(key, defaults[key]) for key in keys}
    names = {src: dst for src, dst in names.items() if dst}
    seen: dict[str, str] = {}
    for src, dst in names.items():
        if dst in seen:
            raise LeRobotFormatError(f"{seen[dst]!r} and {src!r} would both become {dst!r}; rename one with --map")
        seen[dst] = src
    return names
