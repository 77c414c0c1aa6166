"""A baked density grid that stands in for the field's density while marching, for interactive viewing.

The inference renderer normally evaluates the field's density at every marched sample, though only the few
samples near the first surface end up mattering. With a :class:`DensityCache` it reads the density from this grid
instead (trilinear, ``grid_sample``), composites the transmittance from it, and evaluates the real field (geometry
and colour) only at the samples whose weight matters. The picture differs from the exact render only through the
cache's resolution; ``bench/viewer.py`` reports the PSNR between the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nfkit.fields.base import require_kind
from nfkit.renderers.compositing import packed_exclusive_sum
from nfkit.renderers.sampling import march_reference


class DensityCache:
    """Density sampled at the vertices of a ``res^3`` lattice over ``aabb`` (cells empty in the occupancy grid
    are left at zero without evaluating the field)."""

    def __init__(self, values: torch.Tensor, aabb: torch.Tensor):
        self.values = values  # [1, 1, R, R, R] indexed (z, y, x) as grid_sample expects
        self.aabb = aabb

    @classmethod
    @torch.no_grad()
    def build(cls, field, grid, res: int = 192, chunk: int = 1 << 17, density_fn=None) -> "DensityCache":
        """Bake ``density_fn`` (x [N, 3] -> sigma [N]; default ``field.density``) on a ``res``^3 lattice over the
        field's AABB, at the vertices next to occupied cells of ``grid`` (zero elsewhere)."""
        require_kind(field, ("density",), "the viewer's density cache")
        density_fn = density_fn or field.density
        aabb = field.aabb.float()
        lin = torch.linspace(0, 1, res)
        zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
        pts = aabb[0] + torch.stack([xx, yy, zz], -1).reshape(-1, 3) * (aabb[1] - aabb[0])
        # A lattice vertex matters if any cell around it is occupied: test the point and its 8 diagonal nudges.
        h = (aabb[1] - aabb[0]) / (grid.resolution * 2)
        near = torch.zeros(pts.shape[0], dtype=torch.bool)
        for sx in (-1, 1):
            for sy in (-1, 1):
                for sz in (-1, 1):
                    near |= grid.occupied(pts + h * torch.tensor([sx, sy, sz], dtype=torch.float32))
        vals = torch.zeros(pts.shape[0])
        idx = torch.nonzero(near).flatten()
        for c in idx.split(chunk):
            vals[c] = density_fn(pts[c]).float()
        return cls(vals.reshape(1, 1, res, res, res), aabb)

    def march(self, rays_o, rays_d, t_near, t_far, grid, step: float, weight_eps: float, early_stop_eps: float,
              backend: str = "auto"):
        """Viewer-mode marching: the samples of ``grid`` along each ray (jitter 0.5) that carry a weight above
        ``weight_eps`` under this cache's density, front to back, each ray stopped once its transmittance falls
        below ``early_stop_eps``. rays_o, rays_d: [N, 3] world; t_near, t_far: [N].

        Returns ``(ray_indices [S] long, t [S], weights [S], transmittance [N])``. The C++ kernel (one pass over
        each ray, empty space skipped) and :func:`march_cached_reference` give the same result up to float rounding.
        """
        if backend != "torch" and rays_o.device.type == "cpu":
            from nfkit import kernels

            ops = kernels.load()
            if ops is not None:
                ri, t, w, trans = ops.march_cached(
                    rays_o.float().contiguous(), rays_d.float().contiguous(), t_near.float().contiguous(),
                    t_far.float().contiguous(), float(step), grid.binary.contiguous(), grid.aabb.contiguous(),
                    grid.resolution, *grid.mips(), self.lattice, self.aabb.contiguous(),
                    float(weight_eps), float(early_stop_eps))
                return ri, t, w, trans
        return march_cached_reference(rays_o, rays_d, t_near, t_far, grid, self, step, weight_eps, early_stop_eps)

    @property
    def lattice(self) -> torch.Tensor:
        """The density values as a contiguous float32 [R, R, R] tensor indexed (z, y, x)."""
        return self.values[0, 0].float().contiguous()

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3] world -> [N] trilinear density (zero outside the AABB)."""
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * 2 - 1
        out = F.grid_sample(self.values, u.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out.view(-1)


def march_cached_reference(rays_o, rays_d, t_near, t_far, grid, cache: DensityCache, step: float,
                           weight_eps: float, early_stop_eps: float):
    """Pure-torch reference of :meth:`DensityCache.march`: march every occupied sample, read the cache's density,
    composite; a sample is visited while the transmittance in front of it is >= ``early_stop_eps``."""
    n = rays_o.shape[0]
    ri, t, _ = march_reference(rays_o, rays_d, t_near, t_far, torch.full_like(t_near, 0.5), step, grid.binary,
                               grid.aabb, grid.resolution)
    sigma = cache.density(rays_o[ri] + rays_d[ri] * t[:, None])
    tau = sigma * step
    before = torch.exp(-packed_exclusive_sum(tau, ri, n))
    w = before * (1 - torch.exp(-tau))
    visited = before >= early_stop_eps
    trans = torch.exp(-torch.zeros(n, dtype=tau.dtype).index_add_(0, ri[visited], tau[visited]))
    keep = visited & (w > weight_eps)
    return ri[keep], t[keep], w[keep], trans
