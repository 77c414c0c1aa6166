"""Classic baseline: 3-D lines from the same 2-D segments and known cameras by epipolar matching, triangulation and
merging (a simple version in the spirit of Line3D++; no learned parts).

1. Neighbours: for each view, the ``neighbours`` views whose optical axes are closest in angle (at least
   ``min_angle_deg`` apart, so the baseline is not degenerate).
2. Hypotheses: for a segment s of view i and every segment t of a neighbour j, the 3-D line is the intersection of
   the two back-projected planes (camera centre + segment); s's endpoints are triangulated on it (their rays
   against t's plane) and t's too; a pair is kept when both lie in front of both cameras, the planes are not
   nearly parallel, and the two extents along the line overlap by >= ``min_overlap`` (intersection over union:
   the epipolar overlap test).
3. Scoring: a hypothesis is projected into the other neighbours of i; it is supported by a view holding a segment
   within ``support_px`` (both projected endpoints' distance to that segment's line) and ``support_deg``;
   each segment of i keeps its best hypothesis when supported by >= ``min_support`` views.
4. Merging: kept 3-D segments, strongest first, join a cluster when nearly collinear with it (angle <
   ``merge_deg``, endpoints within ``merge_radius`` of its line) and overlapping; a cluster's extent is the
   union along its line; clusters of >= 2 segments remain. Junctions: the clusters' endpoints clustered within
   ``junction_radius`` (means); edges: the clusters whose two endpoints fall in different junctions.

Coordinates: normalised scene (cameras' normalised world), as :mod:`nfkit.apps.wireframe.extract`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .extract import Wireframe
from .lines2d import cluster_means, cluster_points


@dataclass
class ClassicConfig:
    neighbours: int = 6
    min_angle_deg: float = 5.0
    min_overlap: float = 0.5
    support_px: float = 2.0
    support_deg: float = 5.0
    min_support: int = 2
    merge_deg: float = 5.0
    merge_radius: float = 0.04
    junction_radius: float = 0.08


def _cams_np(cams):
    c2w = cams.c2w.double().numpy()
    return c2w, cams.fx.double().numpy(), cams.fy.double().numpy(), cams.cx.double().numpy(), cams.cy.double().numpy()


def backproject(cam, i: int, px: np.ndarray) -> np.ndarray:
    """Pixels [P, 2] (nfkit convention) of view i -> world ray directions [P, 3] (not unit)."""
    c2w, fx, fy, cx, cy = cam
    x, y = (px[:, 0] - cx[i]) / fx[i], (px[:, 1] - cy[i]) / fy[i]
    d_cam = np.stack([x, -y, -np.ones_like(x)], -1)  # OpenGL camera axes
    return d_cam @ c2w[i, :3, :3].T


def project(cam, i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [P, 3] -> (pixels [P, 2], depth in front of the camera [P])."""
    c2w, fx, fy, cx, cy = cam
    pc = (x - c2w[i, :3, 3]) @ c2w[i, :3, :3]
    z = -pc[:, 2]
    zs = np.where(np.abs(z) < 1e-9, 1e-9, z)
    return np.stack([pc[:, 0] / zs * fx[i] + cx[i], -pc[:, 1] / zs * fy[i] + cy[i]], -1), z


def _ray_plane(o, d, n, p0):
    """Rays o + t d [P, 3] against planes n . (x - p0) = 0 [P, 3] -> (points [P, 3], t [P])."""
    den = (d * n).sum(-1)
    t = ((p0 - o) * n).sum(-1) / np.where(np.abs(den) < 1e-12, 1e-12, den)
    return o + t[:, None] * d, t


def _planes(cam, i, segs):
    """Segments [M, 4] of view i -> (unit plane normals [M, 3], ray dirs of a [M, 3], of b [M, 3])."""
    da, db = backproject(cam, i, segs[:, :2]), backproject(cam, i, segs[:, 2:])
    n = np.cross(da, db)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12), da, db


