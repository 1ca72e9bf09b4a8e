"""Tests for policy/distributed.py: torchrun training (2 gloo ranks x 1 thread) against one process, signals, failures.

The jobs run the README's command, ``torchrun --standalone --nproc_per_node=2 train.py ...``, on a tiny 32 px image
policy (random crops, keypoint noise) with fp32 (bf16 autocast would add its own rounding), each under a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from configs import compose_config
from data.collect import collect
from data.dataset import ResumableBatchSampler
from policy.checkpoint import load_checkpoint
from policy.distributed import BatchShard, World
from policy.training import check_config

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TIMEOUT_S = 150  # any job taking longer has hung
# The keypoint conv's bias shifts every logit of a spatial softmax alike: its true gradient is 0, and Adam turns
# the rounding noise it gets instead into steps of size lr, different in every run. It is not compared.
SHIFT_INVARIANT = "encoder.image_encoders.image.keypoints.nets.bias"

FAIL_ON_RANK_1 = '''"""train.py whose rank 1 raises in its 5th training step."""
import os
import runpy
import sys

from policy.chunk_policy import ChunkPolicy

if os.environ["RANK"] == "1":
    original, calls = ChunkPolicy.compute_loss, []

    def failing(self, batch, shard=None):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("injected failure")
        return original(self, batch, shard)

    ChunkPolicy.compute_loss = failing
sys.argv[0] = "train.py"
runpy.run_path("train.py", run_name="__main__")
'''


def overrides(tmp: Path, store: Path, steps: int = 20) -> list[str]:
    """A 32 px PushAround image policy (crops 28 of 32, 4 keypoints) trained ``steps`` steps with batch 8."""
    return [
        "task=push_around",
        "task.env_kwargs.image_size=32",
        f"task.dataset_path={store}",
        "policy.encoder.crop_shape=[28,28]",
        "policy.encoder.feature_dim=8",
        "policy.encoder.num_keypoints=4",
        "policy.denoiser.down_dims=[16,32]",
        "policy.denoiser.diffusion_step_embed_dim=16",
        "policy.horizon=8",
        "policy.n_action_steps=4",
        "training.batch_size=8",
        f"training.max_steps={steps}",
        "training.warmup_steps=2",
        "training.log_every=1",
        "training.val_every=10",
        "training.val_batches=2",
        "training.checkpoint_every=5",
        "amp=false",
        "distributed.timeout_s=60",
        f"output_root={tmp}",
        "name=tiny",
    ]


def start(command: list[str]) -> subprocess.Popen:
    """A job in the repo root with one thread per process, its output captured."""
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(job: subprocess.Popen) -> str:
    """The job's output once it ended (killed and failed after TIMEOUT_S)."""
    try:
        out, _ = job.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail(f"job hung: {job.communicate()[0][-3000:]}")
    return out


def records(run_dir: Path) -> dict[int, dict]:
    """log.jsonl by step."""
    return {r["step"]: r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())}


def wait_for_steps(job: subprocess.Popen, run_dir: Path, steps: int) -> None:
    """Block until the job logged ``steps`` steps."""
    log, deadline = run_dir / "log.jsonl", time.monotonic() + TIMEOUT_S
    while not (log.exists() and log.read_text().count("\n") >= steps):
        assert job.poll() is None and time.monotonic() < deadline, finish(job)[-3000:]
        time.sleep(0.05)


def worker_pids(torchrun_pid: int) -> dict[int, int]:
    """RANK -> PID of the processes torchrun started (its children)."""
    children = []
    for thread in Path(f"/proc/{torchrun_pid}/task").iterdir():
        children += [int(pid) for pid in (thread / "children").read_text().split()]
    ranks = {}
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        ranks[int(dict(e.decode().split("=", 1) for e in environ if b"=" in e)["RANK"])] = pid
    return ranks


