"""Scripted PushAround demonstrator: push the block along a detour around the wall's left or right end.

The mode (drawn uniformly per episode) picks the side. The block is steered through waypoints beside
the wall's end and then into the goal. Every control step re-plans from the low-dim state: if the
pusher sits behind the block (relative to the direction to the current waypoint) it pushes through the
block's centre line, correcting its lateral offset; otherwise it walks around the block on a circle
(never through it) to the point behind it. Gaussian noise on every action makes demonstrations cover
recoveries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.experts.base import ScriptedExpert

CONTACT_MARGIN = 0.003  # pusher-to-block-face gap (m) at the start of a push
STANDOFF = 0.01  # extra distance (m) behind the block where the pusher lines up before pushing
ORBIT_RADIUS = 0.07  # radius (m) of the circle used to walk around the block
ORBIT_STEP = 0.7  # angle (rad) advanced along that circle per control step
ALIGN_ANGLE = 0.35  # max angle (rad) between pusher direction and the push axis to start pushing
ALIGN_LATERAL = 0.012  # max lateral offset (m) of the pusher from the push axis while pushing
PUSH_STEP = 0.025  # max push distance per control step (m)
DETOUR_X = 0.155  # |x| (m) of the detour column beside the wall's end
WAYPOINT_TOLERANCE = 0.03  # block closer than this to an intermediate waypoint moves on to the next (m)
GOAL_TOLERANCE = 0.012  # stop pushing when the block centre is this close to the goal centre (m)


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    """Rotate a 2-vector by angle (rad)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


class PushAroundExpert(ScriptedExpert):
    """Closed-loop PushAround demonstrator that detours left or right of the wall."""

    mode_names = ("left", "right")
    mode_instructions = ("go around the left end of the wall", "go around the right end of the wall")

    def __init__(self, noise_std: float = 0.003) -> None:
        super().__init__(noise_std)
        self._waypoints = np.zeros((0, 2))
        self._next = 0
        self._contact_radius = 0.0

    def _plan_episode(self, task: Any) -> None:
        """Lay out the block waypoints around the chosen side of the wall."""
        self._contact_radius = task.block_half + task.pusher_radius + CONTACT_MARGIN  # centre-to-centre (m)
        side = -1.0 if self.mode_names[self.mode] == "left" else 1.0
        wall_low = task.wall_center[1] - task.wall_half[1]
        goal = np.asarray(task.goal_center, dtype=np.float64)
        self._waypoints = np.array(
            [
                [side * DETOUR_X, wall_low - 0.045],  # beside the wall's end, still in front of it
                [side * DETOUR_X, goal[1] - 0.03],  # past the wall, level with the goal
                goal,
            ]
        )  # (3, 2)
        self._next = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Pusher target (x, y) with Gaussian noise, from obs["state"] = (pusher xy, block xy, cos, sin)."""
        state = np.asarray(obs["state"], dtype=np.float64)
        pusher, block = state[0:2], state[2:4]
        last = len(self._waypoints) - 1
        while self._next < last and np.linalg.norm(self._waypoints[self._next] - block) < WAYPOINT_TOLERANCE:
            self._next += 1
        target = self._waypoints[self._next]
        command = self._push_towards(pusher, block, target)
        return command + self._noise(2)

    def _push_towards(self, pusher: np.ndarray, block: np.ndarray, target: np.ndarray) -> np.ndarray:
        """One control step of pushing the block centre towards target."""
        to_target = target - block
        distance = float(np.linalg.norm(to_target))
        if self._next == len(self._waypoints) - 1 and distance < GOAL_TOLERANCE:
            return pusher.copy()  # hold still at the goal
        axis = to_target / max(distance, 1e-9)  # push direction
        normal = np.array([-axis[1], axis[0]])
        offset = pusher - block
        along, lateral = float(offset @ axis), float(offset @ normal)
        behind_angle = np.arctan2(-axis[1], -axis[0])
        pusher_angle = np.arctan2(offset[1], offset[0])
        angle_error = (behind_angle - pusher_angle + np.pi) % (2 * np.pi) - np.pi
        if abs(angle_error) < ALIGN_ANGLE and abs(lateral) < ALIGN_LATERAL and along < 0:
            step = min(PUSH_STEP, distance)
            return block - axis * (self._contact_radius - step)  # on the push axis: also removes lateral offset
        if abs(angle_error) < ALIGN_ANGLE:
            return block - axis * (self._contact_radius + STANDOFF)  # line up straight behind the block
        turn = float(np.clip(angle_error, -ORBIT_STEP, ORBIT_STEP))
        return block + _rotate(np.array([np.cos(pusher_angle), np.sin(pusher_angle)]), turn) * ORBIT_RADIUS
