"""The training loop for every policy, objective and task, counted in optimizer steps.

A run directory holds ``config.yaml``, ``log.jsonl``, TensorBoard scalars (``tb/``), ``loss.png`` and
``checkpoints/{latest,best}.ckpt``. Training in a run directory that already has ``latest.ckpt``
(``resume=true`` picks the newest run of the same name) continues from it with the optimizer, scheduler,
EMA, RNG and data order restored, so the loss sequence matches an uninterrupted run; ``policy.run_dir``
locks the directory for the session and refuses a config that changes what the run trains. Settings are
checked (``check_config``) before anything is loaded. SIGINT/SIGTERM finish the current step, write
``latest.ckpt`` and return. Periodic rollouts go through
``policy.evaluation`` on the ``EnvTask`` the caller passes, so this module never imports ``envs/``.
A distilled objective (``objective=consistency teacher=<checkpoint>``, policy.distillation) trains in the same loop:
the student starts as the teacher, its loss comes from a ``ConsistencyDistiller`` whose EMA target follows every
optimizer step and is saved in the checkpoint (``distiller``).

Under torchrun (a ``World`` of N processes, policy.distributed) every rank runs this loop on its rows of each
global batch (``training.batch_size`` is the global batch) inside DistributedDataParallel. Rank 0 alone owns the
run directory: it fits the normalizer and reads the resume state and sends them to the others, and it alone
keeps the EMA, validates, rolls out, logs and writes checkpoints (every rank waits for a ``latest.ckpt`` write to
finish). The ranks draw identical random streams (rank-0-only work forks its own), so the global batch's noise
is the same on all of them and the run matches one process with the same batch; each checkpoint holds every
rank's RNG state and the world size, and a resume must use the same number of processes. A signal to any rank
stops every rank after the same step.
"""

from __future__ import annotations

import copy
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from tqdm import tqdm

from data.atomic import write_text_atomic
from data.dataset import SequenceDataset, TrainingData, make_train_loader
from data.multitask import task_instructions
from data.normalizer import Normalizer
from policy.checkpoint import CheckpointError, config_to_yaml, rng_state, save_checkpoint, set_rng_state
from policy.chunk_policy import ChunkPolicy
from policy.distillation import ConsistencyDistiller, distillation_config, load_teacher
from policy.distributed import BatchShard, World
from policy.ema import EMA
from policy.evaluation import EnvTask, evaluate
from policy.optim import autocast, autocast_enabled, make_optimizer, make_scheduler, resolve_device
from policy.run_dir import RunDir
from policy.run_log import RunLog, plot_losses
from policy.text_encoder import build_vocabulary

# (policy, batch, shard) -> scalar loss: ChunkPolicy.compute_loss or ConsistencyDistiller.loss
LossFn = Callable[[ChunkPolicy, Mapping[str, torch.Tensor], BatchShard | None], torch.Tensor]

POSITIVE_SETTINGS = (
    "training.max_steps",
    "training.batch_size",
    "training.log_every",
    "training.val_every",
    "training.val_batches",
    "training.checkpoint_every",
)