def assert_same_parameters(a: Path, b: Path, atol: float, off_fraction: float = 0.0) -> None:
    """The model and EMA weights of two checkpoints agree within ``atol``, but for at most ``off_fraction`` of them.

    The exception is for runs whose gradients were summed in another order: where an element's true gradient is
    (nearly) 0, Adam turns the rounding noise into steps of size lr, as for SHIFT_INVARIANT; such elements are rare.
    """
    first, second = load_checkpoint(a), load_checkpoint(b)
    for part in ("model", "ema"):
        off = total = 0
        for key, value in first[part].items():
            if key == SHIFT_INVARIANT:
                continue
            if off_fraction == 0:
                torch.testing.assert_close(second[part][key], value, atol=atol, rtol=0, msg=f"{part} {key}")
            elif value.is_floating_point():
                off += int(((second[part][key] - value).abs() > atol).sum())
                total += value.numel()
        assert off <= off_fraction * total, f"{part}: {off} of {total} weights differ by more than {atol}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "pa.zarr"
    task = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "task" / "push_around.yaml"), resolve=False)
    task["env_kwargs"]["image_size"] = 32
    task["shape_meta"]["obs"]["image"]["shape"] = [32, 32, 3]
    collect(task, 4, path, progress=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, store) -> dict[str, Path]:
    """One process and two ranks of the same 20-step config, trained side by side."""
    tmp = tmp_path_factory.mktemp("runs")
    one = start([sys.executable, "train.py", *overrides(tmp / "one", store), f"hydra.run.dir={tmp / 'one' / 'run'}"])
    two = start([*TORCHRUN, "train.py", *overrides(tmp / "two", store)])  # hydra's own <date>/<time>_tiny run dir
    for job in (one, two):
        out = finish(job)
        assert job.returncode == 0, out[-3000:]
    (two_dir,) = (tmp / "two").glob("*/*_tiny")  # rank 1 created no run dir of its own
    return {"tmp": tmp, "one": tmp / "one" / "run", "two": two_dir}


def test_two_ranks_train_the_samples_losses_and_weights_of_one_process(runs):
    one, two = records(runs["one"]), records(runs["two"])
    assert sorted(one) == sorted(two) == list(range(1, 21))
    for key in ("loss", "val_loss", "grad_norm"):
        steps = [s for s in one if key in one[s]]
        # The all-reduce sums gradients in another order than one process: fp32 rounding (about 1e-7 relative) that
        # 20 steps grow to a few 1e-6 on some CPUs; a rank training on other rows or a wrong average is off by >= 1e-2.
        np.testing.assert_allclose([two[s][key] for s in steps], [one[s][key] for s in steps], rtol=1e-4, atol=1e-5)
    assert_same_parameters(
        runs["one"] / "checkpoints" / "latest.ckpt", runs["two"] / "checkpoints" / "latest.ckpt", 1e-5, 1e-4
    )
    ckpt = load_checkpoint(runs["two"] / "checkpoints" / "latest.ckpt")
    assert ckpt["world_size"] == 2 and len(ckpt["rank_rng"]) == 2 and ckpt["ema"] is not None
    assert yaml.safe_load((runs["two"] / "config.yaml").read_text())["distributed"]["world_size"] == 2
    assert load_checkpoint(runs["one"] / "checkpoints" / "latest.ckpt")["world_size"] == 1


