"""PushT: push a T-shaped block onto a fixed goal pose (MuJoCo re-creation of Diffusion Policy's PushT).

Planar world seen from a top camera, in metres (Diffusion Policy's 512 px workspace ~ 0.5 m). The
pusher is a sphere on two slide joints driven by force-limited position actuators; the action is its
absolute (x, y) target at 10 Hz. The T (two boxes, 120 x 30 mm bar over a 30 x 90 mm stem) has slide x,
slide y and a yaw hinge through its centre of mass, with Coulomb friction and damping on the joints in
place of floor contacts. Reward is the exact goal coverage area(T ∩ goal) / area(goal) (see
envs/geometry.py); success when coverage >= 0.95.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.geometry import T_AREA, T_BAR_CENTER, T_BAR_SIZE, T_STEM_CENTER, T_STEM_SIZE, t_coverage, t_distance
from envs.planar_push import PlanarPushEnv

WORKSPACE = 0.25  # half-width (m) of the square the pusher may be commanded to
PUSHER_RADIUS = 0.015  # pusher sphere radius (m)
GOAL_POSE = np.array([0.0, 0.0, np.pi / 4])  # goal (x, y, yaw) of the T's centre of mass
SUCCESS_COVERAGE = 0.95  # success when coverage reaches this
RESET_RANGE = 0.15  # initial T centre and pusher drawn uniformly from [-RESET_RANGE, RESET_RANGE]^2 (m)
BLOCK_LIMIT = 0.2  # the T's centre of mass is kept inside [-BLOCK_LIMIT, BLOCK_LIMIT]^2 by joint limits (m)
HALF_HEIGHT = 0.01  # half-height of the block and the plane the pusher moves in (m)
BLOCK_MASS = 0.1  # mass of the T (kg)
BLOCK_DENSITY = BLOCK_MASS / (T_AREA * 2 * HALF_HEIGHT)  # uniform density giving BLOCK_MASS (kg/m^3)
SLIDE_FRICTION = 0.2  # Coulomb friction force (N) on the T's x and y joints (table friction)
FRICTION_RADIUS = 0.04  # ratio (m) of the T's yaw friction torque to SLIDE_FRICTION (limit-surface radius)
SLIDE_DAMPING = 1.0  # viscous damping (N s/m) on the T's x and y joints; yaw uses the same radius ratio


def _t_geoms(prefix: str, z: float, half_height: float, attrs: str) -> str:
    """MJCF for the T's bar and stem boxes in the frame of the enclosing body, with extra geom attributes."""
    return "\n      ".join(
        f'<geom name="{prefix}_{name}" type="box" pos="{center[0]} {center[1]} {z}" '
        f'size="{size[0] / 2} {size[1] / 2} {half_height}" {attrs}/>'
        for name, center, size in (("bar", T_BAR_CENTER, T_BAR_SIZE), ("stem", T_STEM_CENTER, T_STEM_SIZE))
    )


_XML = f"""
<mujoco model="push_t">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.01" integrator="implicitfast"/>
  <visual>
    <global offwidth="256" offheight="256"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <geom friction="0.5 0.005 0.0001" solref="0.02 1"/>
  </default>
  <worldbody>
    <camera name="top" pos="0 0 1" fovy="29.5"/>
    <geom name="table" type="plane" size="0.3 0.3 0.1" rgba="0.95 0.95 0.95 1" contype="0" conaffinity="0"/>
    <body name="goal" pos="{GOAL_POSE[0]} {GOAL_POSE[1]} 0" euler="0 0 {GOAL_POSE[2]}">
      {_t_geoms("goal", 0.001, 0.001, 'contype="0" conaffinity="0" rgba="0.56 0.93 0.56 1"')}
    </body>
    <body name="block" pos="0 0 {HALF_HEIGHT}">
      <joint name="block_x" type="slide" axis="1 0 0" damping="{SLIDE_DAMPING}" frictionloss="{SLIDE_FRICTION}"
             range="-{BLOCK_LIMIT} {BLOCK_LIMIT}"/>
      <joint name="block_y" type="slide" axis="0 1 0" damping="{SLIDE_DAMPING}" frictionloss="{SLIDE_FRICTION}"
             range="-{BLOCK_LIMIT} {BLOCK_LIMIT}"/>
      <joint name="block_yaw" type="hinge" axis="0 0 1" damping="{SLIDE_DAMPING * FRICTION_RADIUS**2}"
             frictionloss="{SLIDE_FRICTION * FRICTION_RADIUS}"/>
      {_t_geoms("block", 0.0, HALF_HEIGHT, f'density="{BLOCK_DENSITY}" rgba="0.47 0.53 0.6 1"')}
    </body>
    <body name="pusher" pos="0 0 {HALF_HEIGHT}">
      <joint name="pusher_x" type="slide" axis="1 0 0"/>
      <joint name="pusher_y" type="slide" axis="0 1 0"/>
      <geom name="pusher" type="sphere" size="{PUSHER_RADIUS}" mass="0.5" rgba="0.25 0.41 0.88 1"/>
    </body>
  </worldbody>
  <actuator>
    <position name="pusher_x" joint="pusher_x" kp="300" kv="24" forcerange="-15 15"
              ctrlrange="-{WORKSPACE} {WORKSPACE}"/>
    <position name="pusher_y" joint="pusher_y" kp="300" kv="24" forcerange="-15 15"
              ctrlrange="-{WORKSPACE} {WORKSPACE}"/>
  </actuator>
</mujoco>
"""


class PushTEnv(PlanarPushEnv):
    """Push the T block onto the fixed goal T; reward is the exact goal coverage, success at >= 0.95."""

    def __init__(self, *, image_size: int = 96, render_size: int = 256, **kwargs: Any) -> None:
        self.pusher_radius = PUSHER_RADIUS
        self.goal_pose = GOAL_POSE.copy()
        self.success_coverage = SUCCESS_COVERAGE
        self.friction_radius = FRICTION_RADIUS
        super().__init__(_XML, workspace=WORKSPACE, image_size=image_size, render_size=render_size, **kwargs)

    @property
    def success_reward(self) -> float:
        """Reward at which an episode succeeds (the coverage threshold); evaluation normalizes scores by it."""
        return self.success_coverage

    @property
    def block_pose(self) -> np.ndarray:
        """Current (x, y, yaw) of the T's centre of mass, yaw wrapped to [-pi, pi)."""
        x, y, yaw = self.data.qpos[0:3]
        return np.array([x, y, (yaw + np.pi) % (2 * np.pi) - np.pi])

    def _reset_task(self, rng: np.random.Generator) -> None:
        """T at a random pose not overlapping the goal; pusher at a random spot clear of the T."""
        qpos = self.data.qpos  # (5,) block x, y, yaw, pusher x, y
        while True:
            pose = np.array([*rng.uniform(-RESET_RANGE, RESET_RANGE, 2), rng.uniform(-np.pi, np.pi)])
            if t_coverage(pose, self.goal_pose) == 0.0:
                break
        while True:
            pusher = rng.uniform(-RESET_RANGE, RESET_RANGE, 2)
            if t_distance(pusher, pose) > PUSHER_RADIUS + 0.01:
                break
        qpos[0:3] = pose
        qpos[3:5] = pusher
        self.data.ctrl[:] = pusher

    def _evaluate(self) -> tuple[float, bool]:
        """Reward = coverage of the goal T in [0, 1]; success when coverage >= SUCCESS_COVERAGE."""
        coverage = t_coverage(self.block_pose, self.goal_pose)
        return coverage, coverage >= self.success_coverage
