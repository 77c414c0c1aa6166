"""Scene normalisation from camera poses (instant-ngp's ``colmap2nerf`` recipe, without the rotation).

The centre is the point closest, in the least-squares sense, to every camera's optical axis (the line through
the camera position along its -Z axis, OpenGL convention); the scale makes the mean camera distance to that
centre :data:`TARGET_DISTANCE`.  The result is the similarity ``x_n = s * (x - c)``.
"""
from __future__ import annotations

import numpy as np

TARGET_DISTANCE = 4.0
# Below this ratio of smallest to largest eigenvalue of the normal matrix the axes are (nearly) parallel:
# the closest point is ill-defined (a forward-facing capture, or a single camera).
MIN_CONDITION = 1e-4


def focus_point(c2w: np.ndarray) -> np.ndarray:
    """c2w: [N, 4, 4] OpenGL camera-to-world -> [3] point closest to all optical axes.

    Solves ``sum_i (I - d_i d_i^T) (p - o_i) = 0`` (o_i camera position, d_i unit viewing direction).  Falls back
    to the mean camera position when the system is ill-conditioned (see :data:`MIN_CONDITION`).
    """
    o = c2w[:, :3, 3]
    d = -c2w[:, :3, 2]
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # [N, 3, 3] projectors orthogonal to each axis
    a = proj.sum(0)
    b = (proj @ o[:, :, None]).sum(0)[:, 0]
    eig = np.linalg.eigvalsh(a)
    if eig[-1] <= 0 or eig[0] < MIN_CONDITION * eig[-1]:
        return o.mean(0)
    return np.linalg.solve(a, b)


def normalize_poses(c2w: np.ndarray) -> tuple[float, np.ndarray]:
    """c2w: [N, 4, 4] input coordinates -> (scale s, centre c [3]) of the normalising similarity.

    ``s`` is 1 when every camera sits at the centre (nothing to scale by).
    """
    centre = focus_point(c2w)
    mean_dist = float(np.linalg.norm(c2w[:, :3, 3] - centre, axis=-1).mean())
    scale = TARGET_DISTANCE / mean_dist if mean_dist > 1e-9 else 1.0
    return scale, centre


def apply_similarity(c2w: np.ndarray, scale: float, centre: np.ndarray) -> np.ndarray:
    """c2w: [N, 4, 4] -> the same cameras under ``x -> scale * (x - centre)`` (rotations unchanged)."""
    out = c2w.copy()
    out[:, :3, 3] = scale * (c2w[:, :3, 3] - centre)
    return out


# Region of interest from the sparse points: their robust box (percentiles, see ``nfkit_points_bounds`` in
# :mod:`nfkit.datasets.colmap`) grown by this fraction of its size on each side, always holding the focus
# cube (the point the cameras look at) and never reaching beyond the cap (cameras sit at TARGET_DISTANCE).
POINTS_MARGIN = 0.1
FOCUS_HALF = 0.5
POINTS_CAP = 0.75 * TARGET_DISTANCE


def points_aabb(bounds, scale: float, centre: np.ndarray) -> np.ndarray | None:
    """bounds: [[min x, y, z], [max x, y, z]] of the sparse points in input coordinates (or None) -> [2, 3]
    normalised AABB (``x_n = scale * (x - centre)``), see the constants above; None when unusable."""
    try:
        b = np.asarray(bounds, dtype=np.float64).reshape(2, 3)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(b).all() or (b[1] < b[0]).any():
        return None
    b = scale * (b - np.asarray(centre, dtype=np.float64))
    pad = POINTS_MARGIN * (b[1] - b[0])
    lo = np.minimum(b[0] - pad, -FOCUS_HALF).clip(-POINTS_CAP, None)
    hi = np.maximum(b[1] + pad, FOCUS_HALF).clip(None, POINTS_CAP)
    return np.stack([lo, hi])