def test_ranks_take_disjoint_parts_of_the_one_process_batches():
    single = ResumableBatchSampler(37, 8, seed=3)
    ranks = [ResumableBatchSampler(37, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for step, (whole, *parts) in enumerate(zip(single, *ranks)):  # 20 steps cross 4 epochs of 4 batches
        assert parts[0] + parts[1] == whole and not set(parts[0]) & set(parts[1])
        if step == 20:
            break
    resumed = ResumableBatchSampler(37, 8, seed=3, start_batch=6, rank=1, world_size=2)
    assert next(iter(resumed)) == next(b for i, b in enumerate(ranks[1]) if i == 6)
    assert [BatchShard.of(World(r, 2), 8) for r in range(2)] == [BatchShard(8, 0, 4), BatchShard(8, 4, 8)]


def test_each_process_uses_the_gpu_of_its_local_rank():
    world = World(rank=3, size=4, local_rank=1)
    assert world.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert world.device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device=cuda:0 names one GPU, but under torchrun each process uses"):
        world.device(torch.device("cuda", 0))
    assert World().device(torch.device("cuda", 0)) == torch.device("cuda", 0) and not World().distributed


def test_shard_takes_its_rows_of_a_draw_for_the_global_batch():
    values = torch.arange(2 * 8 * 3)  # 2 blocks (cameras) x 8 rows x 3 values per row

    def draw(count: int) -> torch.Tensor:
        return values[:count]

    taken = BatchShard(8, 4, 6).take(draw, 2 * 2 * 3, blocks=2)
    assert taken.tolist() == [*range(12, 18), *range(36, 42)]


def test_a_global_batch_the_ranks_cannot_split_evenly_is_refused_in_one_line():
    cfg = compose_config("train", ["training.batch_size=10"])
    with pytest.raises(ValueError) as caught:
        check_config(cfg, world_size=4)
    assert str(caught.value) == (
        "training.batch_size=10 is the global batch and must split evenly over the 4 processes; "
        "use a multiple of 4, e.g. 12"
    )
    check_config(cfg, world_size=2)
    with pytest.raises(ValueError, match="must split evenly over world_size=4"):
        ResumableBatchSampler(100, 10, world_size=4)


def test_a_signal_to_one_rank_stops_all_with_one_checkpoint_and_resume_continues_the_run(runs, store):
    run_dir = runs["tmp"] / "cut"
    slow = "training.val_every=1"  # rank 0 validates every step: the signal lands mid-run, training is unchanged
    args = [*TORCHRUN, "train.py", *overrides(runs["tmp"] / "cut", store), slow, f"hydra.run.dir={run_dir}"]
    cut = start(args)
    wait_for_steps(cut, run_dir, 5)
    os.kill(worker_pids(cut.pid)[1], signal.SIGTERM)
    out = finish(cut)
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")["step"]
    assert cut.returncode != 0 and f"stopped by SIGTERM at step {stopped_at}" in out, out[-3000:]
    assert 5 <= stopped_at < 20 and sorted(records(run_dir)) == list(range(1, stopped_at + 1))
    resumed = start(args)
    out = finish(resumed)
    assert resumed.returncode == 0 and f"resuming {run_dir} from step {stopped_at}" in out, out[-3000:]
    full, continued = records(runs["two"]), records(run_dir)
    assert sorted(continued) == list(range(1, 21))
    np.testing.assert_allclose([continued[s]["loss"] for s in full], [full[s]["loss"] for s in full], rtol=0, atol=1e-6)
    assert_same_parameters(runs["two"] / "checkpoints" / "latest.ckpt", run_dir / "checkpoints" / "latest.ckpt", 1e-6)


def test_a_rank_that_raises_ends_the_job_naming_the_rank(tmp_path, store):
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(FAIL_ON_RANK_1)
    started = time.monotonic()
    job = start([*TORCHRUN, str(script), *overrides(tmp_path, store, steps=1000), f"hydra.run.dir={tmp_path / 'run'}"])
    out = finish(job)
    assert job.returncode != 0 and time.monotonic() - started < 60, out[-3000:]
    cause = out[out.index("Root Cause (first observed failure)") :]
    assert "rank      : 1 (local_rank: 1)" in cause and "RuntimeError: injected failure" in cause, out[-3000:]


def test_a_sweep_split_over_two_ranks_writes_the_single_process_results(runs):
    checkpoint = runs["two"] / "checkpoints" / "latest.ckpt"
    args = [
        "eval.py",
        f"checkpoint={checkpoint}",
        "n_episodes=2",
        "n_envs=1",
        "n_videos=0",
        "progress=false",
        "sweep.samplers=[euler,midpoint]",
        "sweep.num_steps=[1,2]",
    ]
    single = start([sys.executable, *args, f"out_dir={runs['tmp'] / 'eval1'}"])
    split = start([*TORCHRUN, *args, f"out_dir={runs['tmp'] / 'eval2'}"])
    for job in (single, split):
        out = finish(job)
        assert job.returncode == 0, out[-3000:]
    timings = ("latency_ms", "actions_per_s", "wall_time_s")
    one, two = (json.loads((runs["tmp"] / d / "results.json").read_text()) for d in ("eval1", "eval2"))
    assert [(c["sampler"], c["num_steps"]) for c in two["cells"]] == [
        ("euler", 1),
        ("euler", 2),
        ("midpoint", 1),
        ("midpoint", 2),
    ]
    for a, b in zip(one["cells"], two["cells"], strict=True):
        assert {k: v for k, v in a.items() if k not in timings} == {k: v for k, v in b.items() if k not in timings}


def test_instruction_conditioned_training_on_two_ranks_matches_one_process(tmp_path, store):
    conditioned = ["instruction_conditioning=true", "text_encoder.dim=16", "text_encoder.n_heads=2", "cfg.p_uncond=0.5"]
    one = start(
        [
            sys.executable,
            "train.py",
            *overrides(tmp_path / "one", store, 6),
            *conditioned,
            f"hydra.run.dir={tmp_path / 'one'}",
        ]
    )
    two = start([*TORCHRUN, "train.py", *overrides(tmp_path / "two", store, 6), *conditioned])
    for job in (one, two):
        out = finish(job)
        assert job.returncode == 0, out[-3000:]  # parameters a step leaves without gradient do not stop DDP
    (two_dir,) = (tmp_path / "two").glob("*/*_tiny")
    first, second = records(tmp_path / "one"), records(two_dir)
    np.testing.assert_allclose([second[s]["loss"] for s in first], [first[s]["loss"] for s in first], rtol=0, atol=1e-5)
