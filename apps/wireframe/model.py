"""NEAT's extra networks beside the VolSDF field, and the line renderer.

* :class:`AttractionHead`: MLP on [p, d, grad f, geometry features] -> 6 = two 3-D endpoint offsets; the field
  value at x is the segment ``L(x) = (x + D1(x), x + D2(x))`` (normalised scene coordinates).
* :class:`JunctionDecoder`: N_J latent codes Z [N_J, D] (i.i.d. N(0, 1)) -> MLP (2 hidden ReLU layers) -> global
  junctions [N_J, 3] (Global Junction Perceiving).
* :func:`render_line_rays`: the SDF field's VolSDF (or NeuS) rendering through the shared marcher and compositor,
  plus the attraction channel composited with **detached** weights: ``L(r) = sum_i stopgrad(w_i) L(x_i)`` (the line
  loss never moves geometry through the weights; it still reaches the SDF trunk through the features and grad f
  the head reads), divided by the ray's weight sum (NEAT does not divide; on rays that graze a silhouette the sum
  is well below 1 and the undivided segment shrinks towards the origin). ``weight_sum`` [R] is returned too: the
  objective and the extraction ignore rays with ``weight_sum < MIN_OPACITY``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nfkit.renderers.compositing import weights_from_density
from nfkit.renderers.sampling import march
from nfkit.renderers.sdf import EVAL_CHUNK, MIN_ALPHA, composite_channels, composite_sdf, sdf_weights


MIN_OPACITY = 0.5  # rays that see less of the surface carry no line supervision and no extracted segment


def _mlp(n_in: int, hidden: int, n_hidden: int, n_out: int) -> nn.Sequential:
    layers, d = [], n_in
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def frequency_encode(p: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """p [N, 3] -> [N, 6 n_freqs]: sin and cos of 2^k pi p, k < n_freqs."""
    if n_freqs <= 0:
        return p[:, :0]
    f = (2.0 ** torch.arange(n_freqs, dtype=p.dtype, device=p.device)) * torch.pi
    a = (p[:, :, None] * f).flatten(1)
    return torch.cat([a.sin(), a.cos()], -1)


class AttractionHead(nn.Module):
    """[p (3), PE(p) (6 n_freqs), d (3), grad f (3), features (K)] -> offsets [N, 6] (world units of the
    normalised scene). NEAT feeds [x, d, grad f, 256 SDF features]; the SDF trunk here is much smaller (K = 15), so
    the head also sees a frequency encoding of p (``n_freqs``, 0 = NEAT's input)."""

    def __init__(self, n_features: int, hidden: int = 64, n_hidden: int = 2, n_freqs: int = 4):
        super().__init__()
        self.n_freqs = n_freqs
        self.net = _mlp(9 + 6 * n_freqs + n_features, hidden, n_hidden, 6)
        with torch.no_grad():  # start from short segments around x
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()

    def forward(self, p, d, grad, feats) -> torch.Tensor:
        return self.net(torch.cat([p, frequency_encode(p, self.n_freqs), d, grad, feats], -1))


class JunctionDecoder(nn.Module):
    """Global junctions: latents [n, dim] ~ N(0, 1) -> MLP(dim, dim, dim, 3) -> [n, 3]."""

    def __init__(self, n: int = 64, dim: int = 64):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n, dim))
        self.net = _mlp(dim, dim, 2, 3)

    def forward(self) -> torch.Tensor:
        return self.net(self.latents)


def _prune(field, surface, rays_o, rays_d, ri, t0, t1, n_rays, opts):
    """The renderer's no-grad pruning pass (VolSDF: exact weights; NeuS falls back to no pruning here)."""
    if surface.renderer != "volsdf" or not ri.numel():
        return ri, t0, t1
    with torch.no_grad():
        x = rays_o[ri] + rays_d[ri] * ((t0 + t1) * 0.5)[:, None]
        sdf = torch.cat([field.sdf(c).float() for c in x.split(EVAL_CHUNK)])
        w, trans, _ = weights_from_density(surface.volsdf_density(sdf), t0, t1, ri, n_rays)
        keep = (trans > opts.early_stop_eps) & (w > max(opts.alpha_thre, MIN_ALPHA) * trans)
    return ri[keep], t0[keep], t1[keep]


def render_line_rays(field, head: AttractionHead, grid, rays_o, rays_d, opts, stratified: bool = False,
                     with_rgb: bool = True) -> dict:
    """Render R rays: the renderer's outputs (``rgb`` [R, 3] on a black background, ``opacity`` [R], ``depth``,
    ``normals``, ``sample_gradients`` [S, 3], ``n_samples``) plus ``lines`` [R, 6]: the composited 3-D segment
    (two endpoints) with detached weights. Without grad the colour is still computed (the field's forward)."""
    n_rays = rays_o.shape[0]
    surface = field.surface()
    ri, t0, t1 = march(rays_o, rays_d, grid, opts.step_size, stratified=stratified, near=opts.near)
    ri, t0, t1 = _prune(field, surface, rays_o, rays_d, ri, t0, t1, n_rays, opts)
    d = rays_d[ri]
    x = rays_o[ri] + d * ((t0 + t1) * 0.5)[:, None]
    s, grad, feats = field.geometry_and_gradient(x, create_graph=torch.is_grad_enabled())
    w, _ = sdf_weights(surface, s, grad, d, t0, t1, ri, n_rays, opts.cos_anneal_ratio)
    p = (x - field.centre) / field.half
    off = head(p, d, F.normalize(grad, dim=-1), feats)
    ends = torch.cat([x + off[:, :3], x + off[:, 3:]], -1)
    if with_rgb:
        rgb = field.color_at(x, F.normalize(grad, dim=-1), d, feats)
        res = composite_sdf(w, rgb, grad, {}, (t0 + t1) * 0.5, ri, n_rays, None)
    else:
        res = {}
    if ri.numel() == 0:  # no sample on any ray (composite_channels cannot reshape an empty channel)
        acc = {"one": rays_o.new_zeros(n_rays, 1), "lines": rays_o.new_zeros(n_rays, 6)}
    else:
        acc = composite_channels(w.detach(), {"lines": ends, "one": torch.ones_like(s)}, ri, n_rays)
    res["weight_sum"] = acc["one"][:, 0]
    res["lines"] = acc["lines"] / res["weight_sum"].clamp_min(1e-6)[:, None]
    res.update(sample_gradients=grad, n_samples=int(ri.numel()))
    return res


@torch.no_grad()
def render_lines_chunked(field, head, grid, rays_o, rays_d, opts, chunk: int = 2048) -> dict:
    """:func:`render_line_rays` without grad in chunks: ``lines`` [R, 6], ``weight_sum`` [R], ``depth`` [R],
    ``normals`` [R, 3]. Needs no colour."""
    outs = []
    for o, dd in zip(rays_o.split(chunk), rays_d.split(chunk)):
        r = render_line_rays(field, head, grid, o, dd, opts, with_rgb=True)  # grad f: the field's own autograd
        outs.append({k: r[k].detach() for k in ("lines", "weight_sum", "depth", "normals")})
    return {k: torch.cat([o[k] for o in outs]) for k in ("lines", "weight_sum", "depth", "normals")}
