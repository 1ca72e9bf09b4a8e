"""Checkpoint files: one self-contained, code-free file per checkpoint.

A checkpoint is a dict of plain types and tensors, loaded with ``torch.load(weights_only=True)`` so
that opening a file never runs code from it:

    format, version       "actchunk.checkpoint", FORMAT_VERSION
    step                  optimizer steps taken
    config                the resolved training config as a YAML string
    build                 {"policy", "objective", "sampler", "shape_meta"}: what ``ChunkPolicy.from_config`` needs
    model, ema            state_dicts of the policy and of its EMA copy (ema may be None)
    ema_n_averaged        updates the EMA has averaged (its decay warmup resumes from there)
    distiller             consistency distillation's target network ({"target": state_dict}), else None
    optimizer, scheduler  state_dicts
    rng                   {"torch": ByteTensor, "cuda": [ByteTensor, ...]}
    data                  the data order's position ({"batch": batches consumed})
    metrics               the latest validation/rollout numbers (floats)

Files are written through ``data.atomic`` (temporary path in the same directory, fsync, rename), so a
crash never leaves a half-written checkpoint under the final name. This module is file I/O only:
``ChunkPolicy.from_checkpoint`` builds the policy a loaded checkpoint describes.
"""

from __future__ import annotations

import pickle
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
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects, which actchunk refuses to load (they can run code); "
            f"re-save it with actchunk's train.py ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); "
            "use another checkpoint, e.g. latest.ckpt"
        ) from exc
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