def _neighbours(cam, k: int, min_angle_deg: float) -> list[np.ndarray]:
    c2w = cam[0]
    axes = -c2w[:, :3, 2]
    cos = np.clip(axes @ axes.T, -1, 1)
    ang = np.degrees(np.arccos(cos))
    out = []
    for i in range(len(c2w)):
        a = np.where(ang[i] >= min_angle_deg, ang[i], np.inf)
        order = np.argsort(a)
        out.append(order[: k][np.isfinite(a[order[: k]])])
    return out


def _hypotheses(cam, i, j, si, sj, cfg):
    """All (s of i, t of j) pairs -> (index of s [H], 3-D segments [H, 2, 3]) passing the tests of step 2."""
    ci, cj = cam[0][i, :3, 3], cam[0][j, :3, 3]
    ni, dai, dbi = _planes(cam, i, si)
    nj, daj, dbj = _planes(cam, j, sj)
    a, b = np.meshgrid(np.arange(len(si)), np.arange(len(sj)), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    ok = np.linalg.norm(np.cross(ni[a], nj[b]), axis=-1) > np.sin(np.radians(2.0))
    a, b = a[ok], b[ok]
    qa, ta = _ray_plane(np.broadcast_to(ci, (len(a), 3)), dai[a], nj[b], np.broadcast_to(cj, (len(a), 3)))
    qb, tb = _ray_plane(np.broadcast_to(ci, (len(a), 3)), dbi[a], nj[b], np.broadcast_to(cj, (len(a), 3)))
    pa, ua = _ray_plane(np.broadcast_to(cj, (len(a), 3)), daj[b], ni[a], np.broadcast_to(ci, (len(a), 3)))
    pb, ub = _ray_plane(np.broadcast_to(cj, (len(a), 3)), dbj[b], ni[a], np.broadcast_to(ci, (len(a), 3)))
    front = (ta > 0) & (tb > 0) & (ua > 0) & (ub > 0)
    u = qb - qa
    L = np.linalg.norm(u, axis=-1)
    u = u / np.maximum(L, 1e-12)[:, None]
    s0, s1 = np.zeros_like(L), L
    r0, r1 = ((pa - qa) * u).sum(-1), ((pb - qa) * u).sum(-1)
    r0, r1 = np.minimum(r0, r1), np.maximum(r0, r1)
    inter = np.clip(np.minimum(s1, r1) - np.maximum(s0, r0), 0, None)
    union = np.maximum(s1, r1) - np.minimum(s0, r0)
    keep = front & (inter / np.maximum(union, 1e-12) >= cfg.min_overlap) & (L > 1e-6)
    return a[keep], np.stack([qa[keep], qb[keep]], 1)


def _support(cam, views, seg3, lines, cfg) -> np.ndarray:
    """3-D segments [H, 2, 3] -> [H] number of ``views`` holding a 2-D segment that explains their projection."""
    score = np.zeros(len(seg3), np.int64)
    cos_t = np.cos(np.radians(cfg.support_deg))
    for k in views:
        sk = lines[k].segments.astype(np.float64)
        if len(sk) == 0:
            continue
        p, z = project(cam, k, seg3.reshape(-1, 3))
        p, z = p.reshape(-1, 2, 2), z.reshape(-1, 2)
        a, b = sk[:, :2], sk[:, 2:]
        dk = (b - a) / np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True), 1e-12)
        nk = np.stack([-dk[:, 1], dk[:, 0]], -1)
        dist = np.maximum(np.abs(((p[:, None, 0] - a[None]) * nk[None]).sum(-1)),
                          np.abs(((p[:, None, 1] - a[None]) * nk[None]).sum(-1)))
        dh = p[:, 1] - p[:, 0]
        dh = dh / np.maximum(np.linalg.norm(dh, axis=-1, keepdims=True), 1e-12)
        ang_ok = np.abs(dh @ dk.T) >= cos_t
        # overlap along the 2-D segment: the projected extent meets [0, |b - a|]
        t0 = ((p[:, None, 0] - a[None]) * dk[None]).sum(-1)
        t1 = ((p[:, None, 1] - a[None]) * dk[None]).sum(-1)
        lk = np.linalg.norm(b - a, axis=-1)[None]
        overlap = (np.maximum(t0, t1) > 0) & (np.minimum(t0, t1) < lk)
        hit = (dist <= cfg.support_px) & ang_ok & overlap & (z.min(1) > 0)[:, None]
        score += hit.any(1)
    return score


