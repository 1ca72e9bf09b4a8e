"""Offscreen MuJoCo rendering shared by our tasks and the MetaWorld adapter.

Renderers (each an OpenGL context) are created lazily, on the first image, so every vector-env
worker process creates its own context instead of inheriting one, and one renderer per image size is
reused for every frame. Render speed settings (no shadows, no multisampling) belong in the model.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.gl import select_gl_backend


class OffscreenRenderers:
    """One lazily created ``mujoco.Renderer`` per image size for a model."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self._by_size: dict[int, mujoco.Renderer] = {}

    def __len__(self) -> int:
        return len(self._by_size)

    def render(self, data: mujoco.MjData, camera: str, size: int) -> np.ndarray:
        """A (size, size, 3) uint8 image of ``data`` from the named camera."""
        renderer = self._by_size.get(size)
        if renderer is None:
            renderer = self._by_size[size] = self._create(size)
        renderer.update_scene(data, camera=camera)
        return renderer.render()  # (size, size, 3) uint8

    def close(self) -> None:
        """Release every renderer's OpenGL context."""
        for renderer in self._by_size.values():
            renderer.close()
        self._by_size.clear()

    def _create(self, size: int) -> mujoco.Renderer:
        """A renderer for ``size``, or a RuntimeError naming the GL backend and the fix."""
        try:
            return mujoco.Renderer(self.model, size, size)
        except Exception as err:  # the GL stack raises several unrelated types
            raise RuntimeError(
                f"offscreen rendering failed with MUJOCO_GL={select_gl_backend()!r} ({err}); "
                "set MUJOCO_GL=egl or osmesa to a backend installed here, or pass include_image=False"
            ) from err
