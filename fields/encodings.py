"""Input encodings: the multiresolution hash grid (tiny-cuda-nn compatible) and spherical harmonics.

Hash grid semantics follow tiny-cuda-nn's ``GridEncoding`` (``encodings/grid.h``) exactly, so a parameter
vector trained there evaluates identically here:

* level ``l`` scale ``s_l = 2^(l * log2(per_level_scale)) * base_resolution - 1`` (float32), resolution
  ``r_l = ceil(s_l) + 1``;
* position ``p = s_l * x + 0.5``; corner ``floor(p)``, fraction ``p - floor(p)``; D-linear weights;
* entries in level ``l``: ``min(next_multiple_of_8(r_l^3), 2^log2_hashmap_size)``; a level is indexed
  densely (``x + y*r + z*r^2``) while ``r_l^3`` fits, else by the CoherentPrime hash
  ``x*1 ^ y*2654435761 ^ z*805459861`` (uint32); both taken ``% entries_in_level``;
* parameters: one flat vector, level-major, then entry, then feature; output ``[N, n_levels * F]`` with
  feature ``l * F + f``.

The fast CPU path (C++/OpenMP, :mod:`nfkit.kernels`) and the tinycudann path (CUDA) sit behind
:func:`hash_encode`; :func:`hash_encode_reference` is the pure-torch oracle.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.3819  # 16 -> ~2048 over 16 levels

    def tcnn_config(self) -> dict:
        return {
            "otype": "HashGrid", "n_levels": self.n_levels, "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size, "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale, "interpolation": "Linear",
        }


def level_layout(cfg: HashGridConfig):
    """Per-level (scale [L] float32, resolution [L] int, offsets [L+1] int) exactly as tiny-cuda-nn computes them."""
    log2_pls = np.float32(math.log2(cfg.per_level_scale))
    scales, res, offsets = [], [], [0]
    for lvl in range(cfg.n_levels):
        s = np.float32(np.exp2(np.float32(lvl) * log2_pls) * np.float32(cfg.base_resolution) - np.float32(1.0))
        r = int(math.ceil(float(s))) + 1
        n = r ** 3 if float(r) ** 3 <= (2**32 - 1) // 2 else (2**32 - 1) // 2
        n = (n + 7) // 8 * 8
        n = min(n, 1 << cfg.log2_hashmap_size)
        scales.append(s)
        res.append(r)
        offsets.append(offsets[-1] + n)
    return np.array(scales, np.float32), np.array(res, np.int64), np.array(offsets, np.int64)


def grid_index(pos_grid: torch.Tensor, resolution: int, hashmap_size: int) -> torch.Tensor:
    """Entry index inside one level. pos_grid: [..., 3] int64 (non-negative) -> [...] int64 in [0, hashmap_size)."""
    stride, index, dims_used = 1, torch.zeros_like(pos_grid[..., 0]), 0
    for d in range(3):
        if stride > hashmap_size:
            break
        index = index + pos_grid[..., d] * stride
        stride *= resolution
        dims_used += 1
    if hashmap_size < stride or dims_used < 3:
        mask = 0xFFFFFFFF
        h = torch.zeros_like(index)
        for d in range(3):
            h = h ^ ((pos_grid[..., d] * PRIMES[d]) & mask)
        index = h
    return (index & 0xFFFFFFFF) % hashmap_size


def hash_encode_reference(x: torch.Tensor, params: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """Pure-torch hash encoding. x: [N, 3] in [0, 1]; params: [n_entries * F] -> [N, n_levels * F]."""
    scales, res, offsets = level_layout(cfg)
    F_ = cfg.n_features_per_level
    table = params.view(-1, F_)
    outs = []
    for lvl in range(cfg.n_levels):
        # tcnn computes fmaf(scale, x, 0.5f): one rounding. float64 product+sum, then float32, matches it.
        pos = (x.double() * float(scales[lvl]) + 0.5).float()
        base = torch.floor(pos)
        frac = pos - base
        base = base.long()
        acc = 0.0
        for c in range(8):
            bits = torch.tensor([(c >> d) & 1 for d in range(3)], device=x.device)
            w = torch.where(bits.bool(), frac, 1 - frac).prod(-1, keepdim=True)
            idx = grid_index(base + bits, int(res[lvl]), int(offsets[lvl + 1] - offsets[lvl])) + int(offsets[lvl])
            acc = acc + w * table[idx]
        outs.append(acc)
    return torch.cat(outs, -1)


_CORNERS = [[(c >> d) & 1 for d in range(3)] for c in range(8)]


def hash_encode_levels(x: torch.Tensor, params: torch.Tensor, cfg: HashGridConfig) -> torch.Tensor:
    """The reference encoding with every level and corner in one batch: the same indices and weights as
    :func:`hash_encode_reference` (sums in another order: equal to float rounding) in ~30 kernels instead of
    ~2000, the fallback on CUDA without tinycudann. x: [N, 3] in [0, 1] on any device; params: [n_entries * F]
    -> [N, n_levels * F]. Memory ~N * L * 8 * 24 bytes (indices and weights)."""
    scales, res, offsets = level_layout(cfg)
    dev, F_, L = x.device, cfg.n_features_per_level, cfg.n_levels
    sizes = offsets[1:] - offsets[:-1]
    dense = [int(r) ** 3 <= int(n) for r, n in zip(res, sizes)]  # grid_index's "all three dims, no overflow"
    s_t = torch.tensor(scales.astype(np.float64), device=dev)
    r_t = torch.tensor(res, device=dev)
    n_t = torch.tensor(sizes, device=dev)
    o_t = torch.tensor(offsets[:-1], device=dev)
    dense_t = torch.tensor(dense, device=dev)
    pos = (x.double()[:, None, :] * s_t[None, :, None] + 0.5).float()  # [N, L, 3], as the reference
    base = torch.floor(pos)
    frac = pos - base
    bits = torch.tensor(_CORNERS, device=dev)  # [8, 3]
    corner = base.long()[:, :, None, :] + bits  # [N, L, 8, 3]
    w3 = torch.where(bits.bool(), frac[:, :, None, :], 1 - frac[:, :, None, :])
    w = w3[..., 0] * w3[..., 1] * w3[..., 2]  # [N, L, 8]
    cx, cy, cz = corner.unbind(-1)
    r = r_t[None, :, None]
    lin = cx + cy * r + cz * (r * r)
    mask = 0xFFFFFFFF
    hsh = ((cx * PRIMES[0]) & mask) ^ ((cy * PRIMES[1]) & mask) ^ ((cz * PRIMES[2]) & mask)
    idx = (torch.where(dense_t[None, :, None], lin, hsh) & mask) % n_t[None, :, None] + o_t[None, :, None]
    feats = params.view(-1, F_).index_select(0, idx.reshape(-1)).view(*idx.shape, F_)  # [N, L, 8, F]
    return (w[..., None].to(feats.dtype) * feats).sum(2).reshape(x.shape[0], L * F_)


class _HashEncodeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, offsets, scales, resolutions, n_features):
        ops = _kernels()
        out = ops.hash_encode_forward(x, params, offsets, scales, resolutions, n_features)
        ctx.save_for_backward(x, offsets, scales, resolutions)
        ctx.n_features, ctx.n_params = n_features, params.numel()
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, offsets, scales, resolutions = ctx.saved_tensors
        grad_params = _kernels().hash_encode_backward(
            grad_out.contiguous(), x, offsets, scales, resolutions, ctx.n_features, ctx.n_params)
        return None, grad_params, None, None, None, None


def _kernels():
    from nfkit import kernels

    return kernels.load()


_warned_xgrad = False


def hash_encode(x: torch.Tensor, params: torch.Tensor, cfg: HashGridConfig, layout=None, backend: str = "auto"):
    """Dispatching hash encoding. x: [N, 3] in [0, 1] -> [N, n_levels * F].

    ``backend``: "auto" (C++ kernel on CPU when it compiles, else the reference), "cpp", or "torch". Tensors
    on another device (CUDA) never reach the C++ kernels: :func:`hash_encode_levels` ("torch": the reference).
    Gradients w.r.t. ``x`` are only produced by the reference path; the kernel is used when ``x`` needs none.
    """
    global _warned_xgrad
    if x.device.type != "cpu":  # the C++ kernels take CPU tensors only
        return hash_encode_levels(x, params, cfg) if backend != "torch" else hash_encode_reference(x, params, cfg)
    use_cpp = backend == "cpp" or (backend == "auto" and _kernels() is not None)
    if use_cpp and x.requires_grad:
        if backend == "cpp" and not _warned_xgrad:
            warnings.warn("hash_encode: input gradients need the torch reference path", stacklevel=2)
            _warned_xgrad = True
        use_cpp = False
    if not use_cpp:
        return hash_encode_reference(x, params, cfg)
    offsets, scales, resolutions = layout
    return _HashEncodeCPU.apply(x.float().contiguous(), params, offsets, scales, resolutions, cfg.n_features_per_level)


class HashEncoding(nn.Module):
    """Multiresolution hash encoding with tcnn-compatible parameters. forward: x [N, 3] in [0, 1] -> [N, L*F]."""

    def __init__(self, cfg: HashGridConfig, backend: str = "auto"):
        super().__init__()
        self.cfg, self.backend = cfg, backend
        scales, res, offsets = level_layout(cfg)
        self.register_buffer("offsets", torch.from_numpy(offsets.astype(np.int64)), persistent=False)
        self.register_buffer("scales", torch.from_numpy(scales), persistent=False)
        self.register_buffer("resolutions", torch.from_numpy(res.astype(np.int64)), persistent=False)
        n = int(offsets[-1]) * cfg.n_features_per_level
        # tiny-cuda-nn initialises grid parameters uniformly in [-1e-4, 1e-4].
        self.params = nn.Parameter(torch.empty(n).uniform_(-1e-4, 1e-4))
        self._tcnn = None
        if backend in ("auto", "tcnn") and torch.cuda.is_available():
            try:
                import tinycudann as tcnn  # noqa: F401

                self._tcnn = tcnn
            except ImportError:
                if backend == "tcnn":
                    raise

    @property
    def out_dim(self) -> int:
        return self.cfg.n_levels * self.cfg.n_features_per_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tcnn is not None and x.is_cuda:
            return _tcnn_encode(self, x)
        return hash_encode(x, self.params, self.cfg, (self.offsets, self.scales, self.resolutions), self.backend)


def _tcnn_encode(enc: HashEncoding, x: torch.Tensor) -> torch.Tensor:
    """tinycudann forward with our parameter vector (same layout), so weights move freely between backends."""
    if getattr(enc, "_tcnn_module", None) is None:
        # Not a registered submodule: its parameter is ours, and the state dict / field file keep one copy.
        object.__setattr__(enc, "_tcnn_module", enc._tcnn.Encoding(3, enc.cfg.tcnn_config(), dtype=torch.float32))
    mod = enc._tcnn_module
    mod.params = enc.params  # share storage: one source of truth
    return mod(x).float()


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Real spherical harmonics (tcnn ordering) of unit directions. d: [N, 3] -> [N, degree**2]."""
    x, y, z = d.unbind(-1)
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        out += [1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * xz, 0.54627421529603959 * xx - 0.54627421529603959 * yy]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3.0 * xx + yy), 2.8906114426405538 * xy * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz), 0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz), 1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy)]
    return torch.stack(out, -1)
