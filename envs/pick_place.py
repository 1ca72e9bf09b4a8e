"""PickPlace: pick a cube from the table with a floating two-finger gripper and drop it into either bin.

The wrist is a free body welded to a mocap body; the action sets the mocap target (x, y, z) of the
grasp point between the fingertips, plus a gripper command in [-1, 1] (-1 open, +1 closed) that drives
two slide-joint fingers through position actuators. The wrist and fingers are gravity-compensated, so
the weld only has to track the target. Two open-top bins (four wall boxes each, the table is their
floor) sit left and right of the cube's spawn area; either bin counts. Reward is the sparse success
indicator: 1.0 when the cube rests inside a bin (centre within the inner walls, at floor height, slow).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.mujoco_env import MujocoTaskEnv

CUBE_HALF = 0.0225  # cube half-size (m)
BIN_CENTERS = np.array([[-0.2, 0.0], [0.2, 0.0]])  # (left, right) bin centres (x, y) on the table (m)
BIN_NAMES = ("left_bin", "right_bin")  # step info "outcome": the bin the cube lies in (the expert's mode names)
BIN_INNER_HALF = 0.06  # half-width of a bin's inner square (m)
BIN_WALL_HALF = (0.005, 0.02)  # wall half-thickness and half-height (m)
FINGER_OPEN = 0.035  # per-finger travel from closed to fully open (m)
ACTION_LOW = np.array([-0.3, -0.15, 0.02, -1.0], np.float32)  # grasp point x, y, z (m), gripper command
ACTION_HIGH = np.array([0.3, 0.15, 0.25, 1.0], np.float32)
CUBE_RANGE = (0.08, 0.1, 0.3)  # cube spawn half-ranges: x, y (m) around the origin and yaw (rad)
RESTING_SPEED = 0.05  # the cube counts as resting below this linear speed (m/s)


def _bin_walls(index: int, center: np.ndarray) -> str:
    """MJCF for one open-top bin: four wall boxes around an inner square."""
    thick, height = BIN_WALL_HALF
    offset = BIN_INNER_HALF + thick
    span = BIN_INNER_HALF + 2 * thick
    walls = [  # (dx, dy, half x, half y)
        (offset, 0.0, thick, span),
        (-offset, 0.0, thick, span),
        (0.0, offset, span, thick),
        (0.0, -offset, span, thick),
    ]
    return "\n    ".join(
        f'<geom name="bin{index}_wall{k}" type="box" pos="{center[0] + dx} {center[1] + dy} {height}" '
        f'size="{sx} {sy} {height}" rgba="0.55 0.4 0.25 1"/>'
        for k, (dx, dy, sx, sy) in enumerate(walls)
    )


_XML = f"""
<mujoco model="pick_place">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.005" integrator="implicitfast" cone="elliptic"/>
  <visual>
    <global offwidth="256" offheight="256"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <default>
    <geom friction="1 0.005 0.0001" solref="0.01 1"/>
  </default>
  <worldbody>
    <light pos="0 -0.3 1" dir="0 0.3 -1" directional="true" diffuse="0.4 0.4 0.4" specular="0 0 0"/>
    <camera name="front" pos="0 -0.48 0.42" xyaxes="1 0 0 0 0.6 0.8" fovy="60"/>
    <camera name="top" pos="0 0 0.62" xyaxes="1 0 0 0 1 0" fovy="52"/>
    <geom name="table" type="plane" size="3 3 0.5" rgba="0.7 0.7 0.66 1"/>
    {_bin_walls(0, BIN_CENTERS[0])}
    {_bin_walls(1, BIN_CENTERS[1])}
    <body name="cube" pos="0 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" condim="4"
            friction="1 0.01 0.0001" rgba="0.85 0.2 0.2 1"/>
    </body>
    <body name="target" mocap="true" pos="0 0 0.15"/>
    <body name="wrist" pos="0 0 0.15" gravcomp="1">
      <freejoint name="wrist"/>
      <geom name="palm" type="box" pos="0 0 0.06" size="0.015 0.05 0.01" mass="0.3" rgba="0.3 0.3 0.35 1"/>
      <body name="finger_left" pos="0 0.006 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}" damping="2"/>
        <geom name="finger_left" type="box" pos="0 0 0.015" size="0.012 0.006 0.035" mass="0.05"
              condim="4" rgba="0.3 0.3 0.35 1"/>
      </body>
      <body name="finger_right" pos="0 -0.006 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_OPEN}" damping="2"/>
        <geom name="finger_right" type="box" pos="0 0 0.015" size="0.012 0.006 0.035" mass="0.05"
              condim="4" rgba="0.3 0.3 0.35 1"/>
      </body>
    </body>
  </worldbody>
  <equality>
    <weld body1="target" body2="wrist" solref="0.02 1"/>
  </equality>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="150" ctrlrange="0 {FINGER_OPEN}" forcerange="-8 8"/>
    <position name="finger_right" joint="finger_right" kp="150" ctrlrange="0 {FINGER_OPEN}" forcerange="-8 8"/>
  </actuator>
