"""Import a LeRobot v3.0 dataset directory into a zarr ``ReplayBuffer`` (``python -m data.lerobot_io import``).

Episodes are imported in episode_index order, each from its rows of the data parquet files and its time span
in each video file (decoded to uint8 frames with PyAV, optionally resized); every frame must be there (a
missing video file, a frame missing from a video, rows that disagree with the episode's length are one-line
errors). Each episode's task string becomes ``meta/instruction`` (one per episode: an episode whose frames
carry several tasks is refused), its LeRobot index ``meta/lerobot_episode``; fps goes to the store's attrs.
Everything is checked before and while the store is built beside its path; a failure leaves nothing behind.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from data.atomic import check_output
from data.lerobot_format import (
    DATA_PATH,
    IMAGE_DTYPES,
    INDEX_FEATURES,
    NUMERIC_DTYPES,
    TASKS_PATH,
    VIDEO_PATH,
    LeRobotFormatError,
    default_import_name,
    read_info,
    resolve_names,
)
from data.replay_buffer import ReplayBuffer, is_zarr_store
from data.video_io import VideoReader, resize_rgb


def _read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A parquet table; LeRobotFormatError naming the file if it is missing or unreadable."""
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: file not found")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise LeRobotFormatError(f"{path}: not a readable parquet file or missing columns ({exc})") from None


def read_tasks(root: Path) -> list[str]:
    """The task strings by task_index (meta/tasks.parquet: the task is the pandas index or a ``task`` column)."""
    table = _read_parquet(root / TASKS_PATH)
    meta = table.schema.pandas_metadata or {}
    index_columns = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    column = "task" if "task" in table.column_names else (index_columns[0] if index_columns else None)
    if column is None or "task_index" not in table.column_names:
        raise LeRobotFormatError(f"{root / TASKS_PATH}: expected task strings and a task_index column")
    order = np.asarray(table["task_index"])
    tasks = table[column].to_pylist()
    if sorted(order.tolist()) != list(range(len(order))):
        raise LeRobotFormatError(f"{root / TASKS_PATH}: task_index is not 0..{len(order) - 1}")
    return [tasks[i] for i in np.argsort(order)]


def read_episodes(root: Path, total: int) -> list[dict[str, Any]]:
    """One dict per episode (meta/episodes/*/*.parquet without the stats columns), in episode_index order."""
    paths = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not paths:
        raise LeRobotFormatError(f"{root}: no meta/episodes/chunk-*/file-*.parquet")
    tables = [_read_parquet(p) for p in paths]
    rows = []
    for table in tables:
        table = table.select([c for c in table.column_names if not c.startswith("stats/")])
        rows.extend(table.to_pylist())
    rows.sort(key=lambda r: r["episode_index"])
    indices = [r["episode_index"] for r in rows]
    if indices != list(range(len(rows))) or len(rows) != total:
        raise LeRobotFormatError(
            f"{root}: meta/episodes holds episodes {indices[:5]}... ({len(rows)}), info.json says {total}"
        )
    return rows


def _column(table: pa.Table, key: str, feature: Mapping[str, Any], where: str) -> np.ndarray:
    """A numeric feature's column as (T, *shape) in its dtype."""
    shape = tuple(feature["shape"])
    values = table[key].combine_chunks()
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        values = values.flatten()
    array = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.dtype(feature["dtype"]))
    try:
        return array.reshape(len(table), *shape)
    except ValueError:
        raise LeRobotFormatError(f"{where}: {key} holds {array.size} values, not {len(table)} x {shape}") from None


def _images(table: pa.Table, key: str, size: tuple[int, int] | None) -> np.ndarray:
    """An ``image`` feature's encoded images (struct of bytes and path) as (T, H, W, 3) uint8."""
    out = []
    for item in table[key].to_pylist():
        with Image.open(io.BytesIO(item["bytes"])) as img:
            rgb = np.asarray(img.convert("RGB"))
        out.append(rgb if size is None else resize_rgb(rgb, size))
    return np.stack(out)


