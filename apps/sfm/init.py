"""Two-view initialisation: the essential matrix (pycolmap, 5-point LO-RANSAC) of the best pair, fixed gauge.

Gauge: the first camera at the identity (R = I, t = 0), the second camera's translation of unit length, then
the world is rescaled so that the initial points have a robust radius of 1 around their median (the first camera
stays at the origin; ``state.centre`` is the points' median).  The pair: among the 8 pairs with the most verified
matches (else among all pairs), the one maximising (essential-matrix inliers triangulated at an angle of at least
``min_tri_angle``) × min(median triangulation angle, 8°).
"""
from __future__ import annotations

import numpy as np

from nfkit.datasets.colmap import import_pycolmap
from nfkit.errors import NfkitError

from .geometry import camera_centre, project, triangulate_dlt, triangulation_angle_deg
from .register import pycolmap_camera
from .state import SfmState


def _relative_pose(matches, i, j, K, max_error: float):
    """-> (R, t unit, inlier matches [M, 2]) of camera j relative to camera i (i at the identity), or None."""
    pycolmap = import_pycolmap()
    m = matches.pair(i, j)
    if len(m) < 15:
        return None
    opts = pycolmap.RANSACOptions()
    opts.max_error = max_error
    res = pycolmap.estimate_essential_matrix(matches.keypoints[i][m[:, 0]], matches.keypoints[j][m[:, 1]],
                                             pycolmap_camera(K, matches.sizes[i]), pycolmap_camera(K, matches.sizes[j]),
                                             opts)
    if res is None:
        return None
    rel = np.asarray(res["cam2_from_cam1"].matrix())
    t = rel[:, 3] / max(np.linalg.norm(rel[:, 3]), 1e-12)
    return rel[:, :3].copy(), t, m[np.asarray(res["inlier_mask"], bool)]


def _two_view_points(K, pose_i, pose_j, uv_i, uv_j, max_reproj):
    X = triangulate_dlt(K, pose_i, pose_j, uv_i, uv_j)
    pi, zi = project(K, *pose_i, X)
    pj, zj = project(K, *pose_j, X)
    ok = (zi > 0) & (zj > 0) & (np.linalg.norm(pi - uv_i, axis=1) < max_reproj) & \
         (np.linalg.norm(pj - uv_j, axis=1) < max_reproj)
    ang = triangulation_angle_deg(camera_centre(pose_i), camera_centre(pose_j), X)
    return X, ok, ang


def _best_pair(matches, cfg, pairs):
    """-> (i, j, R, t, inliers, score) of the best of ``pairs`` or None: score = (points passing the reprojection
    check with a triangulation angle >= min_tri_angle, at least 15) x min(median angle, 8 deg)."""
    best = None
    for i, j in pairs:
        rp = _relative_pose(matches, i, j, matches.K, cfg.max_reproj)
        if rp is None:
            continue
        R, t, inl = rp
        pose_i, pose_j = (np.eye(3), np.zeros(3)), (R, t)
        _, ok, ang = _two_view_points(matches.K, pose_i, pose_j, matches.keypoints[i][inl[:, 0]],
                                      matches.keypoints[j][inl[:, 1]], cfg.max_reproj)
        n_ok = int((ok & (ang >= cfg.min_tri_angle)).sum())
        if n_ok < 15:
            continue
        score = n_ok * min(float(np.median(ang[ok])), 8.0)
        if best is None or score > best[-1]:
            best = (i, j, R, t, inl, score)
    return best


def choose_pair(matches, cfg):
    """-> (i, j, R, t, inliers, score) of the best initial pair among the 8 pairs with the most verified matches,
    else (video frames: the best-matched pairs are neighbours with too small a baseline) among all pairs;
    NfkitError when none works."""
    ranked = sorted(matches.pairs, key=lambda p: -len(matches.pairs[p]))
    best = _best_pair(matches, cfg, ranked[:8]) or _best_pair(matches, cfg, ranked[8:])
    if best is None:
        raise NfkitError("no image pair with enough verified matches to initialise (need >= 15 inliers of an "
                         "essential matrix with a triangulation angle >= min_tri_angle); the images may not "
                         "overlap, or the camera barely moves")
    return best


def initialise(matches, cfg) -> tuple[SfmState, np.ndarray, np.ndarray]:
    """State with the two initial cameras (no points yet) and the DLT points of the pair's inliers.

    Returns (state, seeds [S, 3]: DLT points passing reprojection/angle checks, inliers [M, 2])."""
    i, j, R, t, inl, _ = choose_pair(matches, cfg)
    K = matches.K.copy()
    pose_i, pose_j = (np.eye(3), np.zeros(3)), (R, t)
    uv_i, uv_j = matches.keypoints[i][inl[:, 0]], matches.keypoints[j][inl[:, 1]]
    X, ok, ang = _two_view_points(K, pose_i, pose_j, uv_i, uv_j, cfg.max_reproj)
    ok &= ang >= cfg.min_tri_angle
    if ok.sum() < 10:
        raise NfkitError("the initial image pair gives fewer than 10 triangulable points; the views may be too close")
    centre = np.median(X[ok], axis=0)
    radius = float(np.percentile(np.linalg.norm(X[ok] - centre, axis=1), 90))
    state = SfmState(K=K, n_images=matches.n_images)
    state.poses[i] = pose_i
    state.poses[j] = (R, t / radius)
    state.order = [i, j]
    state.centre = centre / radius
    state.radius = 1.0
    return state, X[ok] / radius, inl
