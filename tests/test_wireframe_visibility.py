"""The extraction's vote-ratio filter (nfkit wireframe): which views see a 3-D edge (occlusion by the surface), and
edges voted from too small a share of the views that see them are dropped (fast; an analytic sphere stands in
for the trained field's rendering)."""
import nfkit  # noqa: F401
import numpy as np
import torch

from nfkit.apps.wireframe import visibility
from nfkit.apps.wireframe.config import WireframeConfig
from nfkit.apps.wireframe.extract import build_wireframe
from nfkit.apps.wireframe.lines2d import ViewLines
from nfkit.cameras import Cameras
from nfkit.poses import look_at

RADIUS = 0.5


def ring_cameras(n: int = 8, size: int = 64) -> Cameras:
    """n cameras on a circle of radius 4 in the z = 0 plane, looking at the origin (OpenGL axes)."""
    ang = 2 * np.pi * np.arange(n) / n
    eye = np.stack([4 * np.cos(ang), 4 * np.sin(ang), np.zeros(n)], 1)
    c2w = torch.as_tensor(look_at(eye, np.zeros((n, 3))), dtype=torch.float32)
    f = torch.full((n,), 60.0)
    c = torch.full((n,), size / 2)
    return Cameras(c2w, f, f, c, c.clone(), size, size)


def sphere_render(field, head, grid, rays_o, rays_d, opts, chunk: int = 2048) -> dict:
    """Stands in for render_lines_chunked: depth * opacity of a sphere of RADIUS at the origin (misses: 0, 0)."""
    b = (rays_o * rays_d).sum(-1)
    disc = b * b - ((rays_o * rays_o).sum(-1) - RADIUS**2)
    hit = disc > 0
    t = -b - disc.clamp_min(0).sqrt()
    w = hit.float()
    return {"depth": t * w, "weight_sum": w, "lines": torch.zeros(len(b), 6), "normals": torch.zeros(len(b), 3)}


def test_points_behind_the_surface_are_not_seen(monkeypatch):
    monkeypatch.setattr(visibility, "render_lines_chunked", sphere_render)
    cams = ring_cameras()
    pts = np.array([[RADIUS, 0, 0], [-RADIUS, 0, 0], [0, 0, 0.9], [9.0, 0, 0]])
    seen = visibility.seen_by_views(None, None, None, None, cams, (64, 64), pts, tol=0.05)
    # (r, 0, 0): on the sphere, facing the cameras at angles within 90 deg of +x (views 0, 1, 7; 2 and 6 graze)
    assert seen[0, [0, 1, 7]].all() and not seen[0, [3, 4, 5]].any()
    assert seen[1, [3, 4, 5]].all() and not seen[1, [0, 1, 7]].any()  # the antipode: the other half
    assert seen[2].all()  # above the sphere: no ray to it meets the surface first
    # (9, 0, 0): behind view 0's camera (not in front), outside the other views' images or behind the sphere
    assert not seen[3, 0] and not seen[3, 4]
    seg = np.array([[[RADIUS, 0, 0], [RADIUS * 0.8, RADIUS * 0.6, 0]], [[0, 0, 0.9], [0, 0.3, 0.9]]])
    counts = visibility.edge_seen_counts(None, None, None, None, cams, (64, 64), seg, tol=0.05)
    assert counts[1] == 8 and 1 <= counts[0] <= 3


def test_vote_ratio_filter_drops_edges_voted_from_few_of_the_views_that_see_them(monkeypatch):
    import nfkit.apps.wireframe.extract as ex

    # a square of 4 junctions; edges 0-1 and 1-2 voted from 20 views, 2-3 from 6 (a chord of a curved contour)
    junctions = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    segs, views = [], []
    for (a, b), n in (((0, 1), 20), ((1, 2), 20), ((2, 3), 6)):
        for v in range(n):
            segs.append(junctions[[a, b]] + 0.001 * v)
            views.append(v)
    segs, views = np.array(segs), np.array(views)
    lines = [ViewLines(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.float32))] * 30
    # NEAT's visibility check passes every edge here: only the vote ratio decides
    monkeypatch.setattr(ex, "visible_views", lambda seg3, train, lines, check_px: np.full(len(seg3), 30))
    seen_by_30 = lambda seg3: np.full(len(seg3), 30)  # noqa: E731
    cfg = WireframeConfig(min_views=5, junction_radius=0.01, assign_radius=0.1, min_vote_ratio=0.25)
    wf = build_wireframe(junctions, segs, views, None, lines, cfg, seen_counts=seen_by_30)
    assert len(wf.edges) == 2 and sorted(wf.views.tolist()) == [20, 20]  # 6 / 30 < 0.25: dropped
    assert len(build_wireframe(junctions, segs, views, None, lines, cfg, seen_counts=None).edges) == 3
    cfg.min_vote_ratio = 0.0  # the filter off
    assert len(build_wireframe(junctions, segs, views, None, lines, cfg, seen_counts=seen_by_30).edges) == 3


def test_grazing_corner_rays_of_partial_opacity_count_as_seen(monkeypatch):
    """A point on the silhouette: the ray's composited depth is depth * opacity (0.6 here); divided by the
    opacity it is the point's own distance, so the point is seen."""
    cams = ring_cameras(1)

    def partial(field, head, grid, rays_o, rays_d, opts, chunk=2048):
        r = sphere_render(field, head, grid, rays_o, rays_d, opts)
        dist = (torch.tensor([[0.0, RADIUS, 0.0]]) - rays_o).norm(dim=-1)
        return {**r, "depth": dist * 0.6, "weight_sum": torch.full_like(dist, 0.6)}

    monkeypatch.setattr(visibility, "render_lines_chunked", partial)
    assert visibility.seen_by_views(None, None, None, None, cams, (64, 64), np.array([[0.0, RADIUS, 0.0]]), 0.05).all()
