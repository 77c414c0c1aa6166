"""Which training views see a 3-D edge (occlusion by the trained surface), for the vote-ratio filter of the
extraction (:mod:`.extract`).

A point X is *seen* by view v when it projects inside the image, lies in front of the camera, and the ray from
v's centre towards X meets the surface no nearer than ``|X - c_v| - tol`` (the rendered depth divided by the ray's
opacity: points on silhouettes and corners are grazed by rays of partial opacity; a ray that misses the surface,
opacity < :data:`~.model.MIN_OPACITY`, does not occlude). An edge is seen when its endpoints, midpoint and
quarter points all are.

The filter: a 3-D edge voted for from n views and seen by m views is kept when n >= ``min_vote_ratio`` * m --
consistent 3-D lines are detected in a good share of the views that see them, while the chords of a curved
contour (a through-hole's rim, that a 2-D detector cuts into different polygon sides in each view) gather votes
from a few views only (a multi-view consistency test; NEAT's own visibility check counts supporting views but not
the views that should have supported the edge). Measured on the ABC object: bench/RESULTS.md.
"""
from __future__ import annotations

import numpy as np
import torch

from .model import MIN_OPACITY, render_lines_chunked
from .objective import to_image

EDGE_SAMPLES = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def seen_by_views(field, head, grid, opts, cams, size: tuple[int, int], points: np.ndarray,
                  tol: float) -> np.ndarray:
    """points [P, 3] (normalised scene) -> [P, V] bool: view v sees the point (module docstring). ``size``: the
    training images' (h, w)."""
    h, w = size
    x = torch.as_tensor(np.asarray(points).reshape(-1, 3), dtype=torch.float32)
    out = np.zeros((len(x), len(cams)), bool)
    if len(x) == 0:
        return out
    for v in range(len(cams)):
        px, _ = to_image(cams, v, x)
        c = cams.c2w[v, :3, 3].to(x.dtype)
        dist = (x - c).norm(dim=-1)
        inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h) & torch.isfinite(px).all(-1)
        front = ((x - c) @ cams.c2w[v, :3, 2].to(x.dtype)) < 0  # nfkit's cameras (OpenGL axes) look along -z
        todo = inside & front
        if not todo.any():
            continue
        d = (x[todo] - c) / dist[todo, None]
        r = render_lines_chunked(field, head, grid, c.expand_as(d).contiguous(), d, opts)
        depth = r["depth"] / r["weight_sum"].clamp_min(1e-6)
        seen = (r["weight_sum"] < MIN_OPACITY) | (depth >= dist[todo] - tol)
        out[todo.numpy(), v] = seen.numpy()
    return out


def edge_seen_counts(field, head, grid, opts, cams, size, seg3: np.ndarray, tol: float) -> np.ndarray:
    """seg3 [E, 2, 3] -> [E] number of views that see the whole edge (its 5 sample points)."""
    if len(seg3) == 0:
        return np.zeros(0, np.int64)
    t = np.asarray(EDGE_SAMPLES)[:, None, None]
    pts = (1 - t) * seg3[None, :, 0] + t * seg3[None, :, 1]  # [5, E, 3]
    seen = seen_by_views(field, head, grid, opts, cams, size, pts.reshape(-1, 3), tol)
    return seen.reshape(len(EDGE_SAMPLES), len(seg3), -1).all(0).sum(1)
