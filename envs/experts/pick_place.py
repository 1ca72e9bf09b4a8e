"""Scripted PickPlace demonstrator: a closed-loop stage machine over the low-dim state.

Stages: hover above the cube, descend, close, lift, carry above the chosen bin, lower, open, retreat.
Every step the target is recomputed from the current cube and gripper positions, and the stage falls
back to the hover when the cube is no longer between the fingers (a missed or dropped grasp) or lands
outside the bin, so noisy demonstrations include recoveries. Targets move at most MAX_STEP per step.
Mode (drawn per episode): which bin, left or right.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.experts.base import ScriptedExpert

HOVER = 0.08  # height (m) above the cube centre for the pre-grasp hover
CARRY_Z = 0.13  # grasp-point height (m) while carrying
RELEASE_Z = 0.055  # grasp-point height (m) at which the cube is released over the bin
MAX_STEP = 0.03  # largest target displacement (m) from the current grasp point per control step
REACH_TOLERANCE = 0.01  # position error (m) at which a stage's target counts as reached
GRASP_TOLERANCE = 0.03  # cube centre within this distance (m) of the grasp point counts as held
CLOSE_STEPS = 4  # control steps spent closing (or opening) the fingers
OPEN, CLOSED = -1.0, 1.0  # gripper commands


class PickPlaceExpert(ScriptedExpert):
    """Stage-machine demonstrator for PickPlace; the mode is the bin (left or right)."""

    mode_names = ("left_bin", "right_bin")
    mode_instructions = ("put the cube in the left bin", "put the cube in the right bin")

    def __init__(self, noise_std: float = 0.003) -> None:
        super().__init__(noise_std)
        self._stage = "hover"
        self._timer = 0

    def _plan_episode(self, task: Any) -> None:
        """Read the chosen bin's geometry and the action bounds from the task."""
        self.bin_center = np.asarray(task.bin_centers[self.mode], dtype=np.float64)
        self.bin_inner_half = float(task.bin_inner_half)
        self.low = np.asarray(task.action_space.low, dtype=np.float64)
        self.high = np.asarray(task.action_space.high, dtype=np.float64)
        self._stage = "hover"
        self._timer = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Next action (x, y, z, gripper) with Gaussian noise, from obs["state"] (grasp xyz, opening, cube pose)."""
        state = np.asarray(obs["state"], dtype=np.float64)
        grasp, cube = state[0:3], state[4:7]
        target, gripper = self._plan(grasp, cube)
        step = target - grasp
        step *= min(1.0, MAX_STEP / max(float(np.linalg.norm(step)), 1e-9))
        action = np.array([*(grasp + step), gripper]) + self._noise(4)
        return np.clip(action, self.low, self.high).astype(np.float32)

    def _plan(self, grasp: np.ndarray, cube: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance the stage machine and return the noise-free (target xyz, gripper command)."""
        held = np.linalg.norm(cube - grasp) < GRASP_TOLERANCE
        if self._stage in ("lift", "carry", "lower") and not held:
            self._stage = "hover"
        if self._stage == "retreat" and np.max(np.abs(cube[:2] - self.bin_center)) > self.bin_inner_half:
            self._stage = "hover"  # the cube missed the bin
        above_cube = np.array([cube[0], cube[1], cube[2] + HOVER])
        above_bin = np.array([*self.bin_center, CARRY_Z])
        if self._stage == "hover":
            if np.linalg.norm(grasp - above_cube) < REACH_TOLERANCE:
                self._stage = "descend"
            return above_cube, OPEN
        if self._stage == "descend":
            if np.linalg.norm(grasp[:2] - cube[:2]) > 2 * REACH_TOLERANCE:
                self._stage = "hover"
                return above_cube, OPEN
            if np.linalg.norm(grasp - cube) < REACH_TOLERANCE:
                self._stage, self._timer = "close", 0
            return cube, OPEN
        if self._stage == "close":
            self._timer += 1
            if self._timer >= CLOSE_STEPS:
                self._stage = "lift" if held else "hover"
            return cube, CLOSED
        if self._stage == "lift":
            if grasp[2] > CARRY_Z - REACH_TOLERANCE:
                self._stage = "carry"
            return np.array([grasp[0], grasp[1], CARRY_Z]), CLOSED
        if self._stage == "carry":
            if np.linalg.norm(grasp - above_bin) < REACH_TOLERANCE:
                self._stage = "lower"
            return above_bin, CLOSED
        if self._stage == "lower":
            release = np.array([*self.bin_center, RELEASE_Z])
            if np.linalg.norm(grasp - release) < REACH_TOLERANCE:
                self._stage, self._timer = "release", 0
            return release, CLOSED
        if self._stage == "release":
            self._timer += 1
            if self._timer >= CLOSE_STEPS:
                self._stage = "retreat"
            return np.array([*self.bin_center, RELEASE_Z]), OPEN
        return np.array([*self.bin_center, CARRY_Z]), OPEN
