"""Tests for the packaging (pyproject.toml): the wheel's console scripts work installed, from any directory.

The project is copied (its tracked files) and built into a wheel (``pip wheel --no-build-isolation``), the
wheel installed with ``--no-deps`` into a fresh venv whose ``.pth`` file adds this environment's
site-packages (the dependencies; that directory's own ``.pth`` files, e.g. an editable install of this
project, are not processed, so ``data``, ``train`` and ``configs`` come from the wheel). Then
``actchunk-train --help`` and a tiny collect -> train -> eval run in a temporary directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin directory of a fresh venv with the project's wheel installed (dependencies seen through a .pth)."""
    tmp = tmp_path_factory.mktemp("install")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    src = tmp / "src"
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(src)], tmp
    )
    (wheel,) = tmp.glob("actchunk-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
    purelib = Path(sysconfig.get_path("purelib", scheme, vars={"base": str(env_dir), "platbase": str(env_dir)}))
    (purelib / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], tmp)
    return env_dir / "bin"


def test_console_scripts_come_from_the_wheel(installed, tmp_path):
    where = _run([str(installed / "python"), "-c", "import data, train, configs; print(data.__file__)"], tmp_path)
    assert str(installed.parent) in where.stdout
    shown = _run([str(installed / "actchunk-train"), "--help"], tmp_path)
    assert "train" in shown.stdout and "policy: " in shown.stdout, shown.stdout[-1000:]
    assert "import" in _run([str(installed / "actchunk-data"), "--help"], tmp_path).stdout


def test_collect_train_eval_from_another_directory(installed, tmp_path):
    task = ["task=push_around", "task.env_kwargs.image_size=32", "task.max_episode_steps=40"]
    _run([str(installed / "actchunk-collect"), *task, "n_episodes=2", "out=demo.zarr", "keep_failed=true"], tmp_path)
    assert (tmp_path / "demo.zarr").is_dir() and (tmp_path / "outputs" / "collect").is_dir()
    train = [
        *task,
        "task.dataset_path=demo.zarr",
        "obs=state",
        "policy.denoiser.down_dims=[16,32]",
        "policy.denoiser.diffusion_step_embed_dim=16",
        "policy.horizon=8",
        "policy.n_action_steps=4",
        "training.batch_size=8",
        "training.max_steps=4",
        "training.warmup_steps=1",
        "training.val_every=4",
        "training.checkpoint_every=4",
        "dataset.val_ratio=0",
        "name=tiny",
    ]
    _run([str(installed / "actchunk-train"), *train], tmp_path)
    (ckpt,) = tmp_path.glob("outputs/*/*_tiny/checkpoints/latest.ckpt")  # the run directory is under the cwd
    evaluate = ["n_episodes=1", "n_envs=1", "n_videos=0", "out_dir=eval", "progress=false"]
    _run([str(installed / "actchunk-eval"), f"checkpoint={ckpt}", *evaluate], tmp_path)
    assert (tmp_path / "eval" / "results.json").is_file()
    assert "ok:" in _run([str(installed / "actchunk-data"), "verify", "demo.zarr"], tmp_path).stdout
