"""New 3D points from the matches of a newly registered view: DLT (classic) or sphere tracing to f = 0 (neural).

Neural rule (Level-S²fM's geo_init_nf, at CPU scale): the SDF is first fitted to the existing points (|f| = 0) and,
Cauchy-weighted, to the candidates' DLT points (seeds: a consensus, isolated outliers barely move it); then both
rays of a match are sphere-traced to the zero level set, the point is the midpoint of the two hits, and it is kept
when both rays hit, the hits are closer than mean + 3 std of the candidates' hit distances, the midpoint reprojects
within ``max_reproj`` px in both views and the triangulation angle is at least ``min_tri_angle``.
(Upstream keeps a point when both traces converged *or* the distance is below mean + 1 std, with no reprojection
check; the reprojection check is added here.)  A track the traces lose (a miss, or a CPU-sized SDF too smooth
for the detail the ray meets) keeps its DLT point when that point lies on the surface, |f| < ``surface_tau``
(``dlt_on_surface``): the surface still rejects off-surface points, and the ring keeps 1.6x more points
(bench/RESULTS.md).  Candidates come from the feature tracks (:mod:`.tracks`): a keypoint
of the new view whose track already has a point extends that point (an observation is added when it reprojects
within ``max_reproj`` px) and never makes a duplicate; a track without a point is triangulated from the new view
and the track's registered view whose ray makes the widest angle with the new ray, and the new point then takes
every other registered observation of its track that reprojects within ``max_reproj`` px.
"""
from __future__ import annotations

import numpy as np
import torch

from .geometry import camera_centre, project, rays, triangulate_dlt, triangulation_angle_deg
from .surface import abs_sdf, fit_sdf, trace
from .tracks import feature_tracks


def _bearings(state, matches, img: int, kps) -> np.ndarray:
    """World-frame unit ray directions of keypoints ``kps`` [k] of registered view ``img`` -> [k, 3]."""
    return rays(state.K, state.poses[img], matches.keypoints[img][np.asarray(kps, np.int64)])[1]


def _candidates(state, matches, new: int):
    """The new view's tracked keypoints -> (extensions [(pid, kp)], candidates [(track, kp, j, kp_j, others)]):
    a track with a live point is extended; one without gets the partner view j with the widest ray angle, and
    ``others`` = its remaining registered observations [(image, keypoint)]."""
    tracks = feature_tracks(matches)
    track_of = tracks.track_of[new]
    ext, cand = [], []
    for ki in np.nonzero(track_of >= 0)[0]:
        ki, t = int(ki), int(track_of[ki])
        if ki in state.obs[new]:
            continue
        pid = state.point_of_track(tracks, t)
        if pid is not None:
            if new not in state.tracks[pid]:
                ext.append((pid, ki))
            continue
        others = [(img, kp) for img, kp in tracks.elements[t].items() if img != new and img in state.poses]
        if others:
            cand.append((t, ki, others))
    if not cand:
        return ext, []
    d_new = _bearings(state, matches, new, [c[1] for c in cand])
    out = []
    for (t, ki, others), d in zip(cand, d_new):
        if len(others) == 1:
            k = 0
        else:
            cos = [float(_bearings(state, matches, img, [kp])[0] @ d) for img, kp in others]
            k = int(np.argmin(cos))
        j, kj = others[k]
        out.append((t, ki, j, kj, others[:k] + others[k + 1:]))
    return ext, out


def _reproj_ok(state, img, X, uv, max_err):
    p, z = project(state.K, *state.poses[img], X)
    return (z > 0) & (np.linalg.norm(p - uv, axis=1) < max_err)


def extend_tracks(state, matches, new: int, ext, max_err: float) -> int:
    if not ext:
        return 0
    pids = np.array([p for p, _ in ext])
    kps = np.array([k for _, k in ext])
    ok = _reproj_ok(state, new, state.points[pids], matches.keypoints[new][kps], max_err)
    for p, k, good in zip(pids, kps, ok):
        if good and state.alive[p]:
            state.add_observation(int(p), new, int(k))
    return int(ok.sum())


def _dlt_points(state, matches, new, cand):
    """DLT points of candidates -> (X [C, 3], uv_new [C, 2], uv_other [C, 2], other image [C])."""
    X = np.zeros((len(cand), 3))
    js = np.array([c[2] for c in cand])
    uv_i = matches.keypoints[new][np.array([c[1] for c in cand])]
    uv_j = np.stack([matches.keypoints[c[2]][c[3]] for c in cand])
    for j in np.unique(js):
        m = js == j
        X[m] = triangulate_dlt(state.K, state.poses[new], state.poses[int(j)], uv_i[m], uv_j[m])
    return X, uv_i, uv_j, js


