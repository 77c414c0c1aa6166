"""Part 3 of bench/sfm.py: robustness with ground truth (a mesh, 12 ring views, synthetic matches + outliers).

Keypoints are the projections of surface points found by ray casting (``nfkit.datasets.raycast``) from each
camera at random pixels -- the stand-in for SIFT: every match is exact up to 0.5 px noise, visibility by a second
ray cast.  For each image pair, ``outlier`` of the matches are replaced by (the same keypoint, a random keypoint
of the other view).  Arms (a), (d), (e) (and a0, d0: without the LM finish) of ``SfmConfig`` on the same matches;
known intrinsics.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nfkit.apps.sfm.config import SfmConfig
from nfkit.apps.sfm.matches import Matches
from nfkit.apps.sfm.pipeline import run_sfm
from nfkit.datasets.raycast import cast_rays
from nfkit.datasets.shapes import load_mesh
from nfkit.pose_eval import align_poses, max_pairwise_distance, umeyama

W, H, F = 320, 240, 360.0
CLASSIC = {"neural_triangulation": False, "neural_ba": False, "surface_filter": False}
ARMS = {"a": {}, "d": CLASSIC, "e": {"surface_filter": False},
        "a0": {"final_lm_ba": False}, "d0": {**CLASSIC, "final_lm_ba": False}}  # as bench/sfm.py


def ring_poses(n: int, radius: float = 3.0, elevation_deg: float = 25.0):
    """World->camera (OpenCV) poses on a ring looking at the origin (z up)."""
    poses = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        el = np.radians(elevation_deg + 8 * np.sin(3 * a))
        c = radius * np.array([np.cos(a) * np.cos(el), np.sin(a) * np.cos(el), np.sin(el)])
        z = -c / np.linalg.norm(c)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        poses.append((R, -R @ c))
    return poses


def synthetic_scene(mesh, poses, K, n_per_view: int = 500, noise: float = 0.5, outlier: float = 0.15,
                    seed: int = 0):
    """-> (Matches, truth: per view [K_i] true point ids, outlier match count)."""
    rng = np.random.default_rng(seed)
    Kinv = np.linalg.inv(K)
    pts = []
    for R, t in poses:  # surface points seen from each camera
        uv = rng.uniform([0, 0], [W, H], size=(n_per_view, 2))
        d = np.concatenate([uv, np.ones((n_per_view, 1))], 1) @ Kinv.T @ R
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        c = -R.T @ t
        tt, _ = cast_rays(mesh, np.broadcast_to(c, d.shape), d)
        ok = np.isfinite(tt)
        pts.append(c + tt[ok, None] * d[ok])
    X = np.concatenate(pts)
    kps, ids = [], []
    for R, t in poses:
        c = -R.T @ t
        v = X - c
        dist = np.linalg.norm(v, axis=1)
        tt, _ = cast_rays(mesh, np.broadcast_to(c, v.shape), v / dist[:, None])
        xc = X @ R.T + t
        uv = (xc @ K.T)[:, :2] / xc[:, 2:]
        vis = (np.abs(tt - dist) < 1e-3) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        idx = np.nonzero(vis)[0]
        kps.append(uv[idx] + noise * rng.normal(size=(len(idx), 2)))
        ids.append(idx)
    pairs, n_out = {}, 0
    for i in range(len(poses)):
        pos_i = {p: k for k, p in enumerate(ids[i])}
        for j in range(i + 1, len(poses)):
            common = [(pos_i[p], k) for k, p in enumerate(ids[j]) if p in pos_i]
            if len(common) < 30:
                continue
            m = np.array(common, np.int64)
            bad = rng.random(len(m)) < outlier
            m[bad, 1] = rng.integers(0, len(ids[j]), size=int(bad.sum()))
            n_out += int((ids[i][m[:, 0]] != ids[j][m[:, 1]]).sum())
            pairs[(i, j)] = m
    names = [f"view_{i:02d}.png" for i in range(len(poses))]
    return Matches(names, [(W, H)] * len(poses), kps, pairs, K.copy(), True), ids, n_out


def point_stats(state, ids, mesh, poses) -> dict:
    """Outlier 3D points (tracks mixing true points) and Chamfer of the points to the mesh (after alignment)."""
    live = state.live_ids()
    bad = sum(1 for p in live if len({int(ids[i][k]) for i, k in state.tracks[p].items()}) > 1)
    est_c = np.array([-state.poses[i][0].T @ state.poses[i][1] for i in sorted(state.poses)])
    gt_c = np.array([-poses[i][0].T @ poses[i][1] for i in sorted(state.poses)])
    s, r, b = umeyama(est_c, gt_c)
    Xw = s * state.points[live] @ r.T + b
    _, dist, _ = mesh.nearest.on_surface(Xw) if len(Xw) else (None, np.zeros(0), None)
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    return {"n_points": int(len(live)), "bad_points": int(bad),
            "chamfer_pct_diag": round(100 * float(np.mean(dist)) / diag, 4) if len(dist) else None}


def robustness(mesh_dir: Path, mesh_names, arms, n_views: int = 12, fractions=(0.15, 0.30)) -> list:
    K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])
    poses = ring_poses(n_views)
    diameter = max_pairwise_distance(np.array([-R.T @ t for R, t in poses]))
    rows = []
    for name in mesh_names:
        path = mesh_dir / f"{name}.off"
        if not path.exists():
            print(f"skip {name}: {path} missing")
            continue
        mesh, _, _ = load_mesh(path, 0.9)
        for frac in fractions:
            m, ids, n_out = synthetic_scene(mesh, poses, K, outlier=frac)
            for arm in arms:
                t0 = time.perf_counter()
                res = run_sfm(m, replace(SfmConfig(), **ARMS[arm]), show_progress=False)
                sec = time.perf_counter() - t0
                est = {i: p for i, p in res.state.poses.items()}
                row = {"mesh": name, "outliers": frac, "arm": arm, "registered": len(est), "total": n_views,
                       "outlier_matches": n_out, "seconds": round(sec, 1)}
                if len(est) >= 3:
                    ev = align_poses(est, dict(enumerate(poses)), scale_length=diameter)
                    row.update({k: round(ev[k], 4) for k in ("median_rot_err_deg", "max_rot_err_deg",
                                                              "median_centre_err_pct", "max_centre_err_pct")})
                    row.update(point_stats(res.state, ids, mesh, poses))
                    row["outlier_points_per_outlier_match"] = round(row["bad_points"] / max(n_out, 1), 4)
                rows.append(row)
                print(f"{name:<10} {frac:>5.2f} {arm:<3} reg {row['registered']:>2}/{n_views} "
                      f"rot med {row.get('median_rot_err_deg', float('nan')):.3f} max "
                      f"{row.get('max_rot_err_deg', float('nan')):.3f} centre med "
                      f"{row.get('median_centre_err_pct', float('nan')):.3f}% outlier pts "
                      f"{row.get('bad_points', '-')}/{n_out} chamfer {row.get('chamfer_pct_diag')}% "
                      f"{sec:.0f} s", flush=True)
    return rows
