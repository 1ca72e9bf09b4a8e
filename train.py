"""Train a ChunkPolicy: python train.py task=push_around policy=unet objective=flow

Distill a trained DDPM or flow checkpoint into a consistency model: python train.py objective=consistency teacher=PATH

The hydra entry point over ``policy.training``: opens the task's store (collecting it with the expert if
missing), hands the training loop the task's env for periodic rollouts, and prints the run's summary. A run
directory ``outputs/<date>/<time>_<name>/`` is created per run; rerunning with the same directory
(``hydra.run.dir=...``) or ``resume=true`` continues it. SIGINT/SIGTERM write ``latest.ckpt`` and exit.
Settings, the run directory's lock and the resume checks come before the store is opened; a run that fails
before its first step leaves no run directory behind.

    torchrun --nproc_per_node=N train.py ...   # DistributedDataParallel over N processes (GPUs), same arguments

Under torchrun rank 0 owns the run directory, the store collection, the logs and the checkpoints; the other
ranks write nothing (no hydra directory either) and print only their own errors, prefixed with their rank.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.errors import record

from configs import unknown_option
from data.task_store import open_training_data
from envs.task_env import TaskEnv
from policy.distillation import distillation_config
from policy.distributed import PeerFailed, World, process_group
from policy.optim import resolve_device
from policy.run_dir import RunDir
from policy.training import check_config, train

# Ranks other than 0 keep no hydra run directory, config copy or log file: rank 0's run directory is the run's.
QUIET_HYDRA = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def run(cfg: DictConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Check the settings, lock ``run_dir``, open the task's data and env and train; returns the training summary.

    Under torchrun rank 0 does all of it first (collecting a missing store), the other ranks then open the store.
    """
    world = World.current()
    with ExitStack() as stack:
        with world.main_first():
            held = stack.enter_context(RunDir.open(cfg, run_dir)) if world.is_main else None
            check_config(cfg, world.size)
            distillation_config(cfg)  # a teacher that cannot be distilled is refused before any data is read
            data = open_training_data(cfg, progress and world.is_main)
        rollouts = cfg.rollout.every > 0 and world.is_main
        task = TaskEnv.from_config(OmegaConf.to_container(cfg.task, resolve=True)) if rollouts else None
        return train(cfg, held, data, rollout_task=task, progress=progress, world=world)


def report(summary: dict[str, Any]) -> None:
    """Print how the training ended: where to continue a stopped run, else the summary's numbers."""
    if summary["stopped_by"]:
        print(
            f"stopped by {summary['stopped_by']} at step {summary['step']}; checkpoint {summary['latest']}; "
            f"rerun with hydra.run.dir={summary['run_dir']} to continue"
        )
        return
    width = max(map(len, summary))
    print(
        "\n".join(
            f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"  {k:<{width}}  {v}"
            for k, v in summary.items()
        )
    )


@record  # under torchrun: an unexpected exception's traceback goes into torchrun's failure report, with the rank
def run_job(cfg: DictConfig, world: World) -> int:
    """``run`` in torchrun's process group (none for a plain ``python train.py``); returns the exit status.

    Bad input exits with one line; a signal's stop returns 128 + its number on rank 0, which reports the job, and
    0 on the others (a non-zero exit would make torchrun stop rank 0 while it reports).
    """
    try:
        device = world.device(resolve_device(cfg.device))
    except ValueError as exc:  # the same on every rank: rank 0 says it
        sys.exit(f"train.py: error: {exc}" if world.is_main else 1)
    with process_group(world, device, cfg.distributed.timeout_s):
        try:
            summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        except PeerFailed:  # rank 0 printed why
            sys.exit(1)
        except (ValueError, FileNotFoundError, FloatingPointError) as exc:  # bad config, store, checkpoint, diverged
            sys.exit(f"train.py: error: {world.prefix}{exc}")
        if world.is_main:
            report(summary)
        world.barrier()  # nobody exits (and gets rank 0 stopped by torchrun) before rank 0 has reported
    return 128 + getattr(signal, summary["stopped_by"]).value if summary["stopped_by"] and world.is_main else 0


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (configs/train.yaml)."""
    status = run_job(cfg, World.from_env())
    if status:
        sys.exit(status)


def cli() -> None:
    """``python train.py`` and the ``actchunk-train`` command: unknown options are named before hydra runs."""
    problem = unknown_option(sys.argv[1:], "train")
    if problem is not None:
        sys.exit(f"train.py: error: {problem}" if os.environ.get("RANK", "0") == "0" else 1)
    if os.environ.get("RANK", "0") != "0":
        sys.argv += QUIET_HYDRA
    main()


if __name__ == "__main__":
    cli()