def complete_tracks(state, matches, pids, others, max_err: float) -> int:
    """Adds to each new point pids [P] the observations ``others[p]`` [(image, keypoint)] (registered views of its
    track beyond the two that made it) that reproject within ``max_err`` px -> count added."""
    n = 0
    for pid, obs in zip(pids, others):
        for img, kp in obs:
            if _reproj_ok(state, img, state.points[pid:pid + 1], matches.keypoints[img][kp:kp + 1], max_err)[0]:
                state.add_observation(int(pid), int(img), int(kp))
                n += 1
    return n


def _traced_points(state, field, new, uv_i, uv_j, js):
    """Sphere-traces both rays of each candidate -> (midpoints [C, 3], both hit [C], hit distance [C])."""
    o_i, d_i = rays(state.K, state.poses[new], uv_i)
    o_j, d_j = np.zeros_like(o_i), np.zeros_like(d_i)
    for j in np.unique(js):
        m = js == j
        o_j[m], d_j[m] = rays(state.K, state.poses[int(j)], uv_j[m])
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        x_i, h_i = trace(field, f32(o_i), f32(d_i))
        x_j, h_j = trace(field, f32(o_j), f32(d_j))
    x_i, x_j = x_i.double().numpy(), x_j.double().numpy()
    return (x_i + x_j) / 2, (h_i & h_j).numpy(), np.linalg.norm(x_i - x_j, axis=1)


def triangulate_view(state, matches, new: int, cfg, field=None) -> dict:
    """Extends tracks and adds new points for the registered view ``new`` -> counts."""
    ext, cand = _candidates(state, matches, new)
    n_ext = extend_tracks(state, matches, new, ext, cfg.max_reproj)
    if not cand:
        return {"extended": n_ext, "new_points": 0, "candidates": 0}
    X, uv_i, uv_j, js = _dlt_points(state, matches, new, cand)
    ok_i = _reproj_ok(state, new, X, uv_i, cfg.max_reproj)
    ok_j = np.array([_reproj_ok(state, int(j), X[k:k + 1], uv_j[k:k + 1], cfg.max_reproj)[0]
                     for k, j in enumerate(js)])
    neural = cfg.neural_triangulation and field is not None
    fb = np.zeros(len(cand), bool)
    if neural:
        X_dlt, dlt_ok = X, ok_i & ok_j
        good = dlt_ok
        live = state.live_ids()
        c_new = np.broadcast_to(camera_centre(state.poses[new]), (int(good.sum()), 3))
        centres = np.concatenate([state.seen_from(live), c_new])
        fit_sdf(field, state.points[live], cfg.tri_steps, cfg.lr_sdf, seeds=X[good], seed=cfg.seed + new,
                centres=centres)
        X, both, dist = _traced_points(state, field, new, uv_i, uv_j, js)
        tol = cfg.max_reproj * cfg.neural_reproj_scale
        ok_i = _reproj_ok(state, new, X, uv_i, tol)
        ok_j = np.array([_reproj_ok(state, int(j), X[k:k + 1], uv_j[k:k + 1], tol)[0] for k, j in enumerate(js)])
        d = dist[both]
        limit = d.mean() + 3 * d.std() if len(d) else 0.0
        keep_rule = both & (dist <= limit)
        if cfg.dlt_on_surface:  # tracks the traces lost: the DLT point, when it lies on the surface
            fb = ~(keep_rule & ok_i & ok_j) & dlt_ok & (abs_sdf(field, X_dlt) < cfg.surface_tau * state.radius)
            X, ok_i, ok_j, keep_rule = np.where(fb[:, None], X_dlt, X), ok_i | fb, ok_j | fb, keep_rule | fb
    else:
        keep_rule = np.isfinite(X).all(1)
    c_i = camera_centre(state.poses[new])
    angles = np.array([triangulation_angle_deg(c_i, camera_centre(state.poses[int(j)]), X[k:k + 1])[0]
                       for k, j in enumerate(js)])
    keep = keep_rule & ok_i & ok_j & (angles >= cfg.min_tri_angle)
    idx = np.nonzero(keep)[0]
    pids = state.add_points(X[keep], [{new: cand[k][1], cand[k][2]: cand[k][3]} for k in idx],
                            track_ids=[cand[k][0] for k in idx])
    n_more = complete_tracks(state, matches, pids, [cand[k][4] for k in idx], cfg.max_reproj)
    return {"extended": n_ext, "new_points": int(keep.sum()), "candidates": len(cand), "completed": n_more,
            "dlt_on_surface": int((keep & fb).sum())}
