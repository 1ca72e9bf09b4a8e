"""Pick MuJoCo's offscreen OpenGL backend before `mujoco` is imported.

MuJoCo reads ``MUJOCO_GL`` once, at import time, and an unusable choice (OSMesa without libOSMesa)
breaks the import itself, so the choice is made here from the libraries actually present:
the user's setting wins, then EGL (headless, GPU-accelerated when a driver is there), then OSMesa.

Mesa's software renderer (llvmpipe, behind both EGL and OSMesa on machines without a GPU) loads its
own LLVM when the first GL context is made. triton (installed with torch, and imported lazily by
torchvision and torch.compile) bundles another LLVM, and importing it *after* a GL context exists
crashes the process with a segmentation fault. Importing it first is safe, so
``preload_triton`` does that (0.2 s) before any context can exist.

PyOpenGL (MuJoCo's EGL/OSMesa bindings) logs "No OpenGL_accelerate module loaded" at INFO on import,
which hydra's logging prints on every run; ``quiet_pyopengl`` keeps that logger to warnings.
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.util
import logging
import os

_BACKEND_LIBRARIES = (("egl", "EGL"), ("osmesa", "OSMesa"))


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` if the user has not (EGL if present, else OSMesa) and return the choice."""
    if "MUJOCO_GL" not in os.environ:
        available = [name for name, lib in _BACKEND_LIBRARIES if ctypes.util.find_library(lib)]
        os.environ["MUJOCO_GL"] = available[0] if available else "egl"
    return os.environ["MUJOCO_GL"]


def preload_triton() -> bool:
    """Import triton, if installed, before any GL context exists (see the module docstring); True if loaded."""
    if importlib.util.find_spec("triton") is None:
        return False
    importlib.import_module("triton")
    return True


def quiet_pyopengl() -> None:
    """Show only PyOpenGL's warnings and errors (its import logs an INFO line about an optional accelerator)."""
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
