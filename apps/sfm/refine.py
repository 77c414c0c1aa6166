"""The finish of nfkit sfm: one Levenberg–Marquardt bundle adjustment by pycolmap (Ceres) over all registered
views and points, started from the state that the incremental loop (neural or classic BA, Adam) built.

Adam's first-order BA stops short of the least-squares optimum (the poses already agree with the points, the
error is in the structure); a second-order solve of the same tracks finishes it.  Cauchy loss (scale 1 px),
intrinsics fixed (without ``--intrinsics`` one focal, fx = fy, is refined: separate fx, fy drift apart), gauge:
the first two cameras (``TWO_CAMS_FROM_WORLD``).  Poses, points and K are written back into the state.  The
points leave the SDF's level set by what the solve moves them (reported as ``mean_px`` before / after).
Before it (``reattach_scale``) :func:`reattach_tracks` gives the points back their tracks' observations that the
reprojection filter took (a chain that bent in the incremental loop loses exactly its loop-closing observations)
and a first solve at a wide Cauchy scale pulls the chain closed; the filter then runs before the 1 px solve.
"""
from __future__ import annotations

import numpy as np

from nfkit.datasets.colmap import import_pycolmap

from .outputs import to_reconstruction


def reattach_tracks(state, matches) -> int:
    """Gives every live point back the observations of its feature track in registered views that it lost (to
    the reprojection filter) or never got -> count.  A chain that bent during the incremental loop loses exactly
    the observations that would close it (their residuals exceed the filter); the wide-scale LM solve needs them."""
    from .tracks import feature_tracks

    tracks = feature_tracks(matches)
    n = 0
    for t in range(len(tracks)):
        pid = state.point_of_track(tracks, t)
        if pid is None:
            continue
        for img, kp in tracks.elements[t].items():
            if img in state.poses:
                n += state.add_observation(pid, img, kp)
    return n


def _options(refine_focal: bool, loss_scale: float = 1.0):
    pycolmap = import_pycolmap()
    opts = pycolmap.BundleAdjustmentOptions()
    opts.refine_focal_length = refine_focal
    opts.refine_principal_point = opts.refine_extra_params = False
    opts.print_summary = False
    opts.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    opts.ceres.loss_function_scale = loss_scale
    opts.ceres.solver_options.num_threads = 1
    return opts


def lm_bundle_adjust(state, matches, refine_focal: bool, loss_scale: float = 1.0) -> dict:
    """Refines ``state`` (poses [views], points [P, 3], K) in place -> {"mean_px": (before, after; finite
    errors), "behind_camera": observations left behind their camera (the caller's filter drops them), "views",
    "points", "focal_px"}."""
    pycolmap = import_pycolmap()
    ids: dict = {}
    rec = to_reconstruction(state, matches, point_ids=ids, one_focal=refine_focal)
    if len(state.poses) < 2 or not ids:
        return {"views": 0}
    before = state.mean_reprojection_error(matches.keypoints)
    config = pycolmap.BundleAdjustmentConfig()
    for i in state.poses:
        config.add_image(i + 1)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    if not refine_focal:
        config.set_constant_cam_intrinsics(1)
    pycolmap.create_default_bundle_adjuster(_options(refine_focal, loss_scale), config, rec).solve()
    for i in state.poses:
        m = np.asarray(rec.images[i + 1].cam_from_world().matrix())
        state.poses[i] = (m[:, :3].copy(), m[:, 3].copy())
    for pid, p3d in ids.items():
        state.points[pid] = np.asarray(rec.points3D[p3d].xyz)
    params = [float(v) for v in rec.cameras[1].params]
    fx, fy, cx, cy = params if len(params) == 4 else [params[0], *params]
    state.K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    _, _, err = state.reprojection_errors(matches.keypoints)
    after = float(err[np.isfinite(err)].mean()) if np.isfinite(err).any() else float("nan")
    return {"mean_px": [before, after], "behind_camera": int((~np.isfinite(err)).sum()), "views": len(state.poses),
            "points": len(ids), "focal_px": [fx, fy]}
