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


class DensityCache:
    """Density sampled at the vertices of a ``res^3`` lattice over ``aabb`` (cells empty in the occupancy grid
    are left at zero without evaluating the field)."""

    def __init__(self, values: torch.Tensor, aabb: torch.Tensor):
        self.values = values  # [1, 1, R, R, R] indexed (z, y, x) as grid_sample expects
        self.aabb = aabb

    @classmethod
    @torch.no_grad()
    def build(cls, field, grid, res: int = 192, chunk: int = 1 << 17) -> "DensityCache":
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
            vals[c] = field.density(pts[c]).float()
        return cls(vals.reshape(1, 1, res, res, res), aabb)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3] world -> [N] trilinear density (zero outside the AABB)."""
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * 2 - 1
        out = F.grid_sample(self.values, u.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out.view(-1)
