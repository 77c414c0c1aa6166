"""The SDF of nfkit sfm: a small NeuSField (MLP backbone, geometric sphere init), its fit and ray tracing.

World units: after the two-view initialisation the scene has radius ~1 around ``state.centre``; the field's AABB is
the cube of half extent ``AABB_SCALE`` around it, the initial sphere has radius ``INIT_RADIUS`` (world units).
"""
from __future__ import annotations

import numpy as np
import torch

from nfkit.fields.sdf import NeuSField
from nfkit.renderers.surface import newton_project_field, sphere_trace_field

AABB_SCALE = 1.6
INIT_RADIUS = 0.8
TRACE_EPS = 1e-3  # |f| below which a trace has converged (world units, scene radius 1)


def make_field(centre: np.ndarray, cfg) -> NeuSField:
    """A CPU-sized SDF: frequency encoding + MLP, sphere of radius INIT_RADIUS around ``centre``."""
    torch.manual_seed(cfg.seed)
    c = torch.as_tensor(centre, dtype=torch.float32)
    aabb = torch.stack([c - AABB_SCALE, c + AABB_SCALE])
    if cfg.sdf_backbone == "hashgrid":
        conf = NeuSField.Config(backbone="hashgrid", hidden=cfg.sdf_hidden, n_layers=1, n_levels=8,
                                log2_hashmap_size=15, base_resolution=8, max_resolution=256,
                                init_radius=INIT_RADIUS / AABB_SCALE, renderer="volsdf")
    else:
        conf = NeuSField.Config(backbone="mlp", hidden=cfg.sdf_hidden, n_layers=cfg.sdf_layers, n_freqs=cfg.sdf_freqs,
                                init_radius=INIT_RADIUS / AABB_SCALE, renderer="volsdf")
    return NeuSField(conf, aabb)


def geometry_params(field) -> list:
    """The parameters that shape f (the colour head and surface model are not trained at CPU scale)."""
    return list(field.encoding.parameters()) + list(field.geo_net.parameters())


def sphere_bounds(o: torch.Tensor, d: torch.Tensor, centre: torch.Tensor, radius: float):
    """Ray/sphere entry and exit depths for unit rays o, d [R, 3] -> (near [R], far [R], hit [R] bool)."""
    oc = o - centre
    b = (oc * d).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius
    disc = b * b - c
    s = torch.sqrt(disc.clamp_min(0))
    return (-b - s).clamp_min(0), (-b + s).clamp_min(0), disc > 0


def trace(field, o: torch.Tensor, d: torch.Tensor, differentiable: bool = False, max_steps: int = 48):
    """First surface hit of unit rays o, d [R, 3] inside the field's sphere -> (x [R, 3], hit [R] bool)."""
    centre = (field.aabb[0] + field.aabb[1]) / 2
    near, far, inside = sphere_bounds(o, d, centre, AABB_SCALE)
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        t, hit = sphere_trace_field(field, o, d, near, far, max_steps=max_steps, eps=TRACE_EPS,
                                    differentiable=differentiable)
    hit = hit & inside
    return o + t[:, None] * d, hit


