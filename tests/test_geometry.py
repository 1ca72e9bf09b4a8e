"""Tests for envs/geometry.py: polygon clipping, areas and the exact T coverage."""

from __future__ import annotations

import numpy as np
import pytest

from envs.geometry import (
    T_AREA,
    T_BAR_SIZE,
    T_STEM_SIZE,
    clip_convex,
    polygon_area,
    rectangle,
    t_coverage,
    t_distance,
    t_overlap_area,
    t_polygons,
)

GOAL = (0.0, 0.0, np.pi / 4)


def _raster_coverage(pose: tuple[float, float, float], goal: tuple[float, float, float], n: int = 600) -> float:
    """Reference coverage by counting grid points inside both Ts (point-in-rectangle in each body frame)."""
    xs = np.linspace(-0.15, 0.15, n)
    grid = np.stack(np.meshgrid(xs, xs), axis=-1).reshape(-1, 2) + np.array(goal[:2])

    def inside(p: tuple[float, float, float]) -> np.ndarray:
        mask = np.zeros(len(grid), bool)
        for poly in t_polygons(p):
            edges = np.roll(poly, -1, axis=0) - poly  # (4, 2) CCW
            rel = grid[:, None, :] - poly[None]  # (P, 4, 2)
            cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
            mask |= np.all(cross >= 0, axis=1)
        return mask

    in_goal = inside(goal)
    return float((in_goal & inside(pose)).sum() / in_goal.sum())


def test_t_area_matches_its_two_rectangles():
    assert T_AREA == pytest.approx(T_BAR_SIZE[0] * T_BAR_SIZE[1] + T_STEM_SIZE[0] * T_STEM_SIZE[1])
    assert sum(polygon_area(p) for p in t_polygons(GOAL)) == pytest.approx(T_AREA)


def test_polygon_area_signs_and_degenerate():
    square = rectangle((0.3, -1.0), (2.0, 1.0))
    assert polygon_area(square) == pytest.approx(2.0)
    assert polygon_area(square[::-1]) == pytest.approx(-2.0)
    assert polygon_area(square[:2]) == 0.0


def test_clip_convex_overlap_disjoint_and_contained():
    a = rectangle((0.0, 0.0), (2.0, 2.0))
    assert polygon_area(clip_convex(a, rectangle((1.0, 0.5), (2.0, 2.0)))) == pytest.approx(1.0 * 1.5)
    assert len(clip_convex(a, rectangle((5.0, 0.0), (1.0, 1.0)))) == 0
    inner = rectangle((0.2, -0.1), (0.5, 0.4))
    assert polygon_area(clip_convex(inner, a)) == pytest.approx(polygon_area(inner))
    diamond = 0.75 * np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # cuts the unit square's corners
    assert polygon_area(clip_convex(rectangle((0.0, 0.0), (1.0, 1.0)), diamond)) == pytest.approx(1.0 - 4 * 0.25**2 / 2)


@pytest.mark.parametrize("goal", [GOAL, (0.1, -0.05, 0.0), (-0.07, 0.02, -2.5)])
def test_identity_pose_covers_fully(goal):
    assert t_coverage(goal, goal) == pytest.approx(1.0, abs=1e-9)
    assert t_coverage((goal[0], goal[1], goal[2] + 2 * np.pi), goal) == pytest.approx(1.0, abs=1e-9)


def test_far_away_covers_nothing():
    assert t_coverage((0.5, 0.5, 0.3), GOAL) == 0.0
    assert t_coverage((0.0, 0.2, np.pi / 4), GOAL) == 0.0


@pytest.mark.parametrize("d", [0.001, 0.01, 0.025])
def test_translation_along_x_matches_hand_computation(d):
    # Shifting sideways by d < stem width loses a d-wide strip of the bar (height 0.03) and of the stem (0.09).
    expected = 1.0 - d * (T_BAR_SIZE[1] + T_STEM_SIZE[1]) / T_AREA
    assert t_coverage((d, 0.0, 0.0), (0.0, 0.0, 0.0)) == pytest.approx(expected)
    assert t_coverage((-d, 0.0, 0.0), (0.0, 0.0, 0.0)) == pytest.approx(expected)


@pytest.mark.parametrize("d", [0.005, 0.02])
def test_translation_along_y_counts_the_cross_overlap(d):
    # Shifting up by d loses a bar strip (0.12 x d) and a stem strip (0.03 x d) but the stem gains 0.03 x d
    # inside the goal's bar: net loss 0.12 d.
    expected = 1.0 - T_BAR_SIZE[0] * d / T_AREA
    assert t_coverage((0.0, d, 0.0), (0.0, 0.0, 0.0)) == pytest.approx(expected)
    assert t_coverage((0.0, -d, 0.0), (0.0, 0.0, 0.0)) == pytest.approx(expected)


def test_symmetric_and_invariant_to_rigid_motions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.array([*rng.uniform(-0.04, 0.04, 2), rng.uniform(-np.pi, np.pi)])
        b = np.array([*rng.uniform(-0.04, 0.04, 2), rng.uniform(-np.pi, np.pi)])
        area = t_overlap_area(a, b)
        assert area == pytest.approx(t_overlap_area(b, a), abs=1e-12)
        shift, turn = rng.uniform(-1, 1, 2), rng.uniform(-np.pi, np.pi)
        c, s = np.cos(turn), np.sin(turn)
        rot = np.array([[c, -s], [s, c]])
        moved = [np.array([*(rot @ p[:2] + shift), p[2] + turn]) for p in (a, b)]
        assert t_overlap_area(*moved) == pytest.approx(area, abs=1e-12)


def test_matches_raster_reference_on_random_poses():
    rng = np.random.default_rng(1)
    for _ in range(3):
        pose = (*rng.uniform(-0.03, 0.03, 2), GOAL[2] + rng.uniform(-0.6, 0.6))
        exact = t_coverage(pose, GOAL)
        assert 0.05 < exact < 0.99
        assert exact == pytest.approx(_raster_coverage(pose, GOAL), abs=0.01)


def test_t_distance():
    pose = (0.1, -0.05, 0.0)
    assert t_distance((0.1, -0.05), pose) == 0.0
    top = t_polygons(pose)[0][:, 1].max() - pose[1]  # bar's top edge above the centre
    assert t_distance((0.1, pose[1] + top + 0.05), pose) == pytest.approx(0.05)
    rotated = (0.1, -0.05, np.pi)  # upside down: the bar is now below the centre
    assert t_distance((0.1, pose[1] - top - 0.05), rotated) == pytest.approx(0.05)
    assert t_distance((0.1 + 0.06 + 0.03, pose[1] + top - 0.01), pose) == pytest.approx(0.03)