def _merge(segs: np.ndarray, scores: np.ndarray, cfg) -> list[np.ndarray]:
    """Greedy collinear merging (step 4) -> list of merged segments [2, 3] (clusters of >= 2)."""
    order = np.argsort(-scores)
    clusters: list[dict] = []
    cos_t = np.cos(np.radians(cfg.merge_deg))
    for s in segs[order]:
        d = s[1] - s[0]
        d = d / max(np.linalg.norm(d), 1e-12)
        for c in clusters:
            if abs(d @ c["dir"]) < cos_t:
                continue
            rel = s - c["p"]
            perp = rel - np.outer(rel @ c["dir"], c["dir"])
            if np.linalg.norm(perp, axis=-1).max() > cfg.merge_radius:
                continue
            t = rel @ c["dir"]
            if t.max() < c["t0"] - cfg.merge_radius or t.min() > c["t1"] + cfg.merge_radius:
                continue
            c["t0"], c["t1"], c["n"] = min(c["t0"], t.min()), max(c["t1"], t.max()), c["n"] + 1
            break
        else:
            clusters.append({"p": s[0], "dir": d, "t0": 0.0, "t1": float(np.linalg.norm(s[1] - s[0])), "n": 1})
    return [np.stack([c["p"] + c["t0"] * c["dir"], c["p"] + c["t1"] * c["dir"]]) for c in clusters if c["n"] >= 2]


def classic_wireframe(train, lines, cfg: ClassicConfig | None = None) -> tuple[Wireframe, dict]:
    """The baseline of the module docstring -> (wireframe in normalised coordinates, stats)."""
    cfg = cfg or ClassicConfig()
    cam = _cams_np(train.cameras)
    nbrs = _neighbours(cam, cfg.neighbours, cfg.min_angle_deg)
    kept, kept_score = [], []
    for i, ln in enumerate(lines):
        si = ln.segments.astype(np.float64)
        if len(si) == 0 or len(nbrs[i]) < 2:
            continue
        best = np.zeros(len(si), np.int64)
        best_seg = np.zeros((len(si), 2, 3))
        for j in nbrs[i]:
            sj = lines[j].segments.astype(np.float64)
            if len(sj) == 0:
                continue
            idx, hyp = _hypotheses(cam, i, j, si, sj, cfg)
            if len(idx) == 0:
                continue
            sc = _support(cam, [k for k in nbrs[i] if k != j], hyp, lines, cfg)
            for h in np.argsort(sc):  # ascending: the best hypothesis of each segment is written last
                if sc[h] > best[idx[h]]:
                    best[idx[h]], best_seg[idx[h]] = sc[h], hyp[h]
        good = best >= cfg.min_support
        kept += list(best_seg[good])
        kept_score += list(best[good])
    if not kept:
        return Wireframe.empty(), {"hypotheses_kept": 0, "merged_lines": 0}
    merged = _merge(np.array(kept), np.array(kept_score), cfg)
    if not merged:
        return Wireframe.empty(), {"hypotheses_kept": len(kept), "merged_lines": 0}
    ends = np.array(merged).reshape(-1, 3)
    labels = cluster_points(ends, cfg.junction_radius)
    junctions, _ = cluster_means(ends, labels)
    e = labels.reshape(-1, 2)
    e = np.unique(np.sort(e[e[:, 0] != e[:, 1]], axis=1), axis=0)
    used = np.unique(e.reshape(-1))
    remap = -np.ones(len(junctions), np.int64)
    remap[used] = np.arange(len(used))
    wf = Wireframe(junctions[used], remap[e].reshape(-1, 2), np.zeros(len(e), np.int64))
    return wf, {"hypotheses_kept": len(kept), "merged_lines": len(merged)}