</mujoco>
"""


class PickPlaceEnv(MujocoTaskEnv):
    """Pick the cube and place it in either bin; sparse reward 1.0 once it rests inside one."""

    def __init__(self, *, image_size: int = 96, render_size: int = 256, camera: str = "front", **kwargs: Any) -> None:
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self.cube_half = CUBE_HALF
        self.bin_centers = BIN_CENTERS.copy()
        self.bin_inner_half = BIN_INNER_HALF
        self.finger_open = FINGER_OPEN
        super().__init__(
            _XML,
            image_size=image_size,
            render_size=render_size,
            obs_camera=camera,
            render_camera="front",
            frame_skip=20,
            **kwargs,
        )

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Cube at a random (x, y, yaw) between the bins; open gripper at a random spot above the table."""
        qpos = self.data.qpos  # cube free joint (7), wrist free joint (7), fingers (2)
        x_range, y_range, yaw_range = CUBE_RANGE
        yaw = rng.uniform(-yaw_range, yaw_range)
        qpos[0:3] = [rng.uniform(-x_range, x_range), rng.uniform(-y_range, y_range), CUBE_HALF]
        qpos[3:7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        grasp = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.12, 0.18)])
        qpos[7:10] = grasp
        qpos[10:14] = [1.0, 0.0, 0.0, 0.0]
        qpos[14:16] = FINGER_OPEN
        self.data.mocap_pos[0] = grasp
        self.data.ctrl[:] = FINGER_OPEN

    def _apply_action(self, action: np.ndarray) -> None:
        """Mocap target for the grasp point; gripper command -1..1 maps to fully open..closed fingers."""
        self.data.mocap_pos[0] = action[:3]
        self.data.ctrl[:] = FINGER_OPEN * (1.0 - action[3]) / 2.0

    def _low_dim_obs(self) -> dict[str, np.ndarray]:
        """agent_pos: grasp point xyz + finger opening; state: agent_pos, cube xyz, cube quaternion (wxyz)."""
        qpos = self.data.qpos
        opening = qpos[14] + qpos[15]
        agent = np.array([*qpos[7:10], opening], np.float32)  # (4,)
        state = np.concatenate([agent, qpos[0:7]]).astype(np.float32)  # (11,)
        return {"agent_pos": agent, "state": state}

    def _inside_bins(self) -> np.ndarray:
        """(2,) bool: whether the cube's centre lies within each bin's floor (left, right)."""
        cube = self.data.qpos[0:3]
        return np.all(np.abs(cube[:2] - self.bin_centers) < self.bin_inner_half - 0.5 * CUBE_HALF, axis=1)

    def _step_info(self) -> dict[str, Any]:
        """``outcome``: the bin the cube lies in ("left_bin" or "right_bin"), "" while in neither."""
        inside = np.flatnonzero(self._inside_bins())
        return {"outcome": BIN_NAMES[inside[0]] if len(inside) else ""}

    def _evaluate(self) -> tuple[float, bool]:
        """Success (and reward 1.0) when the cube rests on the floor of either bin."""
        cube = self.data.qpos[0:3]
        inside = self._inside_bins()
        low = cube[2] < CUBE_HALF + 0.01
        slow = np.linalg.norm(self.data.qvel[0:3]) < RESTING_SPEED
        success = bool(inside.any() and low and slow)
        return float(success), success