def data_file(info: Mapping[str, Any], episode: Mapping[str, Any]) -> str:
    """The data parquet file of an episode, relative to the dataset (info.json's data_path template)."""
    template = info.get("data_path") or DATA_PATH
    return template.format(chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"])


def video_file(info: Mapping[str, Any], key: str, episode: Mapping[str, Any]) -> str:
    """The video file of an episode's ``key``, relative to the dataset (info.json's video_path template)."""
    template = info.get("video_path") or VIDEO_PATH
    return template.format(
        video_key=key,
        chunk_index=episode[f"videos/{key}/chunk_index"],
        file_index=episode[f"videos/{key}/file_index"],
    )


class _DataFiles:
    """The rows of one episode from data/chunk-*/file-*.parquet, one file in memory at a time."""

    def __init__(self, root: Path, info: Mapping[str, Any], columns: list[str]) -> None:
        self.root, self.info, self.columns = root, info, columns
        self.path: Path | None = None  # the file in memory
        self._table: pa.Table | None = None
        self._index: np.ndarray | None = None

    def rows(self, episode: Mapping[str, Any]) -> pa.Table:
        """The rows whose ``index`` is in the episode's [dataset_from_index, dataset_to_index)."""
        path = self.root / data_file(self.info, episode)
        if path != self.path:
            self._table = _read_parquet(path, self.columns)
            self._index = np.asarray(self._table["index"])
            self.path = path
        start, stop = episode["dataset_from_index"], episode["dataset_to_index"]
        rows = np.flatnonzero((self._index >= start) & (self._index < stop))
        return self._table.take(rows)


def _episode_frames(
    root: Path,
    info: Mapping[str, Any],
    episodes: list[dict[str, Any]],
    names: Mapping[str, str],
    tasks: list[str],
    image_size: tuple[int, int] | None,
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """(data, meta) of each episode in order, every part checked against the episode's length."""
    features = info["features"]
    table_keys = [k for k in names if features[k]["dtype"] != "video"]
    data_files = _DataFiles(root, info, [*table_keys, *INDEX_FEATURES])
    readers: dict[str, VideoReader] = {}
    try:
        for ep in episodes:
            e, length = ep["episode_index"], ep["length"]
            where = f"{root}: episode {e}"
            rows = data_files.rows(ep)
            if len(rows) != length:
                raise LeRobotFormatError(f"{where} has {len(rows)} rows in {data_files.path}, its length is {length}")
            frame_index = np.asarray(rows["frame_index"])
            if not np.array_equal(frame_index, np.arange(length)) or np.any(np.asarray(rows["episode_index"]) != e):
                raise LeRobotFormatError(
                    f"{where}: its rows' frame_index is not 0..{length - 1} or episode_index not {e}"
                )
            task_ids = np.unique(np.asarray(rows["task_index"]))
            if len(task_ids) != 1 or not 0 <= task_ids[0] < len(tasks):
                raise LeRobotFormatError(
                    f"{where} has task_index {task_ids.tolist()}; one task per episode, from meta/tasks.parquet"
                )
            timestamps = np.asarray(rows["timestamp"], dtype=np.float64)
            data = {}
            for key, ours in names.items():
                dtype = features[key]["dtype"]
                if dtype == "video":
                    path = root / video_file(info, key, ep)
                    if key not in readers or readers[key].path != path:
                        if key in readers:
                            readers[key].close()
                        readers[key] = VideoReader(path, image_size)
                    data[ours] = readers[key].frames_at(ep[f"videos/{key}/from_timestamp"] + timestamps)
                elif dtype == "image":
                    data[ours] = _images(rows, key, image_size)
                else:
                    data[ours] = _column(rows, key, features[key], where)
            yield data, {"instruction": tasks[int(task_ids[0])], "lerobot_episode": int(e)}
    finally:
        for reader in readers.values():
            reader.close()


def import_lerobot(
    root: str | Path,
    zarr_path: str | Path,
    *,
    key_map: Mapping[str, str] | None = None,
    state_key: str = "agent_pos",
    image_size: tuple[int, int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ReplayBuffer:
    """Import the LeRobot v3.0 dataset at ``root`` into a new store; ``key_map``: LeRobot key -> ours ('' drops it)."""
    root, zarr_path = Path(root), Path(zarr_path)
    info = read_info(root)
    check_output(root, zarr_path, overwrite, is_zarr_store, "a zarr store")
    features = {k: v for k, v in info["features"].items() if k not in INDEX_FEATURES}
    defaults = {k: default_import_name(k, state_key) for k in features}
    names = resolve_names(list(features), defaults, key_map or {}, "dataset")
    for key in names:
        dtype = features[key].get("dtype")
        if dtype not in NUMERIC_DTYPES + IMAGE_DTYPES:
            raise LeRobotFormatError(
                f"{root}: feature {key!r} has dtype {dtype!r}, which a store cannot hold (known: "
                f"{', '.join(NUMERIC_DTYPES + IMAGE_DTYPES)}); leave it out with --map {key}="
            )
    if "action" not in names.values():
        raise LeRobotFormatError(f"{root}: no feature becomes 'action'; name it with --map <feature>=action")
    tasks = read_tasks(root)
    episodes = read_episodes(root, int(info.get("total_episodes", 0)))
    for key in (k for k in names if features[k]["dtype"] == "video"):
        missing = sorted(p for p in {video_file(info, key, ep) for ep in episodes} if not (root / p).is_file())
        if missing:
            raise LeRobotFormatError(f"{root}: video file {missing[0]} is missing ({len(missing)} missing)")
    attrs = {
        "source": str(root),
        "format_source": f"lerobot/{info['codebase_version']}",
        "task": root.name,
        "fps": info["fps"],
        "obs_keys": sorted(v for v in names.values() if v not in ("action", "reward")),
        "lerobot_keys": {ours: theirs for theirs, ours in names.items()},
        "robot_type": info.get("robot_type"),
    }
    frames = _episode_frames(root, info, episodes, names, tasks, image_size)
    with ReplayBuffer.building(zarr_path, attrs=attrs, overwrite=overwrite) as buf:
        bar = tqdm(frames, total=len(episodes), desc=f"import {root.name}", unit="ep", disable=not progress)
        for data, meta in bar:
            buf.add_episode(data, meta)
    return ReplayBuffer.open(zarr_path)
