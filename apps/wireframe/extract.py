"""Final wireframe extraction (NEAT's ``neat-final-parsing.py``, simplified where noted).

All coordinates here are the normalised scene's (the cameras' normalised world), lengths in its units.

1. Junctions. GJP: the decoded global junctions snapped onto the surface by Newton steps
   (:func:`nfkit.renderers.surface.newton_project`), kept where |f| < ``snap_tol``; without GJP (the ablation):
   radius clustering of every rendered endpoint (cluster means, clusters of >= 2). Junctions closer than
   ``junction_radius`` merge (cluster means).
2. Per training view, the attraction field is rendered at the support pixels of radius ``extract_radius`` px;
   a ray is kept when its projected segment lies within ``reproj_px`` (RMS over the 4 coordinates, endpoint order
   free) of its 2-D segment; the kept rays' 3-D segments (endpoints ordered as the 2-D segment's) are averaged per
   2-D segment: one 3-D segment per (view, 2-D segment) seen by >= ``min_rays`` rays.
3. Voting: each such segment's endpoints go to their nearest junctions when both are within ``assign_radius``
   and different (NEAT: Hungarian with a threshold, then nearest junctions); the edge collects the view.
4. Kept edges: voted from >= ``min_views`` views (:func:`min_views_for`) and passing NEAT's visibility check
   (the edge projected into a training view lies within ``check_px``, mean endpoint distance, order free, of a
   2-D segment in >= ``min_views`` views); then the vote-ratio filter (:mod:`.visibility`: voted from >=
   ``min_vote_ratio`` of the training views that see the whole edge unoccluded by the trained surface); then
   non-maximum suppression: an edge within ``assign_radius`` of an edge with more votes goes (duplicated
   junctions). The wireframe's junctions are the kept edges' endpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nfkit.cameras import pixel_rays
from nfkit.progress import progress_bar
from nfkit.renderers.surface import newton_project_field

from .lines2d import cluster_means, cluster_points, support_pixels
from .matching import segment_distance_matrix
from .model import MIN_OPACITY, render_lines_chunked
from .objective import to_image
from .visibility import edge_seen_counts


@dataclass
class Wireframe:
    """junctions [J, 3], edges [E, 2] (indices), views [E] (views that voted for each edge)."""

    junctions: np.ndarray
    edges: np.ndarray
    views: np.ndarray

    @staticmethod
    def empty() -> "Wireframe":
        return Wireframe(np.zeros((0, 3)), np.zeros((0, 2), np.int64), np.zeros(0, np.int64))


def merge_points(points: np.ndarray, radius: float, min_size: int = 1) -> np.ndarray:
    """Cluster means of points [P, 3] within ``radius`` (single linkage), clusters of >= ``min_size``."""
    if len(points) == 0:
        return points.reshape(0, 3)
    means, counts = cluster_means(points, cluster_points(points, radius))
    return means[counts >= min_size]


def snap_junctions(field, jg: torch.Tensor, steps: int, tol: float) -> np.ndarray:
    """Global junctions [N, 3] -> the ones within ``tol`` of the surface after ``steps`` Newton steps [K, 3]."""
    x = newton_project_field(field, jg.detach(), steps=steps, create_graph=False)
    f, _ = field.sdf_and_gradient(x, create_graph=False)
    keep = (f.abs() < tol) & torch.isfinite(x).all(-1)
    return x[keep].detach().double().numpy()


@torch.no_grad()
def view_segments(field, head, grid, opts, train, lines, cfg, progress: bool = False):
    """Step 2 of the module docstring -> (segments [S, 2, 3], view of each [S])."""
    cams, (_, h, w, _) = train.cameras, train.images.shape
    segs_out, views_out = [], []
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = progress_bar(total=len(lines), disable=not progress, desc="extract", dynamic_ncols=True)
    for v, ln in enumerate(lines):
        bar.update(1)
        idx, lab = support_pixels(ln, h, w, cfg.extract_radius)
        if len(idx) == 0:
            continue
        if len(idx) > cfg.extract_rays:
            pick = torch.randperm(len(idx), generator=gen)[: cfg.extract_rays]
            idx, lab = idx[pick], lab[pick]
        o, d = pixel_rays(cams, torch.full_like(idx, v), idx % w, idx // w)
        r = render_lines_chunked(field, head, grid, o, d, opts)
        seen = r["weight_sum"] >= MIN_OPACITY
        seg3, idx, lab = r["lines"][seen], idx[seen], lab[seen]
        pa, _ = to_image(cams, v, seg3[:, :3])
        pb, _ = to_image(cams, v, seg3[:, 3:])
        pred = torch.cat([pa, pb], -1)
        tgt = torch.as_tensor(ln.segments)[lab]
        e1 = ((pred - tgt) ** 2).mean(-1)
        e2 = ((pred - tgt[:, [2, 3, 0, 1]]) ** 2).mean(-1)
        swap = e2 < e1
        seg3 = torch.where(swap[:, None], seg3[:, [3, 4, 5, 0, 1, 2]], seg3)
        ok = (torch.minimum(e1, e2) < cfg.reproj_px ** 2) & torch.isfinite(seg3).all(-1)
        lab, seg3 = lab[ok], seg3[ok]
        counts = torch.bincount(lab, minlength=len(ln))
        sums = torch.zeros(len(ln), 6, dtype=seg3.dtype).index_add_(0, lab, seg3)
        good = counts >= cfg.min_rays
        if good.any():
            segs_out.append((sums[good] / counts[good, None]).reshape(-1, 2, 3).double().numpy())
            views_out.append(np.full(int(good.sum()), v))
    bar.close()
    if not segs_out:
        return np.zeros((0, 2, 3)), np.zeros(0, np.int64)
    return np.concatenate(segs_out), np.concatenate(views_out)


def vote_edges(junctions: np.ndarray, segs: np.ndarray, views: np.ndarray, radius: float):
    """Step 3 -> {(i, j): set of views} with i < j."""
    from scipy.spatial import cKDTree

    edges: dict[tuple[int, int], set] = {}
    if len(junctions) < 2 or len(segs) == 0:
        return edges
    dist, nn = cKDTree(junctions).query(segs.reshape(-1, 3))
    dist, nn = dist.reshape(-1, 2), nn.reshape(-1, 2)
    for (i, j), (da, db), v in zip(nn, dist, views):
        if i != j and max(da, db) < radius:
            edges.setdefault((min(i, j), max(i, j)), set()).add(int(v))
    return edges


def visible_views(seg3: np.ndarray, train, lines, check_px: float) -> np.ndarray:
    """seg3 [E, 2, 3] -> [E] number of training views where a 2-D segment lies within ``check_px`` (mean endpoint
    distance, order free) of the projected segment (NEAT's visibility check)."""
    count = np.zeros(len(seg3), np.int64)
    if len(seg3) == 0:
        return count
    x = torch.as_tensor(seg3.reshape(-1, 3), dtype=torch.float32)
    for v, ln in enumerate(lines):
        if len(ln) == 0:
            continue
        px, _ = to_image(train.cameras, v, x)
        d = segment_distance_matrix(px.double().numpy().reshape(-1, 2, 2), ln.segments.reshape(-1, 2, 2))
        count += (d.min(1) < check_px).astype(np.int64)
    return count


def suppress_duplicates(seg3: np.ndarray, votes: np.ndarray, radius: float) -> np.ndarray:
    """Non-maximum suppression of edges: seg3 [E, 2, 3], votes [E] -> keep mask [E]; an edge within ``radius``
    (mean endpoint distance, order free) of an edge with more votes is dropped (duplicated junctions)."""
    keep = np.zeros(len(seg3), bool)
    if len(seg3) == 0:
        return keep
    d = segment_distance_matrix(seg3, seg3)
    for e in np.argsort(-votes, kind="stable"):
        keep[e] = not (d[e, keep] < radius).any()
    return keep


def min_views_for(cfg, n_views: int) -> int:
    """``cfg.min_views``, or when 0: NEAT's 5 views (set for 49-100 views) down to a quarter of the views (>= 2)."""
    return cfg.min_views if cfg.min_views > 0 else min(5, max(2, n_views // 4))


def build_wireframe(junctions: np.ndarray, segs: np.ndarray, views: np.ndarray, train, lines, cfg,
                    seen_counts=None) -> Wireframe:
    """Steps 3-4 of the module docstring. ``seen_counts``: seg3 [E, 2, 3] -> [E] views that see each edge
    (:func:`.visibility.edge_seen_counts`); None skips the vote-ratio filter."""
    junctions = merge_points(junctions, cfg.junction_radius)
    votes = vote_edges(junctions, segs, views, cfg.assign_radius)
    min_views = min_views_for(cfg, len(lines))
    pairs = [(e, len(v)) for e, v in votes.items() if len(v) >= min_views]
    if not pairs:
        return Wireframe.empty()
    edges = np.array([e for e, _ in pairs], np.int64)
    nviews = np.array([n for _, n in pairs], np.int64)
    vis = visible_views(junctions[edges], train, lines, cfg.check_px)
    keep = vis >= min_views
    edges, nviews = edges[keep], nviews[keep]
    if seen_counts is not None and cfg.min_vote_ratio > 0 and len(edges):
        keep = nviews >= cfg.min_vote_ratio * seen_counts(junctions[edges])
        edges, nviews = edges[keep], nviews[keep]
    keep = suppress_duplicates(junctions[edges], nviews, cfg.assign_radius)
    edges, nviews = edges[keep], nviews[keep]
    if len(edges) == 0:
        return Wireframe.empty()
    used = np.unique(edges.reshape(-1))
    remap = -np.ones(len(junctions), np.int64)
    remap[used] = np.arange(len(used))
    return Wireframe(junctions[used], remap[edges].reshape(-1, 2), nviews)


def extract_wireframe(field, head, junction_decoder, grid, opts, train, lines, cfg, use_gjp: bool = True,
                      progress: bool = False) -> tuple[Wireframe, dict]:
    """The whole extraction -> (wireframe in normalised coordinates, stats)."""
    segs, views = view_segments(field, head, grid, opts, train, lines, cfg, progress)
    if use_gjp:
        with torch.no_grad():
            jg = junction_decoder()
        junctions = snap_junctions(field, jg, cfg.snap_steps, cfg.snap_tol)
    else:
        junctions = merge_points(segs.reshape(-1, 3), cfg.junction_radius, min_size=2)
    size = tuple(train.images.shape[1:3])
    seen = lambda seg3: edge_seen_counts(field, head, grid, opts, train.cameras, size, seg3,  # noqa: E731
                                         cfg.occlusion_tol)
    wf = build_wireframe(junctions, segs, views, train, lines, cfg, seen_counts=seen)
    stats = {"view_segments": int(len(segs)), "candidate_junctions": int(len(junctions)),
             "junctions": int(len(wf.junctions)), "edges": int(len(wf.edges))}
    return wf, stats
