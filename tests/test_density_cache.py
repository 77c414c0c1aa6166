"""Viewer-mode marching on a baked density lattice (renderers/density_cache.py).

``DensityCache.march`` dispatches to the C++ kernel ``march_cached`` (one pass per ray: occupancy-grid marching with
empty-space skipping, trilinear density from the lattice, front-to-back transmittance, early stop, only samples of
weight > eps kept). It is compared with ``march_cached_reference`` (march everything, ``grid_sample``, packed
compositing), and the lattice lookup with ``grid_sample`` itself.
"""
from __future__ import annotations

import pytest
import torch

from nfkit.renderers import OccupancyGrid
from nfkit.renderers.cameras import ray_aabb
from nfkit.renderers.density_cache import DensityCache, march_cached_reference


def kernels_or_none():
    from nfkit import kernels

    return kernels.load()


def blob_setup(seed: int, res: int = 32, cache_res: int = 24, n_rays: int = 2048):
    """Two soft density blobs in a non-cubic box, the occupancy grid marking where density > 0.5, rays from
    outside aimed at the box (some miss)."""
    g = torch.Generator().manual_seed(seed)
    aabb = torch.tensor([[-1.0, -1.2, -0.8], [1.1, 0.9, 1.3]])
    centres = aabb[0] + (aabb[1] - aabb[0]) * (0.3 + 0.4 * torch.rand(2, 3, generator=g))

    def density(x):
        d2 = torch.cdist(x, centres).pow(2)
        return (60.0 * torch.exp(-d2 / 0.08)).sum(-1)

    lin = torch.linspace(0, 1, cache_res)
    zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
    pts = aabb[0] + torch.stack([xx, yy, zz], -1).reshape(-1, 3) * (aabb[1] - aabb[0])
    cache = DensityCache(density(pts).reshape(1, 1, cache_res, cache_res, cache_res), aabb)
    grid = OccupancyGrid(aabb, res)
    grid.binary.copy_(density(grid.cell_points(torch.arange(res**3), jitter=False)) > 0.5)
    centre, ext = aabb.mean(0), aabb[1] - aabb[0]
    o = centre + torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=g), dim=-1) * 3.0
    target = centre + (torch.rand(n_rays, 3, generator=g) - 0.5) * ext
    d = torch.nn.functional.normalize(target - o, dim=-1)
    tn, tf = ray_aabb(o, d, aabb)
    return cache, grid, o, d, tn.clamp_min(0), tf, density


def test_lattice_lookup_matches_grid_sample():
    """The lattice is indexed (z, y, x) with end points on the AABB corners: the cache's grid_sample density
    reproduces the analytic density at lattice vertices and interpolates linearly between them."""
    cache, grid, *_ , density = blob_setup(0, cache_res=5)
    aabb = cache.aabb
    step = (aabb[1] - aabb[0]) / 4
    v = aabb[0] + step * torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 2.0]])
    assert torch.allclose(cache.density(v), density(v), rtol=1e-4)
    mid = (v[0] + (v[0] + step * torch.tensor([1.0, 0.0, 0.0]))) / 2
    expected = (density(v[:1]) + density((v[0] + step * torch.tensor([1.0, 0.0, 0.0]))[None])) / 2
    assert torch.allclose(cache.density(mid[None]), expected, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpp_march_cached_matches_reference(seed):
    """Same kept samples (ray, t), same weights and final transmittance up to float rounding; rays in increasing
    order; weights above eps; opaque rays stopped early (the kernel visits fewer samples than all occupied ones)."""
    if kernels_or_none() is None:
        pytest.skip("C++ CPU kernels unavailable")
    cache, grid, o, d, tn, tf, _ = blob_setup(seed)
    step, eps, stop = 0.01, 1e-3, 1e-4
    ri_r, t_r, w_r, tr_r = march_cached_reference(o, d, tn, tf, grid, cache, step, eps, stop)
    ri, t, w, tr = cache.march(o, d, tn, tf, grid, step, eps, stop)
    assert ri_r.numel() > 1000 and int((tr_r < 1e-3).sum()) > 50  # many samples, many opaque rays
    assert torch.equal(ri, ri_r)
    assert torch.allclose(t, t_r, atol=1e-6)
    assert torch.allclose(w, w_r, atol=2e-5, rtol=1e-4)
    assert torch.allclose(tr, tr_r, atol=2e-5, rtol=1e-4)
    assert bool((ri[1:] >= ri[:-1]).all()) and bool((w > eps).all())


def test_march_cached_torch_backend_is_reference():
    cache, grid, o, d, tn, tf, _ = blob_setup(3, n_rays=256)
    a = cache.march(o, d, tn, tf, grid, 0.02, 1e-3, 1e-4, backend="torch")
    b = march_cached_reference(o, d, tn, tf, grid, cache, 0.02, 1e-3, 1e-4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
