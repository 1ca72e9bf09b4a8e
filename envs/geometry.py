"""Exact planar polygon geometry for the PushT coverage reward.

Hand-written rather than taken from shapely: it avoids a compiled dependency, it is exact (clipping
convex polygons is closed-form, no rasterisation as in pixel-counting coverage) and it costs tens of
microseconds per call, which matters when it runs on every env step. A T-shaped block is the union
of two disjoint rectangles, so the area of T ∩ goal is the sum of the four pairwise intersections of
convex pieces, each computed with Sutherland–Hodgman clipping.

Poses are (x, y, yaw) in metres and radians; polygons are (N, 2) float arrays in counter-clockwise order.
"""

from __future__ import annotations

import numpy as np

Pose = np.ndarray | tuple[float, float, float]  # (x, y, yaw)
Points = list[tuple[float, float]]  # polygon vertices as plain floats, for the inner loops

T_BAR_SIZE = (0.12, 0.03)  # full width, height of the T's top bar (m); Diffusion Policy's 120 x 30 px
T_STEM_SIZE = (0.03, 0.09)  # full width, height of the T's stem below the bar (m); 30 x 90 px

_BAR_AREA = T_BAR_SIZE[0] * T_BAR_SIZE[1]
_STEM_AREA = T_STEM_SIZE[0] * T_STEM_SIZE[1]
# Body frame origin at the centre of mass; the bar sits on top (+y), the stem hangs below it.
_COM_FROM_TOP = (_BAR_AREA * T_BAR_SIZE[1] / 2 + _STEM_AREA * (T_BAR_SIZE[1] + T_STEM_SIZE[1] / 2)) / (
    _BAR_AREA + _STEM_AREA
)
T_BAR_CENTER = (0.0, _COM_FROM_TOP - T_BAR_SIZE[1] / 2)  # bar centre in the T body frame (m)
T_STEM_CENTER = (0.0, _COM_FROM_TOP - T_BAR_SIZE[1] - T_STEM_SIZE[1] / 2)  # stem centre in the body frame (m)
T_AREA = _BAR_AREA + _STEM_AREA  # m^2


def rectangle(center: tuple[float, float], size: tuple[float, float]) -> np.ndarray:
    """Axis-aligned rectangle with the given centre and full size, as a CCW (4, 2) polygon."""
    cx, cy = center
    hx, hy = size[0] / 2, size[1] / 2
    return np.array([[cx - hx, cy - hy], [cx + hx, cy - hy], [cx + hx, cy + hy], [cx - hx, cy + hy]])


T_PARTS_LOCAL = (rectangle(T_BAR_CENTER, T_BAR_SIZE), rectangle(T_STEM_CENTER, T_STEM_SIZE))


def transform(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Map body-frame points (N, 2) to the world frame by pose (x, y, yaw)."""
    x, y, yaw = (float(v) for v in pose)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    return points @ rot.T + np.array([x, y])  # (N, 2)


def _area(poly: Points) -> float:
    """Shoelace area of a polygon given as a list of (x, y) floats."""
    n = len(poly)
    return 0.5 * sum(poly[k][0] * poly[(k + 1) % n][1] - poly[(k + 1) % n][0] * poly[k][1] for k in range(n))


def _clip(subject: Points, clip: Points) -> Points:
    """Sutherland–Hodgman: subject (convex) clipped by each edge of the convex CCW polygon clip."""
    out = subject
    for (ax, ay), (bx, by) in zip(clip, clip[1:] + clip[:1]):
        if not out:
            break
        ex, ey = bx - ax, by - ay
        side = [ex * (py - ay) - ey * (px - ax) for px, py in out]  # >= 0 is inside
        kept = []
        for k, (p, sp) in enumerate(zip(out, side)):
            q, sq = out[(k + 1) % len(out)], side[(k + 1) % len(out)]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                kept.append((p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t))
        out = kept
    return out


def _points(poly: np.ndarray) -> Points:
    """(N, 2) array -> list of float pairs (plain floats keep the tiny loops faster than numpy)."""
    return [(float(x), float(y)) for x, y in poly]


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon (N, 2) by the shoelace formula; positive for CCW order, 0 if N < 3."""
    return _area(_points(poly)) if len(poly) >= 3 else 0.0


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Intersection of convex polygon `subject` (N, 2) with convex CCW polygon `clip` (M, 2); (K, 2), K may be 0."""
    return np.array(_clip(_points(subject), _points(clip)), dtype=np.float64).reshape(-1, 2)


def t_polygons(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """The T block at `pose` as its two disjoint world-frame rectangles (bar, stem), each (4, 2)."""
    return tuple(transform(part, pose) for part in T_PARTS_LOCAL)


def t_overlap_area(pose_a: Pose, pose_b: Pose) -> float:
    """Exact area (m^2) of the intersection of a T at pose_a with a T at pose_b."""
    parts_a = [_points(p) for p in t_polygons(pose_a)]
    parts_b = [_points(p) for p in t_polygons(pose_b)]
    return sum(_area(_clip(pa, pb)) for pa in parts_a for pb in parts_b)


def t_coverage(pose: Pose, goal: Pose) -> float:
    """Fraction of the goal T covered by the T at `pose`: area(T ∩ goal) / area(goal), in [0, 1]."""
    return min(1.0, max(0.0, t_overlap_area(pose, goal) / T_AREA))


def t_distance(point: np.ndarray | tuple[float, float], pose: Pose) -> float:
    """Euclidean distance (m) from a world point (2,) to the T at `pose`; 0 inside the T."""
    x, y, yaw = (float(v) for v in pose)
    c, s = np.cos(yaw), np.sin(yaw)
    dx, dy = float(point[0]) - x, float(point[1]) - y
    local = (c * dx + s * dy, -s * dx + c * dy)  # point in the T body frame
    best = np.inf
    for center, size in ((T_BAR_CENTER, T_BAR_SIZE), (T_STEM_CENTER, T_STEM_SIZE)):
        ox = max(abs(local[0] - center[0]) - size[0] / 2, 0.0)
        oy = max(abs(local[1] - center[1]) - size[1] / 2, 0.0)
        best = min(best, float(np.hypot(ox, oy)))
    return best
