"""Camera pose evaluation: similarity (Umeyama) alignment, rotation and centre errors, RRA/RTA, AUC.

Conventions: poses are world->camera ``(R [3, 3], t [3])`` with OpenCV camera axes (``x_cam = R X + t``), so the
camera centre is ``-R^T t`` and the camera-to-world rotation ``R^T``.  Estimated and reference poses live in
different worlds (SfM fixes its own gauge); :func:`align_poses` maps the estimated centres onto the reference
ones by a least-squares similarity ``c -> s A c + b`` (Umeyama 1991) and measures, per camera,

* rotation error: the angle of ``R_ref_c2w^T · A · R_est_c2w`` (degrees);
* centre error: ``|s A c_est + b - c_ref|``, also in % of a length scale (default: the largest distance between two
  reference centres, e.g. a ring's diameter).

Pairwise metrics (as in RelPose/PoseDiffusion, independent of the gauge): RRA@θ = fraction of camera pairs whose
relative rotation error is below θ degrees; RTA@θ = fraction whose relative translation *direction* error is below
θ; AUC@θ = mean over integer thresholds 1..θ of the fraction with max(rot, dir) error below the threshold.
"""
from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R [3, 3], t [3]) minimising sum |dst - (s R src + t)|^2. src, dst: [N, 3], N >= 3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    e = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[2, 2] = -1.0
    r = u @ e @ vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ e) / max(var_s, 1e-300))
    return s, r, mu_d - s * r @ mu_s


def rotation_angle_deg(r: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix [3, 3]."""
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def centre(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera centre [3] of a world->camera pose."""
    return -np.asarray(r).T @ np.asarray(t)


def max_pairwise_distance(points: np.ndarray) -> float:
    """Largest distance between two rows of points [N, 3] (0 for N < 2)."""
    p = np.asarray(points, np.float64)
    if len(p) < 2:
        return 0.0
    return float(np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)).max())


def align_poses(est: dict, ref: dict, scale_length: float | None = None) -> dict:
    """Similarity-aligns estimated poses to reference poses and returns per-camera and summary errors.

    est, ref: {key: (R [3, 3], t [3])} world->camera (OpenCV); only keys in both are compared (>= 3 needed).
    scale_length: the length that centre errors are given in % of (default: the largest distance between two
    reference centres of ``ref``, all of them).  Returns {"rows": [{key, rot_err_deg, centre_err,
    centre_err_pct}], "median_rot_err_deg", "max_rot_err_deg", "median_centre_err_pct", "max_centre_err_pct",
    "scale", "n": compared cameras}.
    """
    keys = [k for k in est if k in ref]
    if len(keys) < 3:
        raise ValueError(f"pose alignment needs >= 3 common cameras, got {len(keys)}")
    ce = np.array([centre(*est[k]) for k in keys])
    cr = np.array([centre(*ref[k]) for k in keys])
    length = scale_length if scale_length else max_pairwise_distance(np.array([centre(*v) for v in ref.values()]))
    s, a, b = umeyama(ce, cr)
    rows = []
    for i, k in enumerate(keys):
        r_est_c2w, r_ref_c2w = np.asarray(est[k][0]).T, np.asarray(ref[k][0]).T
        err_c = float(np.linalg.norm(s * a @ ce[i] + b - cr[i]))
        rows.append({"key": k, "rot_err_deg": rotation_angle_deg(r_ref_c2w.T @ a @ r_est_c2w),
                     "centre_err": err_c, "centre_err_pct": 100.0 * err_c / max(length, 1e-300)})
    rot = np.array([r["rot_err_deg"] for r in rows])
    cen = np.array([r["centre_err_pct"] for r in rows])
    return {"rows": rows, "median_rot_err_deg": float(np.median(rot)), "max_rot_err_deg": float(rot.max()),
            "median_centre_err_pct": float(np.median(cen)), "max_centre_err_pct": float(cen.max()),
            "scale": s, "n": len(keys)}


def _direction_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return 180.0
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))


def relative_errors(est: dict, ref: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per camera pair (i < j over the common keys): relative rotation error and relative translation
    direction error, degrees -> (rot [P], dir [P])."""
    keys = [k for k in est if k in ref]
    rot, dirs = [], []
    for ii, i in enumerate(keys):
        for j in keys[ii + 1:]:
            (re_i, te_i), (re_j, te_j) = est[i], est[j]
            (rr_i, tr_i), (rr_j, tr_j) = ref[i], ref[j]
            r_est = np.asarray(re_j) @ np.asarray(re_i).T  # cam_j from cam_i
            r_ref = np.asarray(rr_j) @ np.asarray(rr_i).T
            t_est = np.asarray(te_j) - r_est @ np.asarray(te_i)
            t_ref = np.asarray(tr_j) - r_ref @ np.asarray(tr_i)
            rot.append(rotation_angle_deg(r_ref.T @ r_est))
            dirs.append(_direction_angle_deg(t_est, t_ref))
    return np.array(rot), np.array(dirs)


def rra_rta_auc(est: dict, ref: dict, thresholds=(5, 15), auc_max: int = 30, n_total: int | None = None) -> dict:
    """RRA@θ, RTA@θ for each θ in ``thresholds`` and AUC@auc_max over camera pairs.

    n_total: the number of cameras that should have a pose; pairs involving a camera missing from ``est`` count
    as failures (so unregistered views lower every number).  Default: the number of common cameras.
    """
    rot, dirs = relative_errors(est, ref)
    n_common = len([k for k in est if k in ref])
    n = n_total if n_total else n_common
    n_pairs = max(n * (n - 1) // 2, 1)
    out = {}
    for th in thresholds:
        out[f"RRA@{th}"] = float((rot < th).sum() / n_pairs)
        out[f"RTA@{th}"] = float((dirs < th).sum() / n_pairs)
    worst = np.maximum(rot, dirs)
    out[f"AUC@{auc_max}"] = float(np.mean([(worst < th).sum() / n_pairs for th in range(1, auc_max + 1)]))
    return out
