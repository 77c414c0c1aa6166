"""Ray sampling: uniform (batched) and occupancy-grid marching (packed).

:func:`march` dispatches to the C++ kernel on CPU (``nfkit.kernels``) and falls back to
:func:`march_reference`, the pure-torch oracle. Both place samples at ``t_k = t_near + (k + u) * step``
(``u`` one jitter per ray in [0, 1), 0.5 when not stratified), keep a sample when ``t_k < t_far`` and the
cell holding ``o + t_k d`` is occupied, and return it as the interval ``[t_k - step/2, t_k + step/2]``.
"""
from __future__ import annotations

import math

import torch

from nfkit.renderers.cameras import ray_aabb


def uniform_samples(t_near: torch.Tensor, t_far: torch.Tensor, n: int, stratified: bool = False):
    """Batched: t_near, t_far [R] -> (t_starts, t_ends) [R, n] evenly splitting [t_near, t_far]."""
    u = torch.linspace(0, 1, n + 1, device=t_near.device)
    edges = t_near[:, None] + (t_far - t_near)[:, None] * u
    if stratified:
        mid = (edges[:, 1:] + edges[:, :-1]) * 0.5
        shift = (torch.rand_like(mid) - 0.5) * (edges[:, 1:] - edges[:, :-1])
        edges = torch.cat([edges[:, :1], mid + shift, edges[:, -1:]], -1)
    return edges[:, :-1], edges[:, 1:]


def march_reference(rays_o, rays_d, t_near, t_far, jitter, step: float, binary: torch.Tensor, aabb: torch.Tensor,
                    resolution: int, max_per_ray: int = 0):
    """Pure torch. rays_o, rays_d: [R, 3]; t_near, t_far, jitter: [R]; binary: [res^3] bool.

    Returns packed ``ray_indices`` [S] long, ``t_mid`` [S] (rays in increasing order) and ``t_next`` [R]: where a
    capped walk (``max_per_ray`` > 0 samples per ray) continues, or ``t_far`` when the ray was walked to its end.
    """
    n_rays = rays_o.shape[0]
    span = (t_far - t_near).clamp_min(0)
    k_max = int(math.ceil(float(span.max()) / step)) + 1 if n_rays else 0
    t_next = t_far.clone()
    if k_max <= 0:
        e = torch.zeros(0, device=rays_o.device)
        return e.long(), e, t_next
    ray_ids, out_t = [], []
    chunk = max(1, (1 << 22) // k_max)
    k = torch.arange(k_max, device=rays_o.device, dtype=torch.float32)
    for s in range(0, n_rays, chunk):
        sl = slice(s, s + chunk)
        t = t_near[sl, None] + (k + jitter[sl, None]) * step
        valid = t < t_far[sl, None]
        x = rays_o[sl, None] + t[..., None] * rays_d[sl, None]
        u = (x - aabb[0]) / (aabb[1] - aabb[0])
        inside = ((u >= 0) & (u < 1)).all(-1)
        ijk = (u * resolution).long().clamp(0, resolution - 1)
        flat = (ijk[..., 0] * resolution + ijk[..., 1]) * resolution + ijk[..., 2]
        keep = valid & inside & binary[flat]
        if max_per_ray > 0:
            rank = torch.cumsum(keep.long(), 1)
            capped = keep & (rank == max_per_ray)  # the cap-th sample: continue right after it
            keep = keep & (rank <= max_per_ray)
            k_cap = torch.argmax(capped.long(), 1)
            t_cont = t_near[sl] + (k_cap + 1).float() * step
            t_next[sl] = torch.where(capped.any(1), t_cont, t_far[sl])
        r, _ = torch.nonzero(keep, as_tuple=True)
        ray_ids.append(r + s)
        out_t.append(t[keep])
    return torch.cat(ray_ids), torch.cat(out_t), t_next


def march_segment(rays_o, rays_d, t_near, t_far, jitter, step: float, grid, max_per_ray: int = 0,
                  backend: str = "auto"):
    """Dispatch of :func:`march_reference` (same arguments, ``grid``: :class:`OccupancyGrid`) to a fast path that
    returns the same samples (a ray grazing a cell face within float rounding may differ in which side it is
    counted): on the CPU the C++ kernel, which skips empty space (``grid.mips()`` blocks, then empty cells); on
    CUDA nerfacc's ``traverse_grids`` (:mod:`nfkit.renderers.nerfacc_backend`) for uncapped walks.
    ``backend``: ``auto``, ``torch`` (the reference) or ``nerfacc`` (CUDA only)."""
    if backend == "nerfacc" or (backend == "auto" and rays_o.is_cuda and max_per_ray <= 0):
        from nfkit.renderers import nerfacc_backend

        if backend == "nerfacc":
            nerfacc_backend.require(rays_o.device)
        if nerfacc_backend.usable(rays_o.device) and max_per_ray <= 0:
            return nerfacc_backend.march(rays_o, rays_d, t_near, t_far, jitter, step, grid)
    if backend != "torch" and rays_o.device.type == "cpu":
        from nfkit import kernels

        ops = kernels.load()
        if ops is not None:
            ri, ts, t_next = ops.march(rays_o.float().contiguous(), rays_d.float().contiguous(), t_near.contiguous(),
                                       t_far.contiguous(), jitter.contiguous(), float(step), grid.binary.contiguous(),
                                       grid.aabb.contiguous(), grid.resolution, int(max_per_ray),
                                       *grid.mips())
            return ri, ts, t_next
    return march_reference(rays_o, rays_d, t_near, t_far, jitter, step, grid.binary, grid.aabb, grid.resolution,
                           max_per_ray)


def march(rays_o, rays_d, grid, step: float, stratified: bool = False, near: float = 0.0, backend: str = "auto"):
    """Occupancy-grid marching through ``grid`` (:class:`OccupancyGrid`). rays_o, rays_d: [R, 3] world.

    Returns packed ``(ray_indices [S], t_starts [S], t_ends [S])``.
    """
    t_near, t_far = ray_aabb(rays_o, rays_d, grid.aabb)
    t_near = t_near.clamp_min(near)
    jitter = torch.rand_like(t_near) if stratified else torch.full_like(t_near, 0.5)
    ri, t, _ = march_segment(rays_o, rays_d, t_near, t_far, jitter, step, grid, 0, backend)
    return ri, t - step * 0.5, t + step * 0.5
