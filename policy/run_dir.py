"""A training run's directory for one session: which directory, one trainer at a time, resume checks, no debris.

``RunDir.open(cfg, run_dir)`` picks the directory to train in (``run_dir``, or with ``resume=true`` the
newest run of the same name) and, for the whole session:

- holds an exclusive ``fcntl.flock`` on ``<run dir>/.lock`` (the file holds the PID), so a second training
  into the same directory fails at once in one line naming that PID instead of interleaving its log and
  checkpoints with the first (released on exit and on a crash; see ``data.file_lock`` for its limits);
- removes the temp files a killed writer left (``checkpoints/.latest.tmp-<pid>-<id>.ckpt`` and the like);
- loads ``checkpoints/latest.ckpt`` if there is one and refuses, naming the keys, a config that changes
  what the run trains (``policy.resume_config``);
- if the session fails before anything was trained (no checkpoint, no log record), removes what hydra
  and the session put there (``.hydra/``, ``*.log``, ``config.yaml``, ``tb/``, ...) and the directory,
  and the date folders above it left empty under ``output_root``, so failed starts leave no empty
  run directories; a directory holding anything else is left alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from data.atomic import remove_stale_temps
from data.file_lock import FileLock, LockBusyError
from policy.checkpoint import checkpoint_config, config_to_yaml, load_checkpoint
from policy.distillation import distillation_config
from policy.resume_config import SAFE_TO_CHANGE, unsafe_changes

LOCK_NAME = ".lock"
_UNTRAINED_ENTRIES = {".hydra", LOCK_NAME, "config.yaml", "tb", "checkpoints", "log.jsonl", "loss.png"}


class RunDirError(ValueError):
    """A run directory that cannot be trained in (in use, or holding a run of another config)."""


def find_resume_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """The run to continue: this run dir if it has a checkpoint, else (resume=true) the newest run of the same name."""
    if (run_dir / "checkpoints" / "latest.ckpt").exists() or not cfg.resume:
        return run_dir
    candidates = sorted(
        Path(cfg.output_root).glob(f"*/*_{cfg.name}/checkpoints/latest.ckpt"), key=lambda p: p.stat().st_mtime
    )
    if not candidates:
        raise FileNotFoundError(
            f"resume=true but no run named {cfg.name!r} has checkpoints/latest.ckpt under {cfg.output_root}/; "
            "pass hydra.run.dir=<run dir> or drop resume"
        )
    return candidates[-1].parent.parent


def is_untrained(path: Path) -> bool:
    """Whether ``path`` holds no checkpoint and no log record (a session that never finished a step)."""
    log = path / "log.jsonl"
    return not any((path / "checkpoints").glob("*.ckpt")) and not (log.exists() and log.stat().st_size > 0)


def remove_untrained(path: Path) -> bool:
    """Delete an untrained run directory if it holds only what hydra and a training session write; True if gone."""
    if not path.is_dir() or not is_untrained(path):
        return False
    entries = list(path.iterdir())
    if not all(e.name in _UNTRAINED_ENTRIES or (e.suffix == ".log" and e.is_file()) for e in entries):
        return False
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    path.rmdir()
    return True


class RunDir:
    """The directory of one training session, locked for it; ``checkpoint`` is the latest.ckpt to resume from."""

    def __init__(self, path: Path, lock: FileLock, spare: Path | None, output_root: Path) -> None:
        self.path = path
        self.checkpoint: dict[str, Any] | None = None
        self._lock = lock
        self._spare = spare  # hydra's fresh directory when resume=true continues another one
        self._output_root = output_root

    @property
    def latest(self) -> Path:
        """``checkpoints/latest.ckpt`` of this run."""
        return self.path / "checkpoints" / "latest.ckpt"

    @classmethod
    def open(cls, cfg: DictConfig, run_dir: Path) -> "RunDir":
        """Resolve, lock and check the run directory for a session with ``cfg``; RunDirError in one line."""
        run_dir = Path(run_dir)
        try:
            path = find_resume_dir(cfg, run_dir)
        except BaseException:
            _remove_untrained_if_free(run_dir)
            raise
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path / LOCK_NAME)
        try:
            lock.acquire(timeout=0)
        except LockBusyError as exc:
            if path != run_dir:
                _remove_untrained_if_free(run_dir)
            holder = f"PID {exc.pid}" if exc.pid is not None else "another process"
            raise RunDirError(
                f"run dir {path} is in use by {holder} (another training holds {path / LOCK_NAME}); "
                "wait for it to finish or pass another hydra.run.dir"
            ) from None
        session = cls(path, lock, run_dir if run_dir != path else None, Path(cfg.output_root))
        try:
            for directory in (path, path / "checkpoints"):
                if directory.is_dir():
                    remove_stale_temps(directory)
            if session.latest.exists():
                session.checkpoint = load_checkpoint(session.latest)
                _check_resumable(distillation_config(cfg)[0], session.checkpoint, path)  # what the run trains with
        except BaseException as exc:
            session.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return session

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            removed = [self.path] if remove_untrained(self.path) else []
            if self._spare is not None and _remove_untrained_if_free(self._spare):
                removed.append(self._spare)
            for path in removed:
                _remove_empty_parents(path, self._output_root)
        self._lock.release()


def _remove_untrained_if_free(path: Path) -> bool:
    """``remove_untrained(path)`` unless another training holds the directory's lock; True if removed."""
    lock = FileLock(path / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except (LockBusyError, FileNotFoundError):
        return False
    try:
        return remove_untrained(path)
    finally:
        lock.release()


def _remove_empty_parents(path: Path, output_root: Path) -> None:
    """Remove the directories between ``path`` and ``output_root`` (e.g. hydra's date folder) left empty."""
    root = output_root.resolve()
    parent = path.resolve().parent
    while parent != root and root in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _check_resumable(cfg: DictConfig, checkpoint: dict[str, Any], path: Path) -> None:
    """RunDirError naming the keys unless ``cfg`` only changes what SAFE_TO_CHANGE allows."""
    new = yaml.safe_load(config_to_yaml(OmegaConf.to_container(cfg, resolve=True)))  # the round trip stored ones took
    changes = unsafe_changes(checkpoint_config(checkpoint), new)
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise RunDirError(
            f"run dir {path} holds a run trained with another config ({shown}); resuming may change only "
            f"{', '.join(SAFE_TO_CHANGE)}: pass another hydra.run.dir for a new run"
        )
