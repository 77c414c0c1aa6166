"""nerfacc (0.5.3) as the CUDA fast path of the sampler, the occupancy-grid update and the compositor.

nfkit's own pure-torch paths stay the reference beside each function here, and the dispatchers
(:func:`nfkit.renderers.sampling.march_segment`, :meth:`nfkit.renderers.occupancy.OccupancyGrid.update`,
:func:`nfkit.renderers.compositing.weights_from_density` / ``weights_from_alpha``) choose nerfacc only when the
tensors are on CUDA and nerfacc's CUDA extension loads (:func:`usable`). The CPU never uses it: nerfacc's packed
scans and grid traversal exist only as CUDA code.

Conventions mapped here (both sides as documented in their sources):

* grid: nfkit's ``OccupancyGrid.binary`` [R^3] bool, flat index ``(i * R + j) * R + k`` for cell (x, y, z), and
  ``aabb`` [2, 3] (min row, max row) are nerfacc's ``binaries`` [1, R, R, R] and ``aabbs`` [1, 6] as views;
  ``density`` (EMA of ``sigma * step``) is nerfacc's ``occs``.
* marching: nfkit places samples at ``t_near + (k + u) * step`` (``u`` one jitter per ray, 0.5 unstratified) with
  intervals ``[t - step/2, t + step/2]``; nerfacc's ``traverse_grids`` places intervals ``[near + k * step,
  near + (k + 1) * step]`` kept while their midpoint lies in an occupied cell, so ``near = t_near + (u - 0.5) *
  step`` gives the same samples (up to float rounding on cell faces).
* compositing: the same quadrature (``alpha = 1 - exp(-sigma dt)``, exclusive-product transmittance).
"""
from __future__ import annotations

import functools
import sys

import torch

from nfkit.errors import NfkitError


@functools.lru_cache(maxsize=1)
def _nerfacc_cuda_loads() -> bool:
    """True when ``import nerfacc`` works and its CUDA extension is compiled (or JIT-builds: a one-off, with a
    message on stderr while it builds)."""
    try:
        import nerfacc  # noqa: F401
    except ImportError:
        return False
    try:
        from nerfacc.cuda import _backend  # noqa: F401  (the import itself builds or loads the extension)
    except Exception as e:  # a failed JIT build: nfkit's own paths are used
        print(f"nfkit: nerfacc's CUDA extension did not load ({type(e).__name__}); using nfkit's torch paths",
              file=sys.stderr)
        return False
    return getattr(_backend, "_C", None) is not None


def usable(device: torch.device | str) -> bool:
    """nerfacc is the fast path for tensors on ``device``: CUDA only, nerfacc importable, its extension loaded."""
    return torch.device(device).type == "cuda" and torch.cuda.is_available() and _nerfacc_cuda_loads()


def require(device: torch.device | str) -> None:
    """For an explicit ``backend="nerfacc"``: one-line error when :func:`usable` is False."""
    if not usable(device):
        raise NfkitError(f"backend 'nerfacc' needs CUDA tensors and nerfacc 0.5.3 with its CUDA extension "
                         f"(device {torch.device(device)}); use backend 'auto' or 'torch'")


def grid_views(grid) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`~nfkit.renderers.occupancy.OccupancyGrid` -> (binaries [1, R, R, R] bool, aabbs [1, 6]) views."""
    r = grid.resolution
    return grid.binary.view(1, r, r, r), grid.aabb.reshape(1, 6)


def march(rays_o, rays_d, t_near, t_far, jitter, step: float, grid):
    """nerfacc's ``traverse_grids`` with nfkit's sample placement (module docstring).

    rays_o, rays_d: [R, 3] world (unit directions); t_near, t_far, jitter: [R]. Returns packed ``ray_indices``
    [S] long, ``t_mid`` [S] (rays in increasing order) and ``t_next`` [R] (= ``t_far``: uncapped walk).
    """
    from nerfacc import traverse_grids

    binaries, aabbs = grid_views(grid)
    near = (t_near + (jitter - 0.5) * step).float()
    # a missed ray has t_near > t_far; nerfacc tests its own AABB hit, the far plane keeps it empty as well
    _, samples, _ = traverse_grids(rays_o.float().contiguous(), rays_d.float().contiguous(), binaries.contiguous(),
                                   aabbs.float().contiguous(), near_planes=near.contiguous(),
                                   far_planes=t_far.float().contiguous(), step_size=float(step))
    return samples.ray_indices.long(), samples.vals, t_far.clone()


def weights_from_density(sigmas, t_starts, t_ends, ray_indices, n_rays: int):
    """Packed [S] -> (weights [S], transmittance [S], alphas [S]) by nerfacc's CUDA scans (differentiable)."""
    from nerfacc import render_weight_from_density

    return render_weight_from_density(t_starts, t_ends, sigmas, ray_indices=ray_indices.long(), n_rays=n_rays)


def weights_from_alpha(alphas, ray_indices, n_rays: int):
    """Packed alphas [S] -> (weights [S], transmittance [S]) by nerfacc's CUDA exclusive product."""
    from nerfacc import render_weight_from_alpha

    return render_weight_from_alpha(alphas, ray_indices=ray_indices.long(), n_rays=n_rays)


def estimator_for(grid):
    """A ``nerfacc.OccGridEstimator`` whose ``occs`` and ``binaries`` are ``grid``'s tensors (cached on the grid;
    rebuilt when the grid moves device)."""
    from nerfacc import OccGridEstimator

    est = getattr(grid, "_nerfacc_estimator", None)
    if est is None or est.occs.device != grid.density.device:
        est = OccGridEstimator(roi_aabb=grid.aabb.reshape(6).cpu(), resolution=grid.resolution, levels=1)
        est = est.to(grid.density.device)
        object.__setattr__(grid, "_nerfacc_estimator", est)  # not a submodule: the field file keeps one grid
    est.aabbs = grid.aabb.reshape(1, 6).float()
    est.occs = grid.density
    est.binaries = grid_views(grid)[0]
    return est


@torch.no_grad()
def update_grid(grid, step: int, density_fn, step_size: float, threshold: float, decay: float, warmup_steps: int,
                chunk: int = 1 << 20) -> None:
    """One occupancy update by nerfacc's estimator (same rule and same random draws as nfkit's torch update:
    all cells during warm-up, then a random quarter plus as many occupied cells; EMA max; occupied above
    ``min(mean, threshold)``). ``density_fn``: x [N, 3] world -> sigma [N]; evaluated in chunks."""
    est = estimator_for(grid)

    def occ_eval(x):
        return torch.cat([density_fn(c).reshape(-1).float() for c in x.split(chunk)]) * step_size

    est.train()
    est.update_every_n_steps(step, occ_eval, occ_thre=threshold, ema_decay=decay, warmup_steps=warmup_steps, n=1)
    grid.binary.copy_(est.binaries.reshape(-1))
    if est.occs.data_ptr() != grid.density.data_ptr():
        grid.density.copy_(est.occs)
