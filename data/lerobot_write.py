"""Export a zarr ``ReplayBuffer`` to a LeRobot v3.0 dataset directory (``python -m data.lerobot_io export``).

Image keys ((T, H, W, 3) uint8) become video features, encoded to mp4 with LeRobot's settings (AV1 through
libsvtav1 by default, or H.264); the other keys become numeric features of the data parquet files (a
(T,) or (T, 1) key has LeRobot's shape (1,)). Episodes go one after another into data and video files,
a new file when the next episode would pass the size limit (uncompressed table bytes for data, encoded
bytes for video) and a new chunk directory every ``chunks_size`` files, as LeRobot's writer does. Each
episode's task is its ``meta/instruction`` when the store has one, else the store's ``task`` attribute.
Also written: meta/info.json (features with dtype, shape and names, the video codec), meta/stats.json
(min, max, mean, std, count, and quantiles q01..q99 for the numeric features; images per channel in
[0, 1]), per-episode stats in meta/episodes, meta/tasks.parquet. The directory is built beside its
path and renamed into place at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data.atomic import atomic_dir, check_output
from data.lerobot_format import (
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VIDEO_PATH,
    LeRobotFormatError,
    default_export_name,
    resolve_names,
)
from data.replay_buffer import ReplayBuffer
from data.video_io import VideoWriter

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's DEFAULT_QUANTILES
VIDEO_CODEC_NAMES = {"libsvtav1": "av1", "h264": "h264"}  # what info.json's video.codec says


def is_lerobot_dir(path: Path) -> bool:
    """Whether ``path`` is a directory with meta/info.json (what ``overwrite`` may replace)."""
    return path.is_dir() and (path / INFO_PATH).is_file()


def _is_image(array: Any) -> bool:
    """Whether a store array holds RGB frames: (N, H, W, 3) uint8."""
    return array.dtype == np.uint8 and len(array.shape) == 4 and array.shape[-1] == 3


def _feature(key: str, array: Any) -> dict[str, Any]:
    """LeRobot's feature entry (dtype, shape, names) for a store array."""
    shape = tuple(array.shape[1:])
    if _is_image(array):
        return {"dtype": "video", "shape": list(shape), "names": ["height", "width", "channels"]}
    if len(shape) > 1 or array.dtype.kind not in "biuf":
        raise LeRobotFormatError(
            f"store key {key!r} has per-step shape {shape} and dtype {array.dtype}; LeRobot features here are "
            "(H, W, 3) uint8 images or vectors: leave it out with --map {key}="
        )
    width = shape[0] if shape else 1
    return {"dtype": str(array.dtype), "shape": [width], "names": [f"{key}_{i}" for i in range(width)]}


def _arrow_column(values: np.ndarray, width: int) -> pa.Array:
    """Values (T, ...) as LeRobot's column: a scalar column for shape (1,), else a fixed-size list of ``width``."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return flat if width == 1 else pa.FixedSizeListArray.from_arrays(flat, width)


def _vector_stats(values: np.ndarray) -> dict[str, Any]:
    """min, max, mean, std, count and quantiles per dimension of (T, ...) values (LeRobot's stats of a vector)."""
    x = values.reshape(len(values), -1).astype(np.float64)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    stats.update({name: np.quantile(x, q, axis=0) for name, q in QUANTILES.items()})
    out: dict[str, Any] = {k: v.tolist() for k, v in stats.items()}
    out["count"] = [len(x)]
    return out


class _ImageStats:
    """Per-channel min, max, mean, std of uint8 frames in [0, 1], shaped (3, 1, 1) as LeRobot stores them."""

    def __init__(self) -> None:
        self.sum = np.zeros(3)
        self.sumsq = np.zeros(3)
        self.min = np.full(3, 255.0)
        self.max = np.zeros(3)
        self.pixels = 0
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        """Fold in (T, H, W, 3) uint8 frames."""
        x = frames.reshape(-1, 3).astype(np.float64) / 255.0
        self.sum += x.sum(0)
        self.sumsq += (x * x).sum(0)
        self.min = np.minimum(self.min, x.min(0))
        self.max = np.maximum(self.max, x.max(0))
        self.pixels += len(x)
        self.frames += len(frames)

    def result(self) -> dict[str, Any]:
        """The stats dict (each value a (3, 1, 1) nested list, count a 1-list)."""
        mean = self.sum / self.pixels
        std = np.sqrt(np.maximum(self.sumsq / self.pixels - mean * mean, 0.0))
        shaped = {"min": self.min, "max": self.max, "mean": mean, "std": std}
        out: dict[str, Any] = {k: v.reshape(3, 1, 1).tolist() for k, v in shaped.items()}
        out["count"] = [self.frames]
        return out


class _FileSeries:
    """Numbered files of one kind (data, or one video key): chunk-XXX/file-YYY, ``chunks_size`` files per chunk."""

    def __init__(self, chunks_size: int, limit_bytes: float) -> None:
        self.chunks_size, self.limit = chunks_size, limit_bytes
        self.chunk, self.file = 0, -1
        self.bytes, self.frames = 0.0, 0

    def place(self, n_frames: int, n_bytes: float | None) -> bool:
        """Whether the next episode starts a new file (the first, or the current one would pass the limit)."""
        estimate = n_bytes if n_bytes is not None else (self.bytes / self.frames if self.frames else 0.0) * n_frames
        if self.file >= 0 and self.frames and self.bytes + estimate < self.limit:
            return False
        if self.file == self.chunks_size - 1:
            self.chunk, self.file = self.chunk + 1, 0
        else:
            self.file += 1
        self.bytes, self.frames = 0.0, 0
        return True

    def add(self, n_frames: int, n_bytes: float) -> None:
        """Count an episode written to the current file."""
        self.frames += n_frames
        self.bytes += n_bytes


def _tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas writes it (LeRobot reads it with pandas: the task strings are the index)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": tasks})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object"}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object"},
        ],
    }
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def _episode_tasks(buf: ReplayBuffer) -> list[str]:
    """Each episode's task string: meta/instruction, else the store's task attribute."""
    if "instruction" in buf.meta_keys():
        return [str(t) for t in buf.episode_meta("instruction")]
    return [str(buf.attrs.get("task", "unknown"))] * buf.n_episodes