class StopRequested:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (a second signal exits at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


class TrainingLoss(nn.Module):
    """The policy's training loss as a module's forward, the call DistributedDataParallel syncs gradients on."""

    def __init__(self, policy: ChunkPolicy, loss_fn: LossFn, shard: BatchShard | None) -> None:
        super().__init__()
        self.policy = policy
        self.loss_fn = loss_fn  # ChunkPolicy.compute_loss, or a distiller's loss
        self.shard = shard  # this rank's rows of each global batch (None: one process)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of the (global) batch whose rows ``batch`` holds."""
        return self.loss_fn(self.policy, batch, self.shard)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch's tensors to ``device`` (non-blocking from pinned memory on CUDA); instruction lists stay."""
    return {
        k: v.to(device, non_blocking=device.type == "cuda") if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def instruction_policy_config(cfg: DictConfig, train_set: SequenceDataset) -> DictConfig:
    """cfg.policy, plus ``instruction`` (text encoder, vocabulary of the store's instructions, p_uncond) if conditioned.

    The entry also records ``tasks`` ({task: instruction} of a store with meta/task) for per-task evaluation. A
    policy config that has the entry already (a distilled teacher's) is kept; ValueError if
    ``instruction_conditioning=true`` meets a store without instructions.
    """
    if "instruction" in cfg.policy or not cfg.get("instruction_conditioning", False):
        return cfg.policy
    instructions = train_set.instructions
    if not instructions:
        raise ValueError(
            f"instruction_conditioning=true needs a store with per-episode instructions (meta/instruction); "
            f"{cfg.task.dataset_path} has none: re-collect it with python -m data.collect or set "
            "instruction_conditioning=false"
        )
    text_encoder = OmegaConf.to_container(cfg.text_encoder, resolve=True)
    if "vocabulary" in text_encoder:
        text_encoder["vocabulary"] = build_vocabulary(instructions)
    policy_cfg = copy.deepcopy(cfg.policy)
    with open_dict(policy_cfg):
        tasks = task_instructions(train_set.buffer) if "task" in train_set.buffer.meta_keys() else {}
        policy_cfg.instruction = {"text_encoder": text_encoder, "p_uncond": cfg.cfg.p_uncond, "tasks": tasks}
    return policy_cfg


def validation_loss(
    policy: ChunkPolicy,
    dataset: SequenceDataset,
    cfg: DictConfig,
    device: torch.device,
    loss_fn: Callable[[ChunkPolicy, Mapping[str, torch.Tensor]], torch.Tensor] = ChunkPolicy.compute_loss,
) -> float | None:
    """Mean ``loss_fn(policy, batch)`` over fixed validation batches with fixed noise; the training RNG is untouched."""
    if len(dataset) == 0:
        return None
    batch_size = min(cfg.training.batch_size, len(dataset))
    n_batches = min(cfg.training.val_batches, len(dataset) // batch_size)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))
    losses = []
    was_training = policy.training
    policy.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(cfg.seed)
        for b in range(n_batches):
            batch = to_device(dataset.__getitems__(order[b * batch_size : (b + 1) * batch_size].tolist()), device)
            losses.append(float(loss_fn(policy, batch)))
    policy.train(was_training)
    return sum(losses) / len(losses)


def rollout_instruction(policy: ChunkPolicy, task: EnvTask, cfg: DictConfig) -> tuple[str | None, float]:
    """(instruction, guidance scale) of training rollouts: what an instruction-conditioned policy is asked.

    A multi-task policy is asked its training instruction of the rollout env's task (``cfg.task.tasks`` names each
    task's env). A policy with no such task (one store whose episodes carry several instructions, e.g. PickPlace's
    bins) runs its unconditional model (scale 0), so the curve does not depend on one instruction picked for it.
    An unconditioned policy: (None, 1).
    """
    if not policy.conditioned:
        return None, 1.0
    known = (policy.instruction_config or {}).get("tasks") or {}
    names = [str(n) for n, env_id in (cfg.task.get("tasks") or {}).items() if env_id == task.env_id]
    if names and names[0] in known:
        return known[names[0]], 1.0
    return None, 0.0


def rollout_success(policy: ChunkPolicy, task: EnvTask, cfg: DictConfig, step: int, run_dir: Path) -> dict[str, Any]:
    """Roll ``policy`` out on fresh seeded episodes through policy.evaluation (eval.py's path); returns its summary."""
    instruction, guidance_scale = rollout_instruction(policy, task, cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the env worker processes need the other cores
    try:
        with torch.random.fork_rng(devices=[policy.device] if policy.device.type == "cuda" else []):
            return evaluate(
                policy,
                task,
                n_episodes=cfg.rollout.n_episodes,
                n_envs=cfg.rollout.n_envs,
                seed=cfg.rollout.seed,
                out_dir=run_dir / "rollouts" / f"step_{step:07d}",
                n_videos=cfg.rollout.n_videos,
                progress=False,
                instruction=instruction,
                guidance_scale=guidance_scale,
            )
    finally:
        torch.set_num_threads(threads)


def _is_int(value: Any) -> bool:
    """Whether ``value`` is an int (bools are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(cfg: DictConfig, world_size: int = 1) -> None:
    """ValueError naming the first bad setting (counts, intervals, rollouts, split, device, amp) before any work.

    ``world_size`` processes split ``training.batch_size`` (the global batch), which must divide evenly.
    """
    for key in POSITIVE_SETTINGS:
        value = OmegaConf.select(cfg, key)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{key}={value!r} must be an integer >= 1")
    batch = cfg.training.batch_size
    if batch % world_size:
        raise ValueError(
            f"training.batch_size={batch} is the global batch and must split evenly over the {world_size} "
            f"processes; use a multiple of {world_size}, e.g. {-(-batch // world_size) * world_size}"
        )
    timeout = cfg.distributed.timeout_s
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"distributed.timeout_s={timeout!r} must be a number of seconds > 0")
    if not _is_int(cfg.training.warmup_steps) or cfg.training.warmup_steps < 0:
        raise ValueError(f"training.warmup_steps={cfg.training.warmup_steps!r} must be an integer >= 0")
    if not _is_int(cfg.rollout.every) or cfg.rollout.every < 0:
        raise ValueError(f"rollout.every={cfg.rollout.every!r} must be an integer >= 0 (0 = no rollouts)")
    if cfg.rollout.every > 0:
        for key in ("rollout.n_episodes", "rollout.n_envs"):
            value = OmegaConf.select(cfg, key)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{key}={value!r} must be an integer >= 1 when rollout.every > 0")
    if not 0 <= cfg.dataset.val_ratio < 1:
        raise ValueError(f"dataset.val_ratio={cfg.dataset.val_ratio!r} must be in [0, 1)")
    autocast_enabled(cfg.amp, resolve_device(cfg.device))


def train(
    cfg: DictConfig,
    run_dir: Path | RunDir | None,
    data: TrainingData,
    *,
    rollout_task: EnvTask | None = None,
    progress: bool = True,
    world: World | None = None,
) -> dict[str, Any]:
    """Train per ``cfg`` in ``run_dir`` (resuming from its latest.ckpt if present); return a summary.

    ``run_dir`` is a path (opened and locked here) or a ``RunDir`` the caller holds already; only rank 0 uses it.
    ``rollout_task`` is the env of the periodic rollouts (``cfg.rollout.every > 0``). ``world`` is this process's
    place in a torchrun job (default: the initialized process group's, else one process).
    """
    world = World.current() if world is None else world
    with ExitStack() as stack:
        with world.main_first():  # a bad setting or run dir ends rank 0 with its message, the others quietly
            check_config(cfg, world.size)
            if world.is_main and not isinstance(run_dir, RunDir):
                run_dir = stack.enter_context(RunDir.open(cfg, run_dir))
        return _train_session(cfg, run_dir if world.is_main else None, data, rollout_task, progress, world)


def _start_state(
    cfg: DictConfig,
    session: RunDir,
    data: TrainingData,
    policy: ChunkPolicy,
    rollout_task: EnvTask | None,
    world: World,
    fit: bool,
) -> dict[str, Any]:
    """Rank 0's start of a session, sent to every rank: checks, the fitted normalizer (if ``fit``), resume state."""
    if cfg.rollout.every > 0 and rollout_task is None:
        raise ValueError(
            "rollout.every > 0 needs the task's env for rollouts; pass rollout_task or set rollout.every=0"
        )
    resume, latest = session.checkpoint, session.latest
    if resume is not None:
        print(f"resuming {session.path} from step {resume['step']}")
        if resume["build"]["shape_meta"] != dict(data.shape_meta):
            raise CheckpointError(
                f"{latest} was trained on {resume['build']['shape_meta']}, this config has "
                f"{dict(data.shape_meta)}; use a new run dir"
            )
        trained_by = resume.get("world_size", 1)
        if trained_by != world.size:
            raise CheckpointError(
                f"{latest} was trained by {trained_by} process(es) and holds each one's random state; resume it "
                f"with {trained_by} (this run has {world.size}) or use a new run dir"
            )
    return {
        "run_dir": str(session.path),
        "normalizer": data.train_set.get_normalizer(policy.normalizer_modes()).state_dict() if fit else None,
        "resume": None if resume is None else {k: v for k, v in resume.items() if k != "ema"},  # EMA: rank 0's
    }


def _check_lockstep(streams: list[torch.Tensor], step: int) -> None:
    """RuntimeError naming the ranks whose training random stream left rank 0's (they must draw the same noise)."""
    off = [rank for rank, stream in enumerate(streams) if not torch.equal(stream, streams[0])]
    if off:
        raise RuntimeError(
            f"at step {step} the random streams of ranks {off} differ from rank 0's: a rank drew random numbers "
            "the others did not, so the ranks no longer draw the same noise for the global batch"
        )


def _train_session(
    cfg: DictConfig,
    session: RunDir | None,
    data: TrainingData,
    rollout_task: EnvTask | None,
    progress: bool,
    world: World,
) -> dict[str, Any]:
    """``train`` in the locked, checked run directory ``session`` (rank 0; None on the other ranks)."""
    shape_meta = dict(data.shape_meta)
    train_set, val_set = data.train_set, data.val_set
    main = world.is_main
    cfg, teacher_ckpt = distillation_config(cfg)
    teacher = None if teacher_ckpt is None else load_teacher(cfg.teacher, teacher_ckpt, shape_meta)
    if teacher is not None and main:
        print(f"distilling {cfg.teacher}: the student starts from its policy config, weights and normalizer")
    torch.manual_seed(cfg.seed)
    device = world.device(resolve_device(cfg.device))

    policy_cfg = instruction_policy_config(cfg, train_set)
    policy = ChunkPolicy.from_config(policy_cfg, cfg.objective, cfg.sampler, shape_meta)
    use_amp = autocast_enabled(cfg.amp, device, images="rgb" in policy.obs_types.values())
    start = world.from_main(lambda: _start_state(cfg, session, data, policy, rollout_task, world, teacher is None))
    run_dir = Path(start["run_dir"])
    latest = run_dir / "checkpoints" / "latest.ckpt"
    resume = session.checkpoint if main else start["resume"]
    if teacher is None:
        normalizer = Normalizer()
        normalizer.load_state_dict(start["normalizer"])
        policy.set_normalizer(normalizer)
    else:
        policy.load_state_dict(teacher.state_dict())
    policy.to(device)
    distiller = None if teacher is None else ConsistencyDistiller(teacher, policy).to(device)
    compute_loss = ChunkPolicy.compute_loss if distiller is None else distiller.loss
    ema = EMA(policy, power=cfg.ema.power, max_value=cfg.ema.max_value) if cfg.ema.enabled and main else None
    optimizer = make_optimizer(
        policy.parameters(), cfg.training.lr, cfg.training.betas, cfg.training.weight_decay, device
    )
    scheduler = make_scheduler(optimizer, cfg.training.warmup_steps, cfg.training.max_steps, cfg.training.min_lr_ratio)
    step, best_success = 0, -1.0
    if resume is not None:
        try:
            policy.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            if ema is not None and resume.get("ema") is not None:
                ema.module.load_state_dict(resume["ema"])
                ema.n_averaged.fill_(resume["ema_n_averaged"])
            if distiller is not None:
                distiller.load_state_dict(resume["distiller"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{latest} does not fit the model this config builds ({first}); use a new run dir"
            ) from None
        step, best_success = resume["step"], resume["metrics"].get("best_success", -1.0)
    prior_train_time = 0.0 if resume is None else float(resume["metrics"].get("train_time_s", 0.0))

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["distributed"]["world_size"] = world.size
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config_to_yaml(resolved))
    build = {
        "policy": OmegaConf.to_container(policy_cfg, resolve=True),
        "objective": resolved["objective"],
        "sampler": resolved["sampler"],
        "shape_meta": shape_meta,
    }

    def save(path: Path, metrics: dict[str, float], rank_rng: list[dict[str, Any]] | None) -> None:
        """Rank 0: write a checkpoint of this step (``rank_rng``: every rank's RNG state, for resuming)."""
        save_checkpoint(
            path,
            {
                "step": step,
                "world_size": world.size,
                "config": config_to_yaml(resolved),
                "build": build,
                "model": policy.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "ema_n_averaged": int(ema.n_averaged) if ema is not None else 0,
                "distiller": distiller.state_dict() if distiller is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "rank_rng": rank_rng,
                "data": {"batch": step},
                "metrics": {**metrics, "best_success": best_success, "train_time_s": train_time()},
            },
        )

    def save_latest(metrics: dict[str, float]) -> None:
        """Every rank: hand rank 0 its RNG state, rank 0 writes latest.ckpt, all wait until the file is complete."""
        stream = torch.get_rng_state() if device.type != "cuda" else torch.cuda.get_rng_state(device)
        states = world.all_gather((rng_state(), stream))
        _check_lockstep([s for _, s in states], step)
        if main:
            save(latest, metrics, [state for state, _ in states])
        world.barrier()

    eval_policy = ema.module if ema is not None else policy
    log = RunLog(run_dir, step) if main else None
    loader = make_train_loader(
        train_set,
        batch_size=cfg.training.batch_size,
        seed=cfg.seed,
        start_batch=step,
        num_workers=cfg.dataset.num_workers,
        rank=world.rank,
        world_size=world.size,
    )
    shard = BatchShard.of(world, cfg.training.batch_size) if world.distributed else None
    loss_of = world.wrap(TrainingLoss(policy, compute_loss, shard), device, find_unused=policy.conditioned)
    if main:
        print(
            f"run dir {run_dir}\n{len(train_set)} training windows, {len(val_set)} validation windows, "
            f"{sum(p.numel() for p in policy.parameters()):,} parameters, device {device}, bf16 autocast {use_amp}"
            + (f", {world.size} processes" if world.distributed else "")
        )
    metrics: dict[str, float] = {}
    policy.train()
    start_step, start_time = step, time.perf_counter()
    eval_time = 0.0  # seconds of this session spent in validation and rollouts

    def train_time() -> float:
        """Training seconds over all sessions of this run, validation and rollouts excluded."""
        return prior_train_time + time.perf_counter() - start_time - eval_time

    bar = tqdm(
        total=cfg.training.max_steps,
        initial=step,
        desc=f"train {cfg.name}",
        unit="step",
        disable=not (progress and main),
    )
    stopped = None
    with StopRequested() as stop:
        batches = iter(loader)
        if resume is not None:  # restored last, so nothing above shifts the random stream
            set_rng_state((resume.get("rank_rng") or [resume["rng"]])[world.rank])
        signum = 0
        while step < cfg.training.max_steps and not (signum := world.max(stop.signum or 0, device)):
            batch = to_device(next(batches), device)
            with autocast(device, use_amp):
                loss = loss_of(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at step {step}; lower training.lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.training.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if distiller is not None:
                distiller.update_target(policy)
            if ema is not None:
                ema.update_parameters(policy)
            step += 1
            bar.update(1)
            if main:
                records: dict[str, float | None] = {}
                if step % cfg.training.log_every == 0 or step == cfg.training.max_steps:
                    rate = (step - start_step) / (train_time() - prior_train_time)
                    records.update(
                        loss=loss.item(),
                        lr=scheduler.get_last_lr()[0],
                        grad_norm=float(grad_norm),
                        steps_per_s=rate,
                        train_time_s=train_time(),
                    )
                    bar.set_postfix(loss=f"{loss.item():.4f}", steps_s=f"{rate:.1f}")
                eval_start = time.perf_counter()
                if step % cfg.training.val_every == 0 or step == cfg.training.max_steps:
                    records["val_loss"] = validation_loss(eval_policy, val_set, cfg, device, compute_loss)
                every = cfg.rollout.every
                if every > 0 and (step % every == 0 or step == cfg.training.max_steps):
                    records["train_time_s"] = train_time() - (time.perf_counter() - eval_start)
                    results = rollout_success(eval_policy, rollout_task, cfg, step, run_dir)
                    records["success_rate"] = results["success_rate"]
                    records["mean_max_reward"] = results["mean_max_reward"]
                    if results["normalized_score"] is not None:
                        records["normalized_score"] = results["normalized_score"]
                    if results["success_rate"] > best_success:
                        best_success = results["success_rate"]
                        metrics = {"success_rate": best_success}
                        save(run_dir / "checkpoints" / "best.ckpt", metrics, None)
                eval_time += time.perf_counter() - eval_start
                if records:
                    log.write(step, **records)
                    metrics.update({k: v for k, v in records.items() if v is not None})
            if step % cfg.training.checkpoint_every == 0 or step == cfg.training.max_steps:
                save_latest(metrics)
        if signum:
            save_latest(metrics)
            stopped = signal.Signals(signum).name
    bar.close()
    if main:
        log.close()
        plot_losses(log.path, run_dir / "loss.png")
    summary = {
        "run_dir": str(run_dir),
        "step": step,
        "stopped_by": stopped,
        "latest": str(latest),
        "best_success": best_success if best_success >= 0 else None,
        "wall_time_s": time.perf_counter() - start_time,
        **metrics,
        "train_time_s": train_time(),
    }
    return summary
