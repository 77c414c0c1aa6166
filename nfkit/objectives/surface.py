"""SDF fields against posed images (``nfkit fit DATA --field neus``), as NeuS / instant-nsr-pl.

The same pixel batches, occupancy grid, marcher and compositor as :class:`~nfkit.objectives.RadianceObjective`;
the renderer turns the SDF into alpha (NeuS, learned inverse standard deviation) or density (VolSDF). Terms:

* ``rgb``: colour MSE;
* ``eikonal`` (``eikonal_weight``, 0.1): (‖∇f‖ - 1)² at the ray samples (the renderer's ``sample_gradients``)
  and at :data:`EIKONAL_POINTS` uniform points of the AABB;
* ``mask`` (``mask_weight``, 0.1; only for RGBA data): BCE between the rendered opacity and the pixel's alpha;
* ``curvature`` (``curvature_weight``, off by default): unit normals at random points against normals at points
  jittered by :data:`CURVATURE_EPS` of the AABB's diagonal.

NeuS's cosine annealing: ``opts.cos_anneal_ratio`` ramps linearly 0 -> 1 over the first ``anneal_fraction`` of the
run (progress by steps or seconds). The occupancy grid is updated from the SDF through
:func:`nfkit.renderers.occupancy_density_fn`, as the radiance objective's from density.
"""
from __future__ import annotations

import torch

from nfkit.errors import NfkitError
from nfkit.losses import curvature, eikonal, mask_bce, mse
from nfkit.objectives.radiance import RadianceObjective
from nfkit.renderers import render_rays

EIKONAL_POINTS = 1024
CURVATURE_EPS = 1e-3


class SurfaceObjective(RadianceObjective):
    """RadianceObjective's batches and renderer, with the SDF terms of the module docstring."""

    def __init__(self, *args, eikonal_weight: float = 0.1, mask_weight: float = 0.1, curvature_weight: float = 0.0,
                 anneal_fraction: float = 0.1, **kw):
        for name, v in (("eikonal-weight", eikonal_weight), ("mask-weight", mask_weight),
                        ("curvature-weight", curvature_weight), ("anneal-fraction", anneal_fraction)):
            if not v >= 0:
                raise NfkitError(f"--{name} must be >= 0, got {v}")
        super().__init__(*args, **kw)
        self.w_eikonal, self.w_mask, self.w_curv = eikonal_weight, mask_weight, curvature_weight
        self.anneal_fraction = anneal_fraction

    def before_step(self, step: int, progress: float) -> None:
        a = self.anneal_fraction
        self.opts.cos_anneal_ratio = 1.0 if a <= 0 else min(1.0, progress / a)

    def random_points(self, n: int) -> torch.Tensor:
        lo, hi = self.grid.aabb[0], self.grid.aabb[1]
        return lo + torch.rand(n, 3, device=lo.device) * (hi - lo)

    def losses(self, step: int, progress: float) -> dict[str, torch.Tensor]:
        rays_o, rays_d, target, bg, alpha = self.sample_batch()
        self.grid.update(step, self.grid_density(), self.opts.step_size)
        out = render_rays(self.field, self.grid, rays_o, rays_d, self.opts, bg, stratified=True)
        terms = {"rgb": mse(out["rgb"], target)}
        x = self.random_points(EIKONAL_POINTS)
        _, g_rand = self.field.sdf_and_gradient(x, create_graph=True)
        if self.w_eikonal > 0:
            terms["eikonal"] = self.w_eikonal * eikonal(torch.cat([out["sample_gradients"], g_rand]))
        if self.w_mask > 0 and alpha is not None:
            terms["mask"] = self.w_mask * mask_bce(out["opacity"], alpha)
        if self.w_curv > 0:
            diag = float((self.grid.aabb[1] - self.grid.aabb[0]).norm())
            jitter = torch.randn_like(x) * (CURVATURE_EPS * diag)
            _, g_near = self.field.sdf_and_gradient(x + jitter, create_graph=True)
            terms["curvature"] = self.w_curv * curvature(g_rand, g_near)
        if self.sparsity > 0:
            terms["sparsity"] = self.sparsity * self.density_prior()
        return self._account(terms, out["n_samples"])

    def postfix(self, ema: dict) -> dict:
        post = super().postfix(ema)
        if "eikonal" in ema:
            post["eik"] = f"{ema['eikonal']:.3g}"
        return post
