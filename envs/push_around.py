"""PushAround: push a block into a goal directly behind a fixed wall, around its left or right end.

Planar world seen from a top camera. The pusher is a capsule on two slide joints driven by position
actuators (the action is its absolute (x, y) target, 10 Hz); the block has slide x, slide y and a yaw
hinge with Coulomb friction and damping on the joints, so no floor contacts are simulated. The wall
sits between the block's start region and the goal, so both detours are equally good.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.planar_push import PlanarPushEnv

WORKSPACE = 0.25  # half-width (m) of the square the pusher may be commanded to
BLOCK_HALF = 0.025  # block half-size (m)
PUSHER_RADIUS = 0.012  # pusher capsule radius (m)
WALL_CENTER = np.array([0.0, 0.03])  # obstacle center (m)
WALL_HALF = np.array([0.08, 0.015])  # obstacle half-sizes in x and y (m)
GOAL_CENTER = np.array([0.0, 0.16])  # goal region center (m)
GOAL_RADIUS = 0.04  # success when the block center is closer than this to GOAL_CENTER (m)
REWARD_SCALE = 0.4  # distance (m) at which the dense reward reaches 0

_XML = f"""
<mujoco model="push_around">
  <compiler angle="radian"/>
  <option timestep="0.01" integrator="implicitfast"/>
  <visual>
    <global offwidth="256" offheight="256"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
  </visual>
  <default>
    <geom contype="1" conaffinity="1" friction="0.5 0.005 0.0001" solref="0.02 1"/>
  </default>
  <worldbody>
    <light pos="0 0 1" dir="0 0 -1" directional="true" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
    <camera name="top" pos="0 0 0.65" fovy="45"/>
    <geom name="table" type="plane" size="0.3 0.3 0.1" rgba="0.85 0.85 0.8 1" contype="0" conaffinity="0"/>
    <geom name="goal" type="cylinder" pos="{GOAL_CENTER[0]} {GOAL_CENTER[1]} 0.001" size="{GOAL_RADIUS} 0.001"
          rgba="0.3 0.8 0.3 1" contype="0" conaffinity="0"/>
    <geom name="wall" type="box" pos="{WALL_CENTER[0]} {WALL_CENTER[1]} 0.025"
          size="{WALL_HALF[0]} {WALL_HALF[1]} 0.025" rgba="0.25 0.25 0.3 1"/>
    <body name="block" pos="0 0 0.02">
      <joint name="block_x" type="slide" axis="1 0 0" damping="2" frictionloss="0.3" limited="true" range="-0.27 0.27"/>
      <joint name="block_y" type="slide" axis="0 1 0" damping="2" frictionloss="0.3" limited="true" range="-0.27 0.27"/>
      <joint name="block_yaw" type="hinge" axis="0 0 1" damping="0.002" frictionloss="0.002"/>
      <geom name="block" type="box" size="{BLOCK_HALF} {BLOCK_HALF} 0.02" mass="0.1" rgba="0.85 0.35 0.2 1"/>
    </body>
    <body name="pusher" pos="0 0 0.03">
      <joint name="pusher_x" type="slide" axis="1 0 0"/>
      <joint name="pusher_y" type="slide" axis="0 1 0"/>
      <geom name="pusher" type="capsule" size="{PUSHER_RADIUS} 0.015" mass="0.3" rgba="0.2 0.35 0.85 1"/>
    </body>
  </worldbody>
  <actuator>
    <position name="pusher_x" joint="pusher_x" kp="200" kv="15" ctrlrange="-{WORKSPACE} {WORKSPACE}"/>
    <position name="pusher_y" joint="pusher_y" kp="200" kv="15" ctrlrange="-{WORKSPACE} {WORKSPACE}"/>
  </actuator>
</mujoco>
"""


class PushAroundEnv(PlanarPushEnv):
    """Push the block into the goal behind the wall; going around the left or the right end are equally good."""

    def __init__(self, *, image_size: int = 96, render_size: int = 256, **kwargs: Any) -> None:
        self.block_half = BLOCK_HALF
        self.pusher_radius = PUSHER_RADIUS
        self.wall_center = WALL_CENTER.copy()
        self.wall_half = WALL_HALF.copy()
        self.goal_center = GOAL_CENTER.copy()
        self.goal_radius = GOAL_RADIUS
        super().__init__(_XML, workspace=WORKSPACE, image_size=image_size, render_size=render_size, **kwargs)

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Block in front of the wall (random x, y, yaw); pusher somewhere along the near edge."""
        qpos = self.data.qpos  # (5,) block x, y, yaw, pusher x, y
        qpos[0] = rng.uniform(-0.04, 0.04)
        qpos[1] = rng.uniform(-0.13, -0.08)
        qpos[2] = rng.uniform(-np.pi, np.pi)
        qpos[3] = rng.uniform(-0.2, 0.2)
        qpos[4] = rng.uniform(-0.23, -0.2)
        self.data.ctrl[:] = qpos[3:5]

    def _evaluate(self) -> tuple[float, bool]:
        """Dense reward 1 - distance/REWARD_SCALE (clipped at 0), 1 on success (block center within the goal)."""
        distance = float(np.hypot(*(self.data.qpos[0:2] - self.goal_center)))
        success = distance < self.goal_radius
        reward = 1.0 if success else max(0.0, 1.0 - distance / REWARD_SCALE)
        return reward, success
