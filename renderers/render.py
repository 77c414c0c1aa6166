"""The shared volumetric renderer: rays -> occupancy-grid samples -> any Field -> composited pixels.

Every field family renders through :func:`render_rays`; nothing here knows which family it is drawing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nfkit.renderers.cameras import Cameras, image_rays
from nfkit.renderers.compositing import composite_packed, weights_from_density
from nfkit.renderers.occupancy import OccupancyGrid
from nfkit.renderers.sampling import march


@dataclass
class RenderOptions:
    step_size: float = 3 ** 0.5 * 3.0 / 256  # world units between samples (AABB diagonal / 256 for a 3-unit box)
    early_stop_eps: float = 1e-4  # drop samples once transmittance falls below this
    alpha_thre: float = 0.0  # drop samples with smaller alpha (pruning pass)
    near: float = 0.0


def default_step_size(aabb: torch.Tensor, n_steps: int = 256) -> float:
    """Step so that the AABB's diagonal holds ``n_steps`` samples."""
    return float((aabb[1] - aabb[0]).norm()) / n_steps


def render_rays(field, grid: OccupancyGrid, rays_o, rays_d, opts: RenderOptions, background=None,
                stratified: bool = False, prune: bool = True):
    """Render R rays. rays_o, rays_d: [R, 3] world (unit directions); background: [3] or [R, 3].

    With ``prune``, a no-grad density pass first removes samples behind opaque surfaces (transmittance
    < ``early_stop_eps``) or with alpha below ``alpha_thre``; only the rest get the full (differentiable)
    field evaluation. Returns dict ``rgb`` [R,3], ``opacity`` [R], ``depth`` [R], ``n_samples`` (int).
    """
    n_rays = rays_o.shape[0]
    ray_idx, t0, t1 = march(rays_o, rays_d, grid, opts.step_size, stratified=stratified, near=opts.near)
    if prune and ray_idx.numel():
        with torch.no_grad():
            x = rays_o[ray_idx] + rays_d[ray_idx] * ((t0 + t1) * 0.5)[:, None]
            sig = field.density(x)
            _, trans, alphas = weights_from_density(sig, t0, t1, ray_idx, n_rays)
            keep = (trans > opts.early_stop_eps) & (alphas > opts.alpha_thre)
        ray_idx, t0, t1 = ray_idx[keep], t0[keep], t1[keep]
    x = rays_o[ray_idx] + rays_d[ray_idx] * ((t0 + t1) * 0.5)[:, None]
    out = field(x, rays_d[ray_idx])
    rgb, opacity, depth, _ = composite_packed(out.density, out.rgb, t0, t1, ray_idx, n_rays, background)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "n_samples": int(ray_idx.numel())}


@torch.no_grad()
def render_image(field, grid: OccupancyGrid, cams: Cameras, i: int, opts: RenderOptions, background=None,
                 chunk: int = 1 << 14):
    """Render camera ``i`` of ``cams``. Returns dict of ``rgb`` [H, W, 3], ``opacity`` [H, W], ``depth`` [H, W]."""
    rays_o, rays_d = image_rays(cams, i)
    outs = [render_rays(field, grid, o, d, opts, background) for o, d in zip(rays_o.split(chunk), rays_d.split(chunk))]
    h, w = cams.height, cams.width
    return {k: torch.cat([o[k] for o in outs]).reshape(h, w, -1).squeeze(-1) for k in ("rgb", "opacity", "depth")}
