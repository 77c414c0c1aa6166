"""Bundle adjustment in torch: neural (points snapped to f = 0 by one Newton step) or classic (free points).

Poses: per optimised camera an se(3)-style update (axis-angle w [3] left-multiplied on R, translation offset
[3]) in two Adam groups (rotation, translation), as upstream.  Gauge: the first registered camera is fixed, and
the second keeps the norm of its translation (= its distance to the first camera, which sits at the origin).
Robust reprojection loss (px): 0.5·mean(2·log(1 + ‖r‖²/4)) + 0.5·mean(‖r‖) (Cauchy + L1).  Neural mode adds
|f(X')| and eikonal terms and uses residuals of points with |f(X')| < 2·tau only; the snapped points X' are
**written back** into ``state.points`` at the end (upstream's lazy ``map`` dropped them).  Upstream keeps X fixed
and lets only the SDF move X' (along the normal); with ``cfg.free_points_on_surface`` (default) X is a parameter as
well, so X' = snap(X) can also slide along the surface (a CPU-sized SDF is not accurate enough for sub-pixel
points by itself; the surface still constrains every point to the shared level set).  Classic mode optimises
the points as free variables (and writes them back).  With unknown intrinsics a shared focal (log scale) is
refined too.
"""
from __future__ import annotations

import numpy as np
import torch

from kornia.geometry.conversions import axis_angle_to_rotation_matrix

from .geometry import project_torch
from .surface import eikonal_points, geometry_params, snap


def robust_reprojection(r: torch.Tensor) -> torch.Tensor:
    """Cauchy + L1 of residuals r [O, 2] (px)."""
    sq = (r * r).sum(-1)
    return 0.5 * (2 * torch.log1p(sq / 4)).mean() + 0.5 * torch.sqrt(sq + 1e-12).mean()


def _setup(state, matches, images):
    """Observations touching the optimised images -> tensors."""
    opt_imgs = set(images)
    pts = sorted({p for i in opt_imgs for p in state.obs[i].values() if state.alive[p]})
    if not pts:
        return None
    pts_set = set(pts)
    img, pid, uv = state.observations(matches.keypoints)
    keep = np.array([p in pts_set for p in pid], bool)
    return img[keep], pid[keep], uv[keep], np.asarray(pts)


class _Problem:
    """The tensors of one BA call: cameras ``cams`` (pose updates w, dt; ``free`` marks the optimised ones),
    points ``pts`` (Xp), observations (ci, pi, uv_t), K and the optional shared log-focal scale."""

    def __init__(self, state, matches, images, setup, field, cfg, focal):
        img, pid, uv, self.pts = setup
        self.cams = sorted(set(img.tolist()))
        self.cam_index = {c: k for k, c in enumerate(self.cams)}
        self.images = images
        f64 = dict(dtype=torch.float64)
        self.R0 = torch.tensor(np.stack([state.poses[c][0] for c in self.cams]), **f64)
        self.t0 = torch.tensor(np.stack([state.poses[c][1] for c in self.cams]), **f64)
        self.free = torch.tensor([c in images and c != state.order[0] for c in self.cams])
        self.w = torch.zeros(len(self.cams), 3, **f64, requires_grad=True)
        self.dt = torch.zeros(len(self.cams), 3, **f64, requires_grad=True)
        pt_index = {p: k for k, p in enumerate(self.pts)}
        self.free_pts = field is None or cfg.free_points_on_surface
        self.Xp = torch.tensor(state.points[self.pts], **f64).requires_grad_(self.free_pts)
        self.ci = torch.tensor([self.cam_index[c] for c in img])
        self.pi = torch.tensor([pt_index[p] for p in pid])
        self.uv = torch.tensor(uv, **f64)
        self.K = torch.tensor(state.K, **f64)
        self.focal = focal
        gauge1 = state.order[1] if len(state.order) > 1 else None
        self.g1 = self.cam_index.get(gauge1) if gauge1 is not None else None
        self.t1_norm = float(self.t0[self.g1].norm()) if self.g1 is not None else None

    def optimizer(self, cfg, radius, field, steps):
        groups = [{"params": [self.w], "lr": cfg.lr_rot}, {"params": [self.dt], "lr": cfg.lr_trans * radius}]
        if self.free_pts:
            groups.append({"params": [self.Xp], "lr": cfg.lr_points * radius})
        if field is not None:
            groups.append({"params": geometry_params(field), "lr": cfg.lr_sdf * cfg.ba_sdf_lr_scale})
        if self.focal is not None and self.focal.requires_grad:
            groups.append({"params": [self.focal], "lr": 1e-3})
        opt = torch.optim.Adam(groups)
        return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.05 ** (1.0 / steps))

    def poses(self):
        """(R [C, 3, 3], t [C, 3]) world -> camera, the gauge camera and non-optimised ones unchanged."""
        ww = torch.where(self.free[:, None], self.w, torch.zeros_like(self.w))
        tt = torch.where(self.free[:, None], self.dt, torch.zeros_like(self.dt))
        return axis_angle_to_rotation_matrix(ww) @ self.R0, self.t0 + tt

    def intr(self):
        K = self.K
        if self.focal is None:
            return K
        s = torch.exp(self.focal[0])
        return torch.stack([torch.stack([K[0, 0] * s, K[0, 1], K[0, 2]]),
                            torch.stack([K[1, 0], K[1, 1] * s, K[1, 2]]), K[2]])

    def keep_gauge_scale(self):
        """The second camera keeps |t| (its distance to the first, at the origin): the gauge's scale."""
        if self.g1 is not None and bool(self.free[self.g1]):
            with torch.no_grad():
                t_new = self.t0[self.g1] + self.dt[self.g1]
                self.dt[self.g1] = t_new * (self.t1_norm / t_new.norm()) - self.t0[self.g1]

    def write_back(self, state, field):
        """Poses, points (snapped in neural mode: upstream's lost ``map``) and K into ``state``."""
        with torch.no_grad():
            R, t = self.poses()
            X = self.Xp.detach() if field is None else snap(field, self.Xp.detach().float(), create_graph=False)
            for c, k in self.cam_index.items():
                if c in self.images:
                    state.poses[c] = (R[k].numpy().copy(), t[k].numpy().copy())
            state.points[self.pts] = X.double().numpy()
            if self.focal is not None:
                state.K = self.intr().numpy().copy()
                self.focal.zero_()