def eikonal_points(field, anchors: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Half uniform in the AABB, half near ``anchors`` [A, 3] (jittered by 0.1) -> [n, 3]."""
    lo, hi = field.aabb[0], field.aabb[1]
    u = lo + (hi - lo) * torch.rand(n // 2, 3, generator=gen)
    if len(anchors) == 0:
        return u
    idx = torch.randint(len(anchors), (n - n // 2,), generator=gen)
    return torch.cat([u, anchors[idx] + 0.1 * torch.randn(n - n // 2, 3, generator=gen)])


def surface_losses(field, pts: torch.Tensor, weights: torch.Tensor | None, eik_pts: torch.Tensor):
    """(mean robust |f| at pts [P, 3] (weights [P] or None), eikonal L1 |‖∇f‖ - 1| at eik_pts)."""
    f = field.sdf(pts)
    surf = (f.abs() * weights).sum() / weights.sum().clamp_min(1e-9) if weights is not None else f.abs().mean()
    _, g = field.sdf_and_gradient(eik_pts, create_graph=True)
    eik = (g.norm(dim=-1) - 1.0).abs().mean()
    return surf, eik


def free_space_points(field, X: torch.Tensor, C: torch.Tensor, gen: torch.Generator, margin: float = 0.05):
    """Samples on the segments from camera centres C [P, 3] to points X [P, 3], inside the field's sphere and at
    least ``margin`` before the point -> [P, 3] (space the camera saw through: f should be positive there)."""
    v = X - C
    dist = v.norm(dim=-1)
    d = v / dist[:, None].clamp_min(1e-9)
    centre = (field.aabb[0] + field.aabb[1]) / 2
    near, _, _ = sphere_bounds(C, d, centre, AABB_SCALE)
    hi = (dist - margin).clamp_min(near)
    t = near + (hi - near) * torch.rand(len(X), generator=gen)
    return C + t[:, None] * d


def fit_sdf(field, points: np.ndarray, steps: int, lr: float, seeds: np.ndarray | None = None,
            w_eikonal: float = 0.1, seed: int = 0, centres: np.ndarray | None = None,
            w_free: float = 1.0) -> dict:
    """Fits f so that ``points`` [P, 3] (trusted) lie on f = 0 and ``seeds`` [S, 3] (candidate points, maybe
    outliers: Cauchy-weighted, so isolated ones barely move the surface) too; eikonal regulariser.
    centres [P + S, 3]: a camera centre that saw each point (points first, then seeds): samples between camera and
    point should be outside (hinge on -f, ``w_free``), which removes sheets of the initial sphere in front of the
    points.  Poses are fixed. Returns the last losses."""
    if steps <= 0:
        return {}
    gen = torch.Generator().manual_seed(seed)
    P = torch.as_tensor(points, dtype=torch.float32)
    S = torch.as_tensor(seeds if seeds is not None else np.zeros((0, 3)), dtype=torch.float32)
    allp = torch.cat([P, S])
    C = torch.tensor(np.asarray(centres), dtype=torch.float32) if centres is not None else None
    opt = torch.optim.Adam(geometry_params(field), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1.0 / steps))
    out = {}
    seed_all = torch.cat([torch.zeros(len(P), dtype=torch.bool), torch.ones(len(S), dtype=torch.bool)])
    scale = 0.02  # Cauchy scale for seeds (world units, scene radius 1)
    for _ in range(steps):
        idx = torch.arange(len(allp)) if len(allp) <= 4096 else torch.randint(len(allp), (4096,), generator=gen)
        f = field.sdf(allp[idx])
        robust = torch.where(seed_all[idx], scale * torch.log1p((f / scale) ** 2), f.abs())
        surf = robust.mean()
        free = torch.zeros(())
        if C is not None:
            free = torch.relu(-field.sdf(free_space_points(field, allp[idx], C[idx], gen))).mean()
        _, g = field.sdf_and_gradient(eikonal_points(field, allp, 1024, gen), create_graph=True)
        eik = (g.norm(dim=-1) - 1.0).abs().mean()
        loss = surf + w_eikonal * eik + w_free * free
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        out = {"surface": float(surf.detach()), "eikonal": float(eik.detach())}
    return out


def snap(field, X: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """One Newton step of points X [P, 3] onto f = 0 (differentiable in the field's parameters)."""
    return newton_project_field(field, X, steps=1, create_graph=create_graph)


@torch.no_grad()
def abs_sdf(field, X: np.ndarray) -> np.ndarray:
    """|f(X)| for points X [P, 3] (numpy, world units)."""
    if len(X) == 0:
        return np.zeros(0)
    return field.sdf(torch.as_tensor(X, dtype=torch.float32)).abs().numpy().astype(np.float64)
