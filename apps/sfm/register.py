"""Registration of a new view: 2D–3D correspondences through the feature tracks (:mod:`.tracks`), the surface filter
(|f(X)| < tau: upstream tests the signed value f < tau and lets deep interior points through), then PnP + LO-RANSAC
and refinement by pycolmap (``estimate_and_refine_absolute_pose``, intrinsics fixed)."""
from __future__ import annotations

import numpy as np

from nfkit.datasets.colmap import import_pycolmap

from .surface import abs_sdf
from .tracks import feature_tracks


def correspondences(state, matches, new: int) -> tuple[np.ndarray, np.ndarray]:
    """(keypoint index in ``new`` [C], point id [C]): the keypoints of ``new`` whose feature track (the union of
    all verified matches, :mod:`.tracks`) already has a live point; one per keypoint and one per point."""
    tracks = feature_tracks(matches)
    track_of = tracks.track_of[new]
    kps, pids = [], []
    for ki in np.nonzero(track_of >= 0)[0]:
        pid = state.point_of_track(tracks, int(track_of[ki]))
        if pid is not None and new not in state.tracks[pid]:
            kps.append(int(ki))
            pids.append(pid)
    return np.asarray(kps, np.int64), np.asarray(pids, np.int64)


def surface_filter(field, X: np.ndarray, tau: float) -> np.ndarray:
    """Mask [P] of points with |f(X)| < tau (all True without a field)."""
    if field is None:
        return np.ones(len(X), bool)
    return abs_sdf(field, X) < tau


def pycolmap_camera(K: np.ndarray, size):
    pycolmap = import_pycolmap()
    return pycolmap.Camera(model="PINHOLE", width=int(size[0]), height=int(size[1]),
                           params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])


def register_view(state, matches, new: int, cfg, field=None) -> tuple[bool, str, dict]:
    """PnP for view ``new``; on success its pose goes into ``state.poses`` -> (ok, reason, stats)."""
    pycolmap = import_pycolmap()
    kps, pids = correspondences(state, matches, new)
    stats = {"correspondences": int(len(kps))}
    if cfg.surface_filter and field is not None and len(kps):
        keep = surface_filter(field, state.points[pids], cfg.surface_tau)
        kps, pids = kps[keep], pids[keep]
        stats["after_surface_filter"] = int(len(kps))
    if len(kps) < cfg.min_inliers:
        return False, f"{len(kps)} 2D-3D correspondences (< {cfg.min_inliers})", stats
    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = cfg.pnp_max_error
    if hasattr(est.ransac, "random_seed"):
        est.ransac.random_seed = cfg.seed
    refine = pycolmap.AbsolutePoseRefinementOptions()
    refine.refine_focal_length = False
    refine.refine_extra_params = False
    cam = pycolmap_camera(state.K, matches.sizes[new])
    res = pycolmap.estimate_and_refine_absolute_pose(matches.keypoints[new][kps], state.points[pids], cam, est, refine)
    if res is None:
        return False, "PnP failed", stats
    n_in = int(res["num_inliers"])
    stats["inliers"] = n_in
    if n_in < cfg.min_inliers:
        return False, f"{n_in} PnP inliers (< {cfg.min_inliers})", stats
    m = np.asarray(res["cam_from_world"].matrix())
    state.poses[new] = (m[:, :3].copy(), m[:, 3].copy())
    inl = np.asarray(res["inlier_mask"], bool)
    for k, p in zip(kps[inl], pids[inl]):
        state.add_observation(int(p), new, int(k))
    return True, "", stats


def polish_poses(state, matches, cfg) -> dict:
    """Each registered view but the first (the gauge) refined by pycolmap's Levenberg–Marquardt pose refinement
    (robust loss, intrinsics fixed) against its observed points, held fixed: the second-order finish that Adam's
    bundle adjustment lacks. Returns {"views": n refined, "mean_px": (before, after)}."""
    pycolmap = import_pycolmap()
    before = state.mean_reprojection_error(matches.keypoints)
    opts = pycolmap.AbsolutePoseRefinementOptions()
    opts.refine_focal_length = False
    opts.refine_extra_params = False
    n = 0
    for i in list(state.poses):
        if i == state.order[0]:
            continue
        obs = [(k, p) for k, p in state.obs[i].items() if state.alive[p]]
        if len(obs) < cfg.min_inliers:
            continue
        kps = np.array([k for k, _ in obs], np.int64)
        pids = np.array([p for _, p in obs], np.int64)
        R, t = state.poses[i]
        init = pycolmap.Rigid3d(np.concatenate([R, t[:, None]], axis=1))
        res = pycolmap.refine_absolute_pose(init, matches.keypoints[i][kps], state.points[pids],
                                            np.ones(len(kps), bool), pycolmap_camera(state.K, matches.sizes[i]),
                                            opts)
        if res is None:
            continue
        m = np.asarray(res["cam_from_world"].matrix())
        state.poses[i] = (m[:, :3].copy(), m[:, 3].copy())
        n += 1
    return {"views": n, "mean_px": [before, state.mean_reprojection_error(matches.keypoints)]}