def _batch(prob, cap: int, gen):
    """Points of this step (all, or ``cap`` drawn at random) -> (their indices [B], the observations' mask [O],
    the observations' index into the batch [O'])."""
    n = len(prob.pts)
    if cap <= 0 or n <= cap:  # every point (the common case: no re-indexing on the hot path)
        return torch.arange(n), torch.ones(len(prob.pi), dtype=torch.bool), prob.pi
    sel = torch.randperm(n, generator=gen)[:cap]
    local = torch.full((n,), -1, dtype=torch.long)
    local[sel] = torch.arange(len(sel))
    obs = local[prob.pi] >= 0
    return sel, obs, local[prob.pi[obs]]


def _loss(prob, cfg, radius, field, gen):
    """Robust reprojection (+ surface and eikonal terms in neural mode) on a batch of points (``ba_batch_points``)
    -> (loss, residuals [O', 2])."""
    R, t = prob.poses()
    sel, obs, bi = _batch(prob, cfg.ba_batch_points, gen)
    surf = eik = torch.zeros((), dtype=torch.float64)
    if field is None:
        X, m = prob.Xp[sel], torch.ones(len(bi), dtype=torch.bool)
    else:
        Xs = snap(field, prob.Xp[sel].float())
        f = field.sdf(Xs)
        m = (f.detach().abs() < 2 * cfg.surface_tau * radius)[bi]
        surf = f.abs().mean().double()
        _, g = field.sdf_and_gradient(eikonal_points(field, Xs.detach(), 1024, gen), create_graph=True)
        eik = (g.norm(dim=-1) - 1.0).abs().mean().double()
        X = Xs.double()
    ci = prob.ci[obs][m]
    r = project_torch(prob.intr(), R[ci], t[ci], X[bi[m]]) - prob.uv[obs][m]
    return robust_reprojection(r) + cfg.w_surface * surf / radius + cfg.w_eikonal * eik, r


def bundle_adjust(state, matches, cfg, images=None, steps: int = 100, field=None, focal=None) -> dict:
    """Optimises the poses of ``images`` (default: all registered) and the points they see.

    field: the SDF for neural BA (None: classic free-point BA).  focal: a 1-element tensor log-focal-scale shared
    across calls (refined when it requires grad), or None.  Returns {"steps", "mean_px" (before, after)}.
    """
    images = sorted(state.poses) if images is None else sorted(set(images) & set(state.poses))
    setup = _setup(state, matches, images)
    if setup is None or steps <= 0:
        return {"steps": 0}
    prob = _Problem(state, matches, images, setup, field, cfg, focal)
    opt, sched = prob.optimizer(cfg, state.radius, field, steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    before = None
    for _ in range(steps):
        loss, r = _loss(prob, cfg, state.radius, field, gen)
        if before is None:
            before = float(r.detach().norm(dim=-1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        prob.keep_gauge_scale()
    prob.write_back(state, field)
    after = state.mean_reprojection_error(matches.keypoints)
    return {"steps": steps, "mean_px": [before, after], "points": len(prob.pts), "cameras": len(images)}