def export_lerobot(
    zarr_path: str | Path,
    out_dir: str | Path,
    *,
    key_map: Mapping[str, str] | None = None,
    fps: int | None = None,
    vcodec: str = "libsvtav1",
    crf: int = 30,
    robot_type: str | None = None,
    chunks_size: int = 1000,
    data_file_mb: float = 100.0,
    video_file_mb: float = 200.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the store at ``zarr_path`` as a LeRobot v3.0 dataset at ``out_dir``; ``key_map``: our key -> LeRobot's."""
    zarr_path, out_dir = Path(zarr_path), Path(out_dir)
    if vcodec not in VIDEO_CODEC_NAMES:
        raise LeRobotFormatError(f"unknown video codec {vcodec!r}; choose one of {sorted(VIDEO_CODEC_NAMES)}")
    if chunks_size < 1 or data_file_mb <= 0 or video_file_mb <= 0:
        raise LeRobotFormatError("chunks_size, data_file_mb and video_file_mb must be positive")
    check_output(zarr_path, out_dir, overwrite, is_lerobot_dir, "a LeRobot dataset directory")
    buf = ReplayBuffer.open(zarr_path)
    try:
        fps = fps if fps is not None else buf.attrs.get("fps")
        if fps is None or int(fps) != fps or fps <= 0:
            raise LeRobotFormatError(f"{zarr_path} has no integer fps attribute ({fps!r}); pass --fps")
        if buf.n_episodes == 0:
            raise LeRobotFormatError(f"{zarr_path} holds no episodes")
        defaults = {k: default_export_name(k, buf.keys()) for k in buf.keys()}
        names = resolve_names(buf.keys(), defaults, key_map or {}, "store")
        clash = sorted(set(names.values()) & set(INDEX_FEATURES))
        if clash:
            raise LeRobotFormatError(f"{clash} are LeRobot's own columns; map those keys to other names with --map")
        features = {theirs: _feature(ours, buf.array(ours)) for ours, theirs in names.items()}
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            _write(tmp, buf, names, features, int(fps), vcodec, crf, chunks_size, data_file_mb, video_file_mb, progress)
            info = _info(features, buf, int(fps), vcodec, robot_type, chunks_size, data_file_mb, video_file_mb)
            (tmp / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n")
    finally:
        buf.close()
    return out_dir


def _info(
    features: Mapping[str, dict[str, Any]],
    buf: ReplayBuffer,
    fps: int,
    vcodec: str,
    robot_type: str | None,
    chunks_size: int,
    data_file_mb: float,
    video_file_mb: float,
) -> dict[str, Any]:
    """meta/info.json's content."""
    video = {
        "video.codec": VIDEO_CODEC_NAMES[vcodec],
        "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False,
        "video.fps": fps,
        "video.channels": 3,
        "has_audio": False,
    }
    out_features = {}
    for key, ft in features.items():
        entry = dict(ft)
        if ft["dtype"] == "video":
            entry["info"] = {"video.height": ft["shape"][0], "video.width": ft["shape"][1], **video}
        out_features[key] = entry
    for key in INDEX_FEATURES:
        out_features[key] = {"dtype": "float32" if key == "timestamp" else "int64", "shape": [1], "names": None}
    has_video = any(ft["dtype"] == "video" for ft in features.values())
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type if robot_type is not None else buf.attrs.get("robot_type"),
        "total_episodes": buf.n_episodes,
        "total_frames": buf.n_steps,
        "total_tasks": len(set(_episode_tasks(buf))),
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_file_mb,
        "video_files_size_in_mb": video_file_mb,
        "fps": fps,
        "splits": {"train": f"0:{buf.n_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if has_video else None,
        "features": out_features,
    }


def _write(
    root: Path,
    buf: ReplayBuffer,
    names: Mapping[str, str],
    features: Mapping[str, dict[str, Any]],
    fps: int,
    vcodec: str,
    crf: int,
    chunks_size: int,
    data_file_mb: float,
    video_file_mb: float,
    progress: bool,
) -> None:
    """Write data, videos, episodes, tasks and stats (everything but info.json) under ``root``."""
    episode_tasks = _episode_tasks(buf)
    tasks = list(dict.fromkeys(episode_tasks))
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    ours_of = {theirs: ours for ours, theirs in names.items()}
    data_files = _FileSeries(chunks_size, data_file_mb * 2**20)
    video_files = {k: _FileSeries(chunks_size, video_file_mb * 2**20) for k in video_keys}
    writers: dict[str, VideoWriter] = {}
    data_writer: pq.ParquetWriter | None = None
    numeric: dict[str, list[np.ndarray]] = {k: [] for k in features if k not in video_keys}
    numeric.update({k: [] for k in INDEX_FEATURES})
    image_stats = {k: _ImageStats() for k in video_keys}
    rows, start = [], 0
    try:
        for e in tqdm(range(buf.n_episodes), desc=f"export {buf.path.name}", unit="ep", disable=not progress):
            ep = buf.get_episode(e)
            length = len(ep["action"]) if "action" in ep else len(next(iter(ep.values())))
            frame_index = np.arange(length, dtype=np.int64)
            columns = {theirs: ep[ours] for ours, theirs in names.items() if theirs not in video_keys}
            columns["timestamp"] = (frame_index / fps).astype(np.float32)
            columns["frame_index"] = frame_index
            columns["episode_index"] = np.full(length, e, np.int64)
            columns["index"] = start + frame_index
            columns["task_index"] = np.full(length, tasks.index(episode_tasks[e]), np.int64)
            widths = {k: features[k]["shape"][0] if k in features else 1 for k in columns}
            table = pa.table({k: _arrow_column(v, widths[k]) for k, v in columns.items()})
            if data_files.place(length, table.nbytes):
                if data_writer is not None:
                    data_writer.close()
                path = root / DATA_PATH.format(chunk_index=data_files.chunk, file_index=data_files.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            data_writer.write_table(table)
            data_files.add(length, table.nbytes)
            row: dict[str, Any] = {
                "episode_index": e,
                "tasks": [episode_tasks[e]],
                "length": length,
                "data/chunk_index": data_files.chunk,
                "data/file_index": data_files.file,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
            }
            for key in video_keys:
                frames = ep[ours_of[key]]
                series = video_files[key]
                if series.place(length, None):
                    if key in writers:
                        writers[key].close()
                    path = root / VIDEO_PATH.format(video_key=key, chunk_index=series.chunk, file_index=series.file)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writers[key] = VideoWriter(path, fps, vcodec, crf)
                before = writers[key].n_bytes
                writers[key].write(frames)
                row[f"videos/{key}/chunk_index"] = series.chunk
                row[f"videos/{key}/file_index"] = series.file
                row[f"videos/{key}/from_timestamp"] = series.frames / fps
                row[f"videos/{key}/to_timestamp"] = (series.frames + length) / fps
                series.add(length, writers[key].n_bytes - before)
                episode_stats = _ImageStats()
                episode_stats.add(frames)
                image_stats[key].add(frames)
                row.update({f"stats/{key}/{s}": v for s, v in episode_stats.result().items()})
            for key, values in columns.items():
                numeric[key].append(values)
                row.update({f"stats/{key}/{s}": v for s, v in _vector_stats(values).items()})
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            rows.append(row)
            start += length
    finally:
        if data_writer is not None:
            data_writer.close()
        for writer in writers.values():
            writer.close()
    episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), episodes_path, compression="snappy")
    pq.write_table(_tasks_table(tasks), root / TASKS_PATH)
    stats = {k: _vector_stats(np.concatenate(v)) for k, v in numeric.items()}
    stats.update({k: s.result() for k, s in image_stats.items()})
    (root / STATS_PATH).write_text(json.dumps(stats, indent=4) + "\n")
