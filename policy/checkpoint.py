"""Checkpoint files: one self-contained, code-free file per checkpoint.

A checkpoint is a dict of plain types and tensors, loaded with ``torch.load(weights_only=True)`` so
that opening a file never runs code from it:

    format, version       "actchunk.checkpoint", FORMAT_VERSION
    step                  optimizer steps taken
    world_size            processes that trained it (torchrun; 1 for a plain train.py)
    config                the resolved training config as a YAML string
    build                 {"policy", "objective", "sampler", "shape_meta"}: what ``ChunkPolicy.from_config`` needs
    model, ema            state_dicts of the policy and of its EMA copy (ema may be None)
    ema_n_averaged        updates the EMA has averaged (its decay warmup resumes from there)
    distiller             consistency distillation's target network ({"target": state_dict}), else None
    optimizer, scheduler  state_dicts
    rng                   {"torch": ByteTensor, "cuda": [ByteTensor, ...]} (rank 0's)
    rank_rng              every rank's ``rng``, in rank order (latest.ckpt; None in best.ckpt)
    data                  the data order's position ({"batch": batches consumed})
    metrics               the latest validation/rollout numbers (floats)

Files are written through ``data.atomic`` (temporary path in the same directory, fsync, rename), so a
crash never leaves a half-written checkpoint under the final name, with the user's umask. ``torch.save``
writes a zip archive with a CRC-32 per entry that ``torch.load`` never checks, so loading first checks
every CRC (``zipfile.testzip``): a file with flipped bytes is refused as damaged instead of loading with a
tensor silently changed. Refusals say what the file is (not a checkpoint, damaged, or holding pickled
objects) and never suggest an unsafe load. This module is file I/O only:
``ChunkPolicy.from_checkpoint`` builds the policy a loaded checkpoint describes.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from data.atomic import atomic_path

FORMAT = "actchunk.checkpoint"
FORMAT_VERSION = 1
BUILD_KEYS = ("policy", "objective", "sampler", "shape_meta")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, unsafe or from another format version."""


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (plus format and version) to ``path`` atomically (temp file + rename)."""
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without executing code; CheckpointError naming the file and the fix otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass checkpoint=<run dir>/checkpoints/latest.ckpt")
    check_integrity(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" such as {found.group(1)}" if found else ""
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects{what}, which actchunk refuses to load (unpickling "
            "can run code from the file); re-save it with actchunk's train.py"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
            "use another checkpoint, e.g. latest.ckpt"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an actchunk checkpoint (no format={FORMAT!r}); was it written by train.py?"
        )
    if ckpt.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt.get('version')}, this actchunk reads version "
            f"{FORMAT_VERSION}; load it with the actchunk release that wrote it"
        )
    missing = [key for key in ("step", "config", "build", "model") if key not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is incomplete, use another checkpoint")
    missing = [key for key in BUILD_KEYS if key not in ckpt["build"]]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks build entries {missing}; it is incomplete, use another checkpoint"
        )
    return ckpt


def check_integrity(path: Path) -> None:
    """CheckpointError unless ``path`` is a whole zip archive (torch.save's format) whose every CRC-32 matches."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # a zip archive's first local file header
        raise CheckpointError(
            f"{path} is not a checkpoint (torch.save writes a zip archive; this file starts with {head!r}); "
            "pass a checkpoint written by train.py, e.g. <run dir>/checkpoints/latest.ckpt"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (its zip structure is broken: {exc}); "
            "use another checkpoint, e.g. latest.ckpt"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is damaged: entry {bad} fails its CRC-32 check (the file changed after it was "
            "written); use another checkpoint, e.g. latest.ckpt or best.ckpt"
        )


def checkpoint_config(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved training config stored in a loaded checkpoint, as a plain dict."""
    return yaml.safe_load(ckpt["config"])


def config_to_yaml(config: Mapping[str, Any]) -> str:
    """Serialize a plain (resolved) config dict for the ``config`` entry."""
    return yaml.safe_dump(dict(config), sort_keys=False)


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device) as tensors."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA states only when CUDA is present)."""
    torch.set_rng_state(state["torch"].cpu())
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
