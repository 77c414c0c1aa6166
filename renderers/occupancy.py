"""Occupancy grid over the field's AABB: skips empty space while marching (pure torch; runs on CPU).

The grid keeps an EMA of the field's opacity ``sigma * step_size`` per cell (``density``) and a boolean mask
(``binary``). Update rule (as nerfacc's ``OccGridEstimator``): during warm-up every cell is re-evaluated at a
jittered point; afterwards a random quarter of the cells plus as many occupied cells. A cell is occupied when its
value exceeds ``min(mean, threshold)``.
"""
from __future__ import annotations

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    """aabb: [2, 3] world; resolution R: the grid has R^3 cells, cell (i, j, k) indexes x, y, z."""

    def __init__(self, aabb: torch.Tensor, resolution: int = 64):
        super().__init__()
        self.resolution = int(resolution)
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.register_buffer("density", torch.zeros(self.resolution**3))
        self.register_buffer("binary", torch.ones(self.resolution**3, dtype=torch.bool))
        self.last_update_step = -1  # the step of the last update() that changed the grid (data-parallel sync)

    def cell_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, 3] world -> (flat cell index [N] long, inside-the-grid mask [N])."""
        r = self.resolution
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u < 1)).all(-1)
        ijk = (u * r).long().clamp(0, r - 1)
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2], inside

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3] world -> [N] bool (False outside the grid)."""
        idx, inside = self.cell_index(x)
        return self.binary[idx] & inside

    def cell_points(self, idx: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        r = self.resolution
        ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        off = torch.rand_like(ijk) if jitter else torch.full_like(ijk, 0.5)
        return self.aabb[0] + (ijk + off) / r * (self.aabb[1] - self.aabb[0])

    @torch.no_grad()
    def update(self, step: int, density_fn, step_size: float, threshold: float = 0.01, decay: float = 0.95,
               warmup_steps: int = 256, every: int = 16, chunk: int = 1 << 16, backend: str = "auto") -> bool:
        """Refresh from ``density_fn`` (x [N, 3] -> sigma [N]) every ``every`` steps. Returns True if updated.

        On CUDA (``backend`` ``auto``) or with ``backend="nerfacc"``: nerfacc's ``OccGridEstimator`` on this
        grid's tensors (the same rule and random draws); the code below is the torch reference."""
        if step % every:
            return False
        if backend == "nerfacc" or (backend == "auto" and self.density.is_cuda):
            from nfkit.renderers import nerfacc_backend

            if backend == "nerfacc" or nerfacc_backend.usable(self.density.device):
                nerfacc_backend.update_grid(self, step, density_fn, step_size, threshold, decay, warmup_steps)
                self.last_update_step = step
                return True
        n = self.resolution**3
        if step < warmup_steps:
            idx = torch.arange(n, device=self.density.device)
        else:
            rand = torch.randint(0, n, (n // 4,), device=self.density.device)
            occ = torch.nonzero(self.binary).flatten()
            if occ.numel() > n // 4:
                occ = occ[torch.randint(0, occ.numel(), (n // 4,), device=occ.device)]
            idx = torch.cat([rand, occ])
        vals = torch.cat([density_fn(self.cell_points(c)) for c in idx.split(chunk)]) * step_size
        self.density[idx] = torch.maximum(self.density[idx] * decay, vals.float())
        thre = torch.clamp(self.density.mean(), max=threshold)
        self.binary.copy_(self.density > thre)
        self.last_update_step = step
        return True

    def coarse(self, factor: int) -> torch.Tensor:
        """The grid OR-pooled over ``factor^3`` blocks: [ceil(R / factor)^3] bool, same (x, y, z) flat order;
        cached until ``binary`` changes (its version counter)."""
        key = (self.binary.data_ptr(), self.binary._version)
        cache = getattr(self, "_coarse", None)
        if cache is None or cache[0] != key:
            cache = self._coarse = (key, {})
        if factor not in cache[1]:
            r, c = self.resolution, -(-self.resolution // factor)
            b = self.binary.view(r, r, r)
            if c * factor != r:
                b = torch.nn.functional.pad(b, (0, c * factor - r) * 3)
            cache[1][factor] = b.reshape(c, factor, c, factor, c, factor).any(5).any(3).any(1).reshape(-1).contiguous()
        return cache[1][factor]

    def mips(self) -> tuple[list[torch.Tensor], list[int]]:
        """Coarse levels for the C++ marcher's empty-space skipping, coarsest first: blocks of 8^3 and 2^3 cells
        (those smaller than the grid). Returns (grids, factors)."""
        factors = [f for f in (8, 2) if f < self.resolution]
        return [self.coarse(f) for f in factors], factors

    def occupancy_fraction(self) -> float:
        return float(self.binary.float().mean())
