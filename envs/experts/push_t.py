"""Scripted PushT demonstrator: a closed-loop pose controller for the T built from single-point pushes.

Every control step it re-plans from the low-dim state. The pose error (goal minus block, in the block
frame) defines a desired block twist. Each candidate contact on the T's boundary, pushed along its
inward normal, produces a twist predicted by the ellipsoidal limit-surface model of quasi-static
pushing (translation ~ force, rotation ~ torque / c^2, c = the block's friction torque-to-force
ratio). The expert picks the contact whose predicted twist best matches the desired one, discounted
by how far the pusher must travel to reach it; it walks around the block (never through it) to that
contact and pushes by a distance proportional to the remaining error, then holds (without noise) once the
goal coverage is comfortably above the success threshold. Near the goal the pushes are capped at a few
mm and the pusher backs straight off a contact before walking to the next one: a coarser endgame crosses
the threshold by overshooting and then knocks the block off again, and policies imitating it stall just
below the threshold (benchmarks/results/push_t.md).

Mode (drawn per episode): "rotate_first" mostly fixes the yaw before translating, "translate_first"
mostly brings the block to the goal before turning it, so demonstrations contain two distinct strategies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.experts.base import ScriptedExpert
from envs.geometry import T_BAR_CENTER, T_BAR_SIZE, T_STEM_CENTER, T_STEM_SIZE, t_coverage, t_distance

TWIST_LENGTH = 0.05  # length (m) that converts a yaw error into a comparable displacement
TRAVEL_PENALTY = 3.0  # score lost per metre the pusher must travel to a new contact
CLEARANCE = 0.004  # minimum gap (m) kept between pusher and block while walking around it
STANDOFF = 0.03  # distance (m) from the contact at which the approach straight along the normal begins
ORBIT_RADIUS = 0.13  # radius (m) of the circle around the block centre used to walk around it
ORBIT_STEP = 0.7  # angle (rad) advanced along that circle per control step
RETREAT_STEP = 0.02  # distance (m) the pusher backs straight away from the block before walking around it
CONTACT_TOLERANCE = 0.006  # pusher closer than this to the contact position counts as in contact (m)
PUSH_GAIN = 0.7  # push distance per metre of twist error along the chosen push
PUSH_RANGE = (0.002, 0.03)  # min, max push distance per control step (m)
FINE_COVERAGE = 0.8  # from this coverage on, pushes are at most FINE_PUSH_MAX: the last few mm decide success
FINE_PUSH_MAX = 0.006  # max push distance per control step near the goal (m)
HOLD_COVERAGE = 0.97  # stop pushing at this coverage ...
RESUME_MARGIN = 0.005  # ... and resume when it falls below the env's success threshold plus this
CORNER_MARGIN = 0.008  # contacts stay this far (m) from the T's outer corners
PHASE_YAW = 0.35  # rotate_first: yaw error (rad) above which translation is down-weighted
PHASE_DISTANCE = 0.04  # translate_first: distance (m) above which rotation is down-weighted
PHASE_WEIGHT = 0.25  # weight of the postponed component during the first phase


def _contacts(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate contact points on the T boundary and their outward normals, body frame, (K, 2) each.

    Contacts in the two inner corners under the bar keep a pusher of `radius` clear of the other face.
    """
    bar_w, bar_h = T_BAR_SIZE[0] / 2, T_BAR_SIZE[1] / 2
    stem_w, stem_h = T_STEM_SIZE[0] / 2, T_STEM_SIZE[1] / 2
    y_top = T_BAR_CENTER[1] + bar_h
    y_under = T_BAR_CENTER[1] - bar_h
    y_bottom = T_STEM_CENTER[1] - stem_h
    points, normals = [], []
    inner = radius + 0.002  # from an inner corner to the nearest contact
    for x in np.linspace(-bar_w + CORNER_MARGIN, bar_w - CORNER_MARGIN, 9):
        points.append((x, y_top)), normals.append((0.0, 1.0))
    for sign in (-1.0, 1.0):
        points.append((sign * bar_w, T_BAR_CENTER[1])), normals.append((sign, 0.0))
        for x in np.linspace(stem_w + inner, bar_w - CORNER_MARGIN, 3):
            points.append((sign * x, y_under)), normals.append((0.0, -1.0))
        for y in np.linspace(y_bottom + CORNER_MARGIN, y_under - inner, 5):
            points.append((sign * stem_w, y)), normals.append((sign, 0.0))
    for x in (-CORNER_MARGIN, 0.0, CORNER_MARGIN):
        points.append((x, y_bottom)), normals.append((0.0, -1.0))
    return np.array(points), np.array(normals)


def _rotation(yaw: float) -> np.ndarray:
    """2-D rotation matrix (2, 2)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def _wrap(angle: float) -> float:
    """Wrap an angle to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


