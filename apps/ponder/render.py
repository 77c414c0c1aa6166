"""Decoders and NeuS volume rendering of a feature volume (PonderV2's rendering head, CPU-sized).

* :class:`ConditionedMLP`: ConvONet / IF-Net style decoder: every hidden layer adds a linear projection of the
  sampled volume feature.
* :class:`PonderModel`: encoder (:mod:`.encoder`) + SDF head (-> sdf, geometry feature), RGB head over
  [∇f, colour half, geometry feature, view direction], optional semantic head (the same minus the direction) and
  the learned NeuS sharpness (:class:`nfkit.fields.sdf.SurfaceDensity`, s = exp(10 v), v0 = 0.3).
* :meth:`PonderModel.render`: per ray ``n_uniform`` stratified samples between the ray's AABB entry and exit, one
  round of ``n_importance`` samples drawn from NeuS weights at a fixed inv_s of 64 (as SDFStudio's NeuSSampler's
  first upsampling step), then NeuS alphas (:func:`nfkit.renderers.sdf.neus_alpha`) at the section midpoints and
  the packed compositor (:func:`nfkit.renderers.compositing.weights_from_alpha`).

The SDF gradient is a 4-point tetrahedral finite difference (h = ``fd_step``, a quarter voxel): torch's 3-D
``grid_sample`` has no double backward, which the autograd gradient would need for the eikonal loss and the
gradient-dependent alphas (upstream wrote a CUDA "smooth sampler" for this); the difference quotient is an
ordinary function of the parameters, so losses on it train them. Shapes: rays [B, R, 3]; samples [B, R, K].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from nfkit.cameras import ray_aabb
from nfkit.fields.sdf import SurfaceDensity
from nfkit.renderers.compositing import accumulate, weights_from_alpha
from nfkit.renderers.sdf import neus_alpha

from .encoder import EncoderConfig, PointEncoder, sample_volume

TETRA = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


@dataclass
class RenderConfig:
    hidden: int = 32  # decoder width
    geo_features: int = 16  # the SDF head's extra output, fed to the colour / semantic heads
    n_uniform: int = 32
    n_importance: int = 16
    sem_dim: int = 0  # semantic head width (0: none)
    near: float = 0.01


class ConditionedMLP(nn.Module):
    """h0 = W_in x; per block h = h + W_c c; h = act(W h); out = W_out h. x [P, in_dim], c [P, c_dim] -> [P, out]."""

    def __init__(self, in_dim: int, c_dim: int, hidden: int, out_dim: int, n_blocks: int = 1, act=None):
        super().__init__()
        self.fc_in = nn.Linear(in_dim, hidden) if in_dim > 0 else None
        self.fc_c = nn.ModuleList(nn.Linear(c_dim, hidden) for _ in range(n_blocks + 1))
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden, out_dim)
        self.act = act or nn.ReLU()

    def forward(self, x, c):
        h = self.fc_c[0](c) if self.fc_in is None else self.fc_in(x) + self.fc_c[0](c)
        h = self.act(h)
        for fc_c, blk in zip(self.fc_c[1:], self.blocks):
            h = self.act(blk(h + fc_c(c)))
        return self.fc_out(h)


class PonderModel(nn.Module):
    """Encoder + rendering decoders (see the module docstring)."""

    def __init__(self, enc_cfg: EncoderConfig, cfg: RenderConfig):
        super().__init__()
        self.enc_cfg, self.cfg = enc_cfg, cfg
        self.encoder = PointEncoder(enc_cfg)
        half = enc_cfg.out_channels // 2
        self.half = half
        self.sdf_head = ConditionedMLP(0, half, cfg.hidden, 1 + cfg.geo_features, 1, nn.Softplus(beta=100))
        self.rgb_head = ConditionedMLP(3 + cfg.geo_features + 3, half, cfg.hidden, 3, 0)
        self.sem_head = ConditionedMLP(3 + cfg.geo_features, half, cfg.hidden, cfg.sem_dim, 0) if cfg.sem_dim else None
        self.surface = SurfaceDensity("neus", init_variance=0.3)
        with torch.no_grad():  # start as "empty space": positive SDF everywhere, as a sphere-initialised NeuS far out
            self.sdf_head.fc_out.bias[0] = 0.1
        vox = [(hi - lo) / n for lo, hi, n in zip(*enc_cfg.aabb, enc_cfg.grid)]
        self.fd_step = 0.25 * min(vox)

    @property
    def aabb(self) -> torch.Tensor:
        return self.encoder.aabb

    def sdf(self, vol: torch.Tensor, x: torch.Tensor):
        """sdf [B, P] and geometry feature [B, P, G] at points x [B, P, 3]."""
        c = sample_volume(vol[:, : self.half], x, self.aabb)
        b, p, _ = x.shape
        out = self.sdf_head(None, c.reshape(b * p, -1)).reshape(b, p, -1)
        return out[..., 0], out[..., 1:]

    def sdf_grad(self, vol: torch.Tensor, x: torch.Tensor):
        """sdf [B, P] (the mean of the tetrahedron's values), gradient [B, P, 3] (tetrahedral differences) and the
        geometry feature at x."""
        b, p, _ = x.shape
        k = TETRA.to(x)
        xs = (x[:, :, None, :] + self.fd_step * k).reshape(b, p * 4, 3)
        f, _ = self.sdf(vol, xs)
        f = f.reshape(b, p, 4)
        grad = (f[..., None] * k).sum(2) / (4.0 * self.fd_step)
        _, geo = self.sdf(vol, x)
        return f.mean(-1), grad, geo

    def colour_and_semantic(self, vol, x, grad, geo, dirs):
        """rgb [B, P, 3] in (0, 1) and semantic feature [B, P, S] (or None)."""
        c = sample_volume(vol[:, self.half:], x, self.aabb)
        b, p, _ = x.shape
        flat = lambda t: t.reshape(b * p, -1)  # noqa: E731
        rgb = torch.sigmoid(self.rgb_head(flat(torch.cat([grad, geo, dirs], -1)), flat(c))).reshape(b, p, 3)
        sem = None
        if self.sem_head is not None:
            sem = self.sem_head(flat(torch.cat([grad, geo], -1)), flat(c)).reshape(b, p, -1)
        return rgb, sem

    @torch.no_grad()
    def importance(self, vol, rays_o, rays_d, t, n: int, inv_s: float = 64.0) -> torch.Tensor:
        """``n`` sorted importance samples [B, R, n] from NeuS weights of the uniform samples ``t`` [B, R, K]
        (SDFStudio's upsampling: alphas from consecutive SDF values at a fixed inv_s)."""
        b, r, k = t.shape
        x = rays_o[:, :, None] + t[..., None] * rays_d[:, :, None]
        f, _ = self.sdf(vol, x.reshape(b, r * k, 3))
        f = f.reshape(b, r, k)
        cdf = torch.sigmoid(f * inv_s)
        alpha = ((cdf[..., :-1] - cdf[..., 1:] + 1e-5) / (cdf[..., :-1] + 1e-5)).clamp(0, 1)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-7], -1), -1)[..., :-1]
        w = alpha * trans + 1e-5
        pdf = w / w.sum(-1, keepdim=True)
        cdfw = torch.cat([torch.zeros_like(pdf[..., :1]), pdf.cumsum(-1)], -1)
        u = torch.rand(b, r, n, device=t.device)
        i = torch.searchsorted(cdfw.contiguous(), u.contiguous(), right=True).clamp(1, k - 1)
        c0, c1 = cdfw.gather(-1, i - 1), cdfw.gather(-1, i)
        t0, t1 = t.gather(-1, i - 1), t.gather(-1, i)
        return t0 + (u - c0) / (c1 - c0).clamp_min(1e-8) * (t1 - t0)

    def render(self, vol, rays_o, rays_d, cos_anneal_ratio: float = 1.0, stratified: bool = True) -> dict:
        """Render rays [B, R, 3] (unit directions) of volumes [B, C, Z, Y, X]. Returns ``rgb`` [B, R, 3], ``depth``
        [B, R] (expected ray distance), ``opacity`` [B, R], ``sem`` [B, R, S] or None, ``valid`` [B, R] (the ray meets
        the AABB), and per sample ``t`` [B, R, K] (midpoints), ``sdf`` [B, R, K], ``grad`` [B, R, K, 3]."""
        cfg = self.cfg
        b, r, _ = rays_o.shape
        near, far = ray_aabb(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), self.aabb)
        near, far = near.clamp_min(cfg.near).reshape(b, r), far.reshape(b, r)
        valid = far > near + 1e-4
        far = torch.where(valid, far, near + 1e-3)
        k = cfg.n_uniform
        u = (torch.arange(k, device=rays_o.device) + (torch.rand(b, r, k) if stratified else 0.5)) / k
        t = near[..., None] + (far - near)[..., None] * u
        if cfg.n_importance:
            t = torch.sort(torch.cat([t, self.importance(vol, rays_o, rays_d, t, cfg.n_importance)], -1), -1)[0]
        edges = torch.cat([near[..., None], (t[..., 1:] + t[..., :-1]) / 2, far[..., None]], -1)
        dt = (edges[..., 1:] - edges[..., :-1]).clamp_min(1e-6)
        kk = t.shape[-1]
        x = rays_o[:, :, None] + t[..., None] * rays_d[:, :, None]
        dirs = rays_d[:, :, None].expand(b, r, kk, 3)
        f, grad, geo = self.sdf_grad(vol, x.reshape(b, r * kk, 3))
        rgb_s, sem_s = self.colour_and_semantic(vol, x.reshape(b, r * kk, 3), grad, geo, dirs.reshape(b, r * kk, 3))
        alpha = neus_alpha(f.reshape(-1), grad.reshape(-1, 3), dirs.reshape(-1, 3), dt.reshape(-1),
                           self.surface.inv_s(), cos_anneal_ratio)
        n_rays = b * r
        ray_idx = torch.arange(n_rays, device=t.device).repeat_interleave(kk)
        w, _ = weights_from_alpha(alpha, ray_idx, n_rays)
        out = {"rgb": accumulate(w, rgb_s.reshape(-1, 3), ray_idx, n_rays).reshape(b, r, 3),
               "depth": accumulate(w, t.reshape(-1, 1), ray_idx, n_rays).reshape(b, r),
               "opacity": accumulate(w, None, ray_idx, n_rays).reshape(b, r), "valid": valid,
               "t": t, "sdf": f.reshape(b, r, kk), "grad": grad.reshape(b, r, kk, 3), "sem": None}
        if sem_s is not None:
            out["sem"] = accumulate(w, sem_s.reshape(-1, sem_s.shape[-1]), ray_idx, n_rays).reshape(b, r, -1)
        return out
