"""Train a ChunkPolicy: python train.py task=push_around policy=unet objective=flow

Distill a trained DDPM or flow checkpoint into a consistency model: python train.py objective=consistency teacher=PATH

The hydra entry point over ``policy.training``: opens the task's store (collecting it with the expert if
missing), hands the training loop the task's env for periodic rollouts, and prints the run's summary. A run
directory ``outputs/<date>/<time>_<name>/`` is created per run; rerunning with the same directory
(``hydra.run.dir=...``) or ``resume=true`` continues it. SIGINT/SIGTERM write ``latest.ckpt`` and exit.
Settings, the run directory's lock and the resume checks come before the store is opened; a run that fails
before its first step leaves no run directory behind.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from configs import unknown_option
from data.task_store import open_training_data
from envs.task_env import TaskEnv
from policy.distillation import distillation_config
from policy.run_dir import RunDir
from policy.training import check_config, train


def run(cfg: DictConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Check the settings, lock ``run_dir``, open the task's data and env and train; returns the training summary."""
    with RunDir.open(cfg, run_dir) as held:
        check_config(cfg)
        distillation_config(cfg)  # a teacher that cannot be distilled is refused before any data is collected or read
        data = open_training_data(cfg, progress)
        task = TaskEnv.from_config(OmegaConf.to_container(cfg.task, resolve=True)) if cfg.rollout.every > 0 else None
        return train(cfg, held, data, rollout_task=task, progress=progress)


@hydra.main(version_base=None, config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (configs/train.yaml)."""
    try:
        summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:  # bad config, store, checkpoint or diverged loss
        sys.exit(f"train.py: error: {exc}")
    if summary["stopped_by"]:
        print(
            f"stopped by {summary['stopped_by']} at step {summary['step']}; checkpoint {summary['latest']}; "
            f"rerun with hydra.run.dir={summary['run_dir']} to continue"
        )
        sys.exit(128 + getattr(signal, summary["stopped_by"]).value)
    width = max(map(len, summary))
    print(
        "\n".join(
            f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"  {k:<{width}}  {v}"
            for k, v in summary.items()
        )
    )


if __name__ == "__main__":
    problem = unknown_option(sys.argv[1:], "train")
    if problem is not None:
        sys.exit(f"train.py: error: {problem}")
    main()
