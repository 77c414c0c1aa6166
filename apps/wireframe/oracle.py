"""Oracle 2-D wireframes: known 3-D edges projected into each view, clipped to their visible parts (for tests and
checks; NEAT's replacement (1) for a learned detector).

Visibility by ray casting the mesh (:func:`nfkit.datasets.raycast.cast_rays`): ``samples`` points along each edge;
a point is visible when the first hit of the ray from the camera centre towards it is not nearer than the point
(tolerance ``eps`` times the distance). Runs of consecutive visible points become 2-D segments (runs shorter than
``min_px`` pixels dropped). Junctions: the projections of the visible 3-D junctions. Scores 1. Optional noise:
endpoint jitter (``jitter_px``, Gaussian) and dropping a fraction of the segments (``drop``).
"""
from __future__ import annotations

import numpy as np

from nfkit.datasets.raycast import cast_rays

from .classic import _cams_np, project
from .lines2d import ViewLines


def sharp_edges(mesh, min_angle_deg: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """A polyhedral mesh's vertices [V, 3] and sharp edges [E, 2] (faces meeting at more than ``min_angle_deg``;
    for a box: its 8 corners and 12 edges)."""
    sharp = mesh.face_adjacency_edges[mesh.face_adjacency_angles > np.radians(min_angle_deg)]
    used = np.unique(sharp.reshape(-1))
    remap = -np.ones(len(mesh.vertices), np.int64)
    remap[used] = np.arange(len(used))
    return np.asarray(mesh.vertices)[used], remap[sharp]


def _visible(mesh, centre: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    d = x - centre
    dist = np.linalg.norm(d, axis=-1)
    t, _ = cast_rays(mesh, np.broadcast_to(centre, x.shape), d / dist[:, None])
    return t >= dist * (1 - eps)


def oracle_lines(mesh, cams, junctions: np.ndarray, edges: np.ndarray, samples: int = 64, eps: float = 2e-3,
                 min_px: float = 2.0, jitter_px: float = 0.0, drop: float = 0.0, seed: int = 0) -> list[ViewLines]:
    """One :class:`ViewLines` per camera of ``cams`` (normalised coordinates, as ``mesh``, ``junctions`` [J, 3],
    ``edges`` [E, 2])."""
    rng = np.random.default_rng(seed)
    cam = _cams_np(cams)
    s = np.linspace(0.0, 1.0, samples)
    a, b = junctions[edges[:, 0]], junctions[edges[:, 1]]
    pts = a[:, None] + s[None, :, None] * (b - a)[:, None]  # [E, S, 3]
    out = []
    for i in range(len(cams)):
        centre = cam[0][i, :3, 3]
        vis = _visible(mesh, centre, pts.reshape(-1, 3), eps).reshape(len(edges), samples)
        px, z = project(cam, i, pts.reshape(-1, 3))
        px = px.reshape(len(edges), samples, 2)
        inside = (z.reshape(len(edges), samples) > 0) & (px[..., 0] >= 0) & (px[..., 0] <= cams.width) & \
            (px[..., 1] >= 0) & (px[..., 1] <= cams.height)
        vis &= inside
        segs = []
        for e in range(len(edges)):
            v = np.concatenate([[False], vis[e], [False]]).astype(np.int8)
            starts, ends = np.flatnonzero(np.diff(v) == 1), np.flatnonzero(np.diff(v) == -1) - 1
            for k0, k1 in zip(starts, ends):
                seg = np.concatenate([px[e, k0], px[e, k1]])
                if np.linalg.norm(seg[:2] - seg[2:]) >= min_px:
                    segs.append(seg)
        segs = np.array(segs, np.float64).reshape(-1, 4)
        if drop > 0 and len(segs):
            segs = segs[rng.random(len(segs)) >= drop]
        if jitter_px > 0:
            segs = segs + rng.normal(0, jitter_px, segs.shape)
        jv = _visible(mesh, centre, junctions, eps)
        jp, jz = project(cam, i, junctions)
        out.append(ViewLines(segs.astype(np.float32), np.ones(len(segs), np.float32),
                             jp[jv & (jz > 0)].astype(np.float32)))
    return out


def write_hawp(folder, names: list[str], lines: list[ViewLines], height: int, width: int) -> None:
    """Writes 2-D wireframes as HAWP JSON files (``folder/<image stem>.json``; OpenCV pixel coordinates), so that
    ``nfkit wireframe DATA --lines folder`` reads them."""
    from pathlib import Path

    from nfkit.atomic import write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, ln in zip(names, lines):
        pts = np.concatenate([ln.junctions.reshape(-1, 2), ln.segments.reshape(-1, 2)]).astype(np.float64) - 0.5
        n_j = len(ln.junctions)
        edges = [[n_j + 2 * k, n_j + 2 * k + 1] for k in range(len(ln.segments))]
        write_json_atomic(folder / (Path(name).stem + ".json"), {
            "vertices": pts.tolist(), "vertices-score": [1.0] * len(pts), "edges": edges,
            "edges-weights": [float(s) for s in ln.scores], "height": int(height), "width": int(width)})
