"""LeRobot's own writer and reader, run in .venv-lerobot by tests/test_lerobot_io.py (not a test module).

    python tests/lerobot_side.py write EPISODES.npz ROOT [video|image]   # LeRobotDataset.create, add_frame, ...
    python tests/lerobot_side.py read ROOT OUT.npz         # LeRobotDataset(repo_id, root=ROOT)[i] for every frame

EPISODES.npz holds fps, lengths (E,), tasks (E,), and per frame (N, ...) the arrays named after their
LeRobot features (video keys as (N, H, W, 3) uint8). OUT.npz holds what the reader returns for every
frame, images back to (N, H, W, 3) uint8, plus task strings and episode indices, and the dataset's fps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def write(episodes_npz: str, root: str, image_dtype: str = "video") -> None:
    """Write the episodes with LeRobot's recorder API; small file limits give many files and chunks.

    ``image_dtype`` video: frames in mp4 files; image: PNG bytes in the data parquet files.
    """
    arrays = dict(np.load(episodes_npz))
    fps, lengths, tasks = int(arrays.pop("fps")), arrays.pop("lengths"), arrays.pop("tasks")
    features = {}
    for key, values in arrays.items():
        if values.dtype == np.uint8 and values.ndim == 4:
            features[key] = {"dtype": image_dtype, "shape": values.shape[1:], "names": ["height", "width", "channels"]}
        else:
            width = values.shape[1]
            features[key] = {"dtype": "float32", "shape": (width,), "names": [f"{key}_{i}" for i in range(width)]}
    ds = LeRobotDataset.create("test/written", fps=fps, features=features, root=root, use_videos=image_dtype == "video")
    ds.meta.update_chunk_settings(chunks_size=2, data_files_size_in_mb=0.003, video_files_size_in_mb=0.0035)
    start = 0
    for length, task in zip(lengths, tasks):
        for t in range(start, start + length):
            ds.add_frame({**{k: v[t] for k, v in arrays.items()}, "task": str(task)})
        ds.save_episode()
        start += length
    ds.finalize()


def read(root: str, out_npz: str) -> None:
    """Every frame through LeRobotDataset.__getitem__ (its default video decoder), saved as numpy."""
    ds = LeRobotDataset("test/exported", root=root)
    items = [ds[i] for i in range(len(ds))]
    out = {"fps": np.asarray(ds.fps), "tasks": np.asarray([it["task"] for it in items])}
    for key in items[0]:
        if key == "task":
            continue
        values = np.stack([it[key].numpy() for it in items])
        if key in ds.meta.video_keys:
            values = np.round(values.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        out[key] = values
    np.savez(Path(out_npz), **out)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](*sys.argv[2:])
