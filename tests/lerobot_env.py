"""A Python environment with LeRobot's own dataset code, for checking data/lerobot_io.py against it.

lerobot 0.4.4 pins torch<2.11, so it cannot live in the project's .venv. ``lerobot_python()`` builds
``.venv-lerobot`` once (about 15 s, cached until tests/lerobot-requirements.txt or the project's
environment changes): a venv whose ``.pth`` file adds the project venv's site-packages (torch, numpy,
pyarrow, PyAV), with only LeRobot and what its dataset code imports on top, installed with ``--no-deps``
from tests/lerobot-requirements.txt. LeRobot's default video decoder, torchcodec, needs FFmpeg's shared
libraries under their usual names; PyAV's wheel ships FFmpeg 8 under hashed names, so the environment
gets a directory of symlinks with the usual names, put on LD_LIBRARY_PATH for the LeRobot processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import av

from data.file_lock import FileLock

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = ROOT / ".venv-lerobot"
REQUIREMENTS = Path(__file__).with_name("lerobot-requirements.txt")
FFMPEG_LIBS = ("avutil", "avcodec", "avformat", "avdevice", "avfilter", "swscale", "swresample")


def _av_libs() -> Path:
    """The directory of the FFmpeg libraries in PyAV's wheel."""
    return Path(av.__file__).resolve().parent.parent / "av.libs"


def _fingerprint() -> str:
    """What the environment is built from: the requirements, the project venv, PyAV's FFmpeg."""
    libs = sorted(p.name for p in _av_libs().iterdir())
    text = "\n".join([REQUIREMENTS.read_text(), sys.prefix, sysconfig.get_paths()["purelib"], *libs])
    return hashlib.sha256(text.encode()).hexdigest()


def _link_ffmpeg(target: Path) -> None:
    """Symlinks lib<name>.so.<major> -> PyAV's lib<name>-<hash>.so.<major>.<minor>.<micro> in ``target``."""
    target.mkdir()
    for name in FFMPEG_LIBS:
        (lib,) = _av_libs().glob(f"lib{name}-*.so.*")
        major = lib.name.split(".so.")[1].split(".")[0]
        (target / f"lib{name}.so.{major}").symlink_to(lib)


def _build() -> None:
    """Create .venv-lerobot from scratch."""
    shutil.rmtree(ENV_DIR, ignore_errors=True)
    venv.create(ENV_DIR, with_pip=False)
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else "posix_prefix"
    purelib = Path(sysconfig.get_path("purelib", scheme, vars={"base": str(ENV_DIR), "platbase": str(ENV_DIR)}))
    (purelib / "_project_venv.pth").write_text(
        "\n".join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])) + "\n"
    )
    _link_ffmpeg(ENV_DIR / "ffmpeg-libs")
    subprocess.run(
        [str(ENV_DIR / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-r", str(REQUIREMENTS)],
        check=True,
    )
    (ENV_DIR / ".installed").write_text(_fingerprint())


def lerobot_python() -> tuple[Path, dict[str, str]]:
    """The interpreter with LeRobot importable and the environment variables to run it with (built if needed)."""
    with FileLock(ROOT / ".venv-lerobot.lock").acquire(timeout=None):
        stamp = ENV_DIR / ".installed"
        if not stamp.is_file() or stamp.read_text() != _fingerprint():
            _build()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(ENV_DIR / "ffmpeg-libs"), str(_av_libs()), *filter(None, [env.get("LD_LIBRARY_PATH")])]
    )
    env["HF_HUB_OFFLINE"] = "1"  # everything is local: LeRobot must never reach for the hub
    env["HF_HOME"] = str(ENV_DIR / "hf-home")  # the datasets library's caches stay out of the user's home
    return ENV_DIR / "bin" / "python", env
