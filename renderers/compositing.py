"""Volume-rendering compositing for packed (variable samples per ray) and batched samples.

Packed layout (as nerfacc): samples of one ray are contiguous and rays appear in increasing order;
``ray_indices`` [S] gives each sample's ray. Quadrature: ``alpha_i = 1 - exp(-sigma_i * dt_i)``,
``T_i = prod_{j<i} (1 - alpha_j)``, ``w_i = T_i * alpha_i``; colour ``sum w_i c_i + (1 - sum w_i) * bg``.
"""
from __future__ import annotations

import torch


def packed_exclusive_sum(x: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray exclusive cumulative sum of packed values [S] (float64 accumulation for stability)."""
    cs = torch.cumsum(x.double(), 0)
    total = torch.zeros(n_rays + 1, dtype=torch.float64, device=x.device)
    total.index_add_(0, ray_indices + 1, x.double())
    ray_start = torch.cumsum(total, 0)[:-1]  # sum of all samples of earlier rays
    return (cs - x.double() - ray_start[ray_indices]).to(x.dtype)


def _nerfacc_for(x: torch.Tensor, backend: str):
    """The nerfacc module of the CUDA fast path when it applies to ``x``, else None (``backend="nerfacc"``
    insists: a one-line error without it)."""
    if backend == "torch" or (backend == "auto" and not x.is_cuda):
        return None
    from nfkit.renderers import nerfacc_backend

    if backend == "nerfacc":
        nerfacc_backend.require(x.device)
    return nerfacc_backend if nerfacc_backend.usable(x.device) else None


def weights_from_density(sigmas, t_starts, t_ends, ray_indices, n_rays, backend: str = "auto"):
    """Packed: sigmas, t_starts, t_ends, ray_indices: [S] -> (weights [S], transmittance [S], alphas [S]).

    On CUDA nerfacc's scans when they load (``backend``: ``auto`` | ``torch`` | ``nerfacc``); the torch code
    below is the reference."""
    fast = _nerfacc_for(sigmas, backend)
    if fast is not None:
        return fast.weights_from_density(sigmas, t_starts, t_ends, ray_indices, n_rays)
    tau = sigmas * (t_ends - t_starts)
    trans = torch.exp(-packed_exclusive_sum(tau, ray_indices, n_rays))
    alphas = 1.0 - torch.exp(-tau)
    return trans * alphas, trans, alphas


def weights_from_alpha(alphas, ray_indices, n_rays, backend: str = "auto"):
    """Packed: alphas [S] in [0, 1) (SDF renderers) -> (weights [S], transmittance [S]); on CUDA nerfacc's
    exclusive product when it loads (as :func:`weights_from_density`)."""
    fast = _nerfacc_for(alphas, backend)
    if fast is not None:
        return fast.weights_from_alpha(alphas, ray_indices, n_rays)
    log1m = torch.log(torch.clamp(1.0 - alphas, min=1e-10))
    trans = torch.exp(packed_exclusive_sum(log1m, ray_indices, n_rays))
    return trans * alphas, trans


def accumulate(weights, values, ray_indices, n_rays):
    """sum of weights[S] * values[S, C] per ray -> [n_rays, C] (values None: sum of weights, [n_rays, 1])."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros(n_rays, src.shape[-1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def composite_packed(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background=None):
    """Packed compositing. rgbs: [S, 3]; background: [3] or [n_rays, 3] or None (black).

    Returns ``rgb`` [n_rays, 3], ``opacity`` [n_rays], ``depth`` [n_rays] (expected depth, not normalised),
    ``weights`` [S].
    """
    w, _, _ = weights_from_density(sigmas, t_starts, t_ends, ray_indices, n_rays)
    rgb = accumulate(w, rgbs, ray_indices, n_rays)
    opacity = accumulate(w, None, ray_indices, n_rays)
    depth = accumulate(w, ((t_starts + t_ends) * 0.5)[:, None], ray_indices, n_rays)[:, 0]
    if background is not None:
        rgb = rgb + (1.0 - opacity) * background
    return rgb, opacity[:, 0], depth, w


def composite_batched(sigmas, rgbs, t_starts, t_ends, background=None):
    """Batched compositing. sigmas, t_starts, t_ends: [R, K]; rgbs: [R, K, 3] -> rgb [R,3], opacity [R], depth [R], w [R,K]."""
    tau = sigmas * (t_ends - t_starts)
    trans = torch.exp(-(torch.cumsum(tau, -1) - tau))
    w = trans * (1.0 - torch.exp(-tau))
    rgb = (w[..., None] * rgbs).sum(-2)
    opacity = w.sum(-1)
    depth = (w * (t_starts + t_ends) * 0.5).sum(-1)
    if background is not None:
        rgb = rgb + (1.0 - opacity[:, None]) * background
    return rgb, opacity, depth, w
