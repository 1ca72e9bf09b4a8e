"""Pick MuJoCo's offscreen OpenGL backend before `mujoco` is imported.

MuJoCo reads ``MUJOCO_GL`` once, at import time, and an unusable choice (OSMesa without libOSMesa)
breaks the import itself, so the choice is made here from the libraries actually present:
the user's setting wins, then EGL (headless, GPU-accelerated when a driver is there), then OSMesa.
"""

from __future__ import annotations

import ctypes.util
import os

_BACKEND_LIBRARIES = (("egl", "EGL"), ("osmesa", "OSMesa"))


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` if the user has not (EGL if present, else OSMesa) and return the choice."""
    if "MUJOCO_GL" not in os.environ:
        available = [name for name, lib in _BACKEND_LIBRARIES if ctypes.util.find_library(lib)]
        os.environ["MUJOCO_GL"] = available[0] if available else "egl"
    return os.environ["MUJOCO_GL"]
