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

from .geometry import project_torch, so3_exp
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


def bundle_adjust(state, matches, cfg, images=None, steps: int = 100, field=None, focal=None) -> dict:
    """Optimises the poses of ``images`` (default: all registered) and the points they see.

    field: the SDF for neural BA (None: classic free-point BA).  focal: a 1-element tensor log-focal-scale shared
    across calls (refined when it requires grad), or None.  Returns {"steps", "mean_px" (before, after)}.
    """
    images = sorted(state.poses) if images is None else sorted(set(images) & set(state.poses))
    setup = _setup(state, matches, images)
    if setup is None or steps <= 0:
        return {"steps": 0}
    img, pid, uv, pts = setup
    gauge0, gauge1 = state.order[0], state.order[1] if len(state.order) > 1 else None
    cams = sorted(set(img.tolist()))
    cam_index = {c: k for k, c in enumerate(cams)}
    R0 = torch.tensor(np.stack([state.poses[c][0] for c in cams]), dtype=torch.float64)
    t0 = torch.tensor(np.stack([state.poses[c][1] for c in cams]), dtype=torch.float64)
    free = torch.tensor([c in images and c != gauge0 for c in cams])
    w = torch.zeros(len(cams), 3, dtype=torch.float64, requires_grad=True)
    dt = torch.zeros(len(cams), 3, dtype=torch.float64, requires_grad=True)
    pt_index = {p: k for k, p in enumerate(pts)}
    X0 = torch.tensor(state.points[pts], dtype=torch.float64)
    free_pts = field is None or cfg.free_points_on_surface
    Xp = X0.clone().requires_grad_(free_pts)
    ci = torch.tensor([cam_index[c] for c in img])
    pi = torch.tensor([pt_index[p] for p in pid])
    uv_t = torch.tensor(uv, dtype=torch.float64)
    K = torch.tensor(state.K, dtype=torch.float64)
    groups = [{"params": [w], "lr": cfg.lr_rot}, {"params": [dt], "lr": cfg.lr_trans * state.radius}]
    if free_pts:
        groups.append({"params": [Xp], "lr": cfg.lr_points * state.radius})
    if field is not None:
        groups.append({"params": geometry_params(field), "lr": cfg.lr_sdf * cfg.ba_sdf_lr_scale})
    if focal is not None and focal.requires_grad:
        groups.append({"params": [focal], "lr": 1e-3})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.05 ** (1.0 / steps))
    g1 = cam_index.get(gauge1) if gauge1 is not None else None
    t1_norm = float(t0[g1].norm()) if g1 is not None else None
    gen = torch.Generator().manual_seed(cfg.seed)
    tau = cfg.surface_tau * state.radius
    before = None

    def poses():
        ww = torch.where(free[:, None], w, torch.zeros_like(w))
        tt = torch.where(free[:, None], dt, torch.zeros_like(dt))
        return so3_exp(ww) @ R0, t0 + tt

    def intr():
        if focal is None:
            return K
        s = torch.exp(focal[0])
        return torch.stack([torch.stack([K[0, 0] * s, K[0, 1], K[0, 2]]), torch.stack([K[1, 0], K[1, 1] * s, K[1, 2]]),
                            K[2]])

    for step in range(steps):
        R, t = poses()
        surf = eik = torch.zeros((), dtype=torch.float64)
        if field is None:
            X = Xp
            valid = torch.ones(len(pts), dtype=torch.bool)
        else:
            Xs = snap(field, Xp.float())
            f = field.sdf(Xs)
            valid = (f.detach().abs() < 2 * tau)
            surf = f.abs().mean().double()
            _, g = field.sdf_and_gradient(eikonal_points(field, Xs.detach(), 1024, gen), create_graph=True)
            eik = (g.norm(dim=-1) - 1.0).abs().mean().double()
            X = Xs.double()
        m = valid[pi]
        r = project_torch(intr(), R[ci[m]], t[ci[m]], X[pi[m]]) - uv_t[m]
        rep = robust_reprojection(r)
        if before is None:
            before = float(r.detach().norm(dim=-1).mean())
        loss = rep + cfg.w_surface * surf / state.radius + cfg.w_eikonal * eik
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if g1 is not None and bool(free[g1]):
            with torch.no_grad():  # keep the gauge's scale: |t1| fixed
                t_new = t0[g1] + dt[g1]
                dt[g1] = t_new * (t1_norm / t_new.norm()) - t0[g1]
    with torch.no_grad():
        R, t = poses()
        X = Xp.detach() if field is None else snap(field, Xp.detach().float(), create_graph=False).double()
        for c, k in cam_index.items():
            if c in images:
                state.poses[c] = (R[k].numpy().copy(), t[k].numpy().copy())
        state.points[pts] = X.numpy()  # written back (the point of the upstream bug)
        if focal is not None:
            state.K = intr().numpy().copy()
            focal.zero_()
    after = state.mean_reprojection_error(matches.keypoints)
    return {"steps": steps, "mean_px": [before, after], "points": len(pts), "cameras": len(images)}
