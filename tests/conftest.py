"""Session setup shared by every test module: MuJoCo's offscreen GL backend is chosen before any test imports mujoco."""

from envs.gl import select_gl_backend

select_gl_backend()
