"""Tests for envs/gl.py: backend choice and the triton-after-GL-context crash guard."""

import os
import subprocess
import sys
from pathlib import Path

from envs.gl import select_gl_backend

ROOT = Path(__file__).resolve().parents[1]


def test_backend_is_chosen_and_user_setting_wins(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert select_gl_backend() == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    assert select_gl_backend() in ("egl", "osmesa") and os.environ["MUJOCO_GL"] in ("egl", "osmesa")


def test_torchvision_imports_after_an_env_has_rendered():
    code = (
        "import envs, gymnasium\n"
        "env = gymnasium.make('actchunk/PushAround-v0'); obs, _ = env.reset(seed=0)\n"
        "assert obs['image'].std() > 0\n"
        "import torchvision\n"
        "env.close(); print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-1500:]


def test_rendering_logs_no_pyopengl_info_line():
    code = (
        "import logging\nlogging.basicConfig(level=logging.INFO)  # as hydra's job logging does\n"
        "import envs, gymnasium\n"
        "env = gymnasium.make('actchunk/PushAround-v0'); env.reset(seed=0); env.close(); print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-1500:]
    assert "OpenGL" not in done.stderr