class PushTExpert(ScriptedExpert):
    """Closed-loop PushT demonstrator choosing contacts by a limit-surface pushing model."""

    mode_names = ("rotate_first", "translate_first")
    mode_instructions = ("rotate the T into place, then slide it", "slide the T into place, then rotate it")

    def __init__(self, noise_std: float = 0.003) -> None:
        super().__init__(noise_std)
        self._holding = False

    def _plan_episode(self, task: Any) -> None:
        """Read the goal pose, pusher radius, workspace and friction from the task; precompute contact twists."""
        self.goal = np.asarray(task.goal_pose, dtype=np.float64)
        self.radius = float(task.pusher_radius)
        self.workspace = float(task.workspace)
        self.resume_coverage = float(task.success_coverage) + RESUME_MARGIN
        self._points, self._normals = _contacts(self.radius)  # (K, 2) each, block frame
        torque = self._points[:, 0] * -self._normals[:, 1] - self._points[:, 1] * -self._normals[:, 0]  # (K,)
        rotation = TWIST_LENGTH * torque[:, None] / task.friction_radius**2  # (K, 1) limit-surface model
        twist = np.concatenate([-self._normals, rotation], axis=1)
        self._twists = twist / np.linalg.norm(twist, axis=1, keepdims=True)  # (K, 3) predicted unit twists
        self._holding = False

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Next pusher target (x, y) with Gaussian noise, from obs["state"] (pusher xy, T xy, cos, sin)."""
        state = np.asarray(obs["state"], dtype=np.float64)
        pusher = state[0:2]
        pose = np.array([state[2], state[3], np.arctan2(state[5], state[4])])
        target = self._plan(pusher, pose)
        if not self._holding:  # a held pusher stays put: noise on it would nudge the placed block
            target = target + self._noise(2)
        return np.clip(target, -self.workspace, self.workspace).astype(np.float32)

    def _plan(self, pusher: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Noise-free pusher target for the current pusher position (2,) and block pose (3,)."""
        coverage = t_coverage(pose, self.goal)
        self._holding = coverage >= (self.resume_coverage if self._holding else HOLD_COVERAGE)
        if self._holding:
            return pusher
        rot = _rotation(pose[2])
        error_xy = rot.T @ (self.goal[:2] - pose[:2])  # (2,) block frame
        error_yaw = _wrap(self.goal[2] - pose[2])
        desired = np.array([*error_xy, TWIST_LENGTH * error_yaw])
        if self.mode_names[self.mode] == "rotate_first" and abs(error_yaw) > PHASE_YAW:
            desired[:2] *= PHASE_WEIGHT
        elif self.mode_names[self.mode] == "translate_first" and np.hypot(*error_xy) > PHASE_DISTANCE:
            desired[2] *= PHASE_WEIGHT
        along = self._twists @ desired  # (K,) desired twist projected on each push
        cosine = along / max(np.linalg.norm(desired), 1e-9)
        touch = (self._points + self.radius * self._normals) @ rot.T + pose[:2]  # (K, 2) pusher centre at contact
        travel = np.linalg.norm(touch - pusher, axis=1)
        score = cosine - TRAVEL_PENALTY * np.maximum(travel - CONTACT_TOLERANCE, 0.0)
        k = int(np.argmax(np.where(cosine > 0, score, -np.inf)))
        normal = rot @ self._normals[k]
        if travel[k] < CONTACT_TOLERANCE:
            longest = FINE_PUSH_MAX if coverage >= FINE_COVERAGE else PUSH_RANGE[1]
            push = float(np.clip(PUSH_GAIN * along[k], PUSH_RANGE[0], longest))
            return touch[k] - normal * push
        return self._walk(pusher, pose, touch[k], normal)

    def _walk(self, pusher: np.ndarray, pose: np.ndarray, touch: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Waypoint toward the contact position `touch` that keeps the pusher clear of the block."""
        standoff = touch + STANDOFF * normal
        if t_distance(pusher, pose) < self.radius + CLEARANCE:  # leaving a contact: sliding off it drags the block
            return self._retreat(pusher, pose)
        if self._clear(pusher, touch, pose, ignore_end=STANDOFF):
            return touch
        if self._clear(pusher, standoff, pose):
            return standoff
        offset = pusher - pose[:2]
        angle = np.arctan2(offset[1], offset[0])
        goal_offset = standoff - pose[:2]
        turn = _wrap(np.arctan2(goal_offset[1], goal_offset[0]) - angle)
        angle += np.sign(turn) * min(abs(turn), ORBIT_STEP)
        orbit = pose[:2] + ORBIT_RADIUS * np.array([np.cos(angle), np.sin(angle)])
        if self._clear(pusher, orbit, pose):
            return orbit
        return self._retreat(pusher, pose)

    def _retreat(self, pusher: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Waypoint RETREAT_STEP straight away from the block's nearest point, before walking to another contact.

        A pusher that slides along the block to its next contact, or moves from an inner corner under the bar
        to an orbit waypoint across the block, drags the block off the goal just as it is placed.
        """
        eps = 1e-4
        gradient = np.array(
            [t_distance(pusher + eps * axis, pose) - t_distance(pusher - eps * axis, pose) for axis in np.eye(2)]
        )  # (2,) outward direction of the distance field
        if np.linalg.norm(gradient) < 1e-9:  # inside the block (a penetrating contact): away from its centre
            gradient = pusher - pose[:2]
        return pusher + RETREAT_STEP * gradient / max(float(np.linalg.norm(gradient)), 1e-9)

    def _clear(self, start: np.ndarray, end: np.ndarray, pose: np.ndarray, ignore_end: float = 0.0) -> bool:
        """Whether a straight move keeps the pusher clear of the block (or no closer to it than at start)."""
        length = float(np.linalg.norm(end - start))
        keep = max(length - ignore_end, 0.0)
        floor = min(self.radius + CLEARANCE, t_distance(start, pose) - 0.001)
        for t in np.linspace(0.0, keep / max(length, 1e-9), max(int(keep / 0.005), 1) + 1)[1:]:
            if t_distance(start + t * (end - start), pose) < floor:
                return False
        return True
