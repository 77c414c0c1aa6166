"""Coordinate-Aware Modulation (CAM, Lee et al., ICLR 2024) on the NeRF-style MLP: family ``"cam"``.

The core is :class:`~nfkit.fields.mlp.MLPCore` with, after each hidden linear layer i:
``h -> Norm(h) (no learnable affine) -> gamma_i(c) * h + beta_i(c) -> ReLU``, where gamma_i, beta_i are scalars
(broadcast over the channels) read by linear interpolation, edges clamped, from small per-layer grids over a
task-chosen coordinate c (``mod_coord``):

* ``"xy"`` (image default): the pixel coordinate u in [0, 1]^2 on a ``mod_res = [32, 32]`` (x, y) grid;
* ``"view"`` (radiance default, as the authors' Mip-NeRF port): the view direction as azimuth
  ``atan2(y, x) / 2pi + 0.5`` in [0, 1] and elevation ``-(2/pi) atan2(z, |(x, y)|)`` in [-1, 1] on a
  ``[10, 3]`` (azimuth, elevation) grid; only the density trunk is modulated, not the colour branch;
* ``"position"`` (sdf/occupancy default): a tri-plane over u in [0, 1]^3, three ``mod_res[0]``^2 planes whose
  samples are **summed** (upstream multiplies three zero-initialised beta planes, so beta can never move);
* ``"none"``: no modulation (the norm-only ablation).

gamma starts at 1 (each tri-plane plane at 1/3) and beta at 0, so at initialisation the network is the base MLP
plus the normalisation. The grids (parameters ``gamma``, ``beta``) train at ``grid_lr_scale`` x the trainer's rate,
10x the MLP's (``grid_lr_scale`` 10, ``net_lr_scale`` 1), picked by parameter name in :meth:`param_groups`
(upstream's name mismatch left its grids at the MLP rate).

``norm``: ``"layer"`` normalises each point over its channels (the image port's per-point norm); the Mip-NeRF port's
per-ray GroupNorm needs ray membership, which the per-point Field protocol does not carry, so radiance uses
the per-point norm too. With view modulation of the trunk the density depends on d (``view_dependent_density``):
the renderers composite ``field(x, d).density``; the trainer's occupancy grid, its sparsity prior and ``nfkit
convert``'s estimate of a missing occupancy grid take the density seen from a random training camera
(:mod:`nfkit.renderers.view_density`); mesh export and the viewer's density cache take the mean density seen from
a few cameras. ``density(x)`` (no direction) uses the grid-mean gamma/beta, and nothing in nfkit renders with it
any more; the ``geometry()/color()`` fast path is not offered. The grid-mean stand-in is close
early on (demo, 400 steps: 20.92 against 20.94 dB) but drifts as the grids train: on 10 lego/100 test views
``nfkit fit``'s default cam after 180 s renders at 22.9 dB with it, 26.7 dB with the mean over 8 training cameras
and 26.8 dB with the views' own densities (a 256-wide trunk after 600 s: 25.9 against 28.9 dB on 5 views).
``mod_layers="color"`` instead modulates the hidden layers of the colour MLP by the view (density
view-independent, fast path kept).

Defaults per signal (parameters = the mlp defaults + the grids):

| signal | mod_coord, grid | norm | parameters |
|---|---|---|---|
| image | xy, 32 x 32 per layer | layer | 38,915 + 3 x 2 x 1,024 = 45,059 |
| radiance | view, 10 x 3 per layer (trunk) | layer | 18,323 + 3 x 2 x 30 = 18,503 |
| sdf / occupancy | position, 3 planes of 32^2 per layer | none | 38,273 + 3 x 2 x 3 x 1,024 = 56,705 |

Norm choice: per-point LayerNorm is what makes CAM pay off on images (astronaut 256^2, 300 steps: CAM 24.0 dB,
CAM without norm 22.5, plain MLP 22.3) but it wrecks SDF regression (armadillo, 300 steps: IoU 0.38 for norm
alone against 0.88 for the plain MLP; CAM without norm 0.94), presumably because it removes the feature magnitude
that the distance's linear growth away from the surface needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfkit.errors import NfkitError
from nfkit.fields.base import Capabilities, register_field
from nfkit.fields.coordnet import check_choice, sample_planes, with_defaults
from nfkit.fields.encodings import sh_encode
from nfkit.fields.mlp import MLPCore, MLPField

MOD_DEFAULTS = {  # signal -> (mod_coord, mod_res, norm)
    "radiance": ("view", [10, 3], "layer"), "image": ("xy", [32, 32], "layer"), "sdf": ("position", [32], "none"),
    "occupancy": ("position", [32], "none"),
}


class CAMCore(MLPCore):
    """MLPCore whose hidden layers are normalised and modulated: mod = (gamma [N, L], beta [N, L]) or None."""

    def __init__(self, encoding: nn.Module, hidden: int, n_layers: int, norm: str):
        super().__init__(encoding, hidden, n_layers)
        self.norm = norm

    def modulate(self, i: int, h: torch.Tensor, mod) -> torch.Tensor:
        if self.norm == "layer":
            h = F.layer_norm(h, h.shape[-1:])
        if mod is None:
            return h
        gamma, beta = mod  # in h's dtype: under bfloat16 autocast the float32 grids would promote the whole layer
        return h * gamma[:, i: i + 1].to(h.dtype) + beta[:, i: i + 1].to(h.dtype)


def view_angles(d: torch.Tensor) -> torch.Tensor:
    """Unit directions d [N, 3] (world, +Z up) -> grid coordinates [N, 2] in [-1, 1]: (azimuth, elevation)."""
    x, y, z = d.unbind(-1)
    az = torch.atan2(y, x) / (2 * math.pi) + 0.5
    el = -(2 / math.pi) * torch.atan2(z, torch.sqrt(x * x + y * y))
    return torch.stack([az * 2 - 1, el], -1)


@register_field
class CAMField(MLPField):
    """NeRF-style MLP with coordinate-aware modulation (see the module docstring)."""

    family = "cam"
    grid_param_names = ("gamma", "beta")

    @dataclass
    class Config(MLPField.Config):
        mod_coord: str | None = None  # xy | view | position | none (None: per signal)
        mod_res: list | None = None  # grid size: [x, y] / [azimuth, elevation] / [plane side]
        mod_layers: str = "trunk"  # view only: trunk (upstream; density depends on d) | color (the colour MLP)
        norm: str | None = None  # layer | none (None: per signal)
        grid_lr_scale: float = 10.0  # 10x the MLP (net_lr_scale 1)

    def resolve_config(self, config):
        config = super().resolve_config(config)
        coord, res, norm = MOD_DEFAULTS[config.signal]
        config = with_defaults(config, {"norm": norm})
        if config.mod_coord is None:
            return with_defaults(config, {"mod_coord": coord, "mod_res": res})
        default_res = {"xy": [32, 32], "view": [10, 3], "position": [32], "none": []}.get(config.mod_coord, [])
        return with_defaults(config, {"mod_res": default_res})

    def _view_color(self) -> bool:
        return self.config.mod_coord == "view" and self.config.mod_layers == "color"

    def build_core(self, dim: int) -> nn.Module:
        c = self.config
        check_choice("mod_coord", c.mod_coord, ("xy", "view", "position", "none"))
        check_choice("mod_layers", c.mod_layers, ("trunk", "color"))
        check_choice("norm", c.norm, ("layer", "none"))
        if c.mod_coord == "xy" and dim != 2 or c.mod_coord == "view" and c.signal != "radiance":
            raise NfkitError(f"field option mod_coord={c.mod_coord!r} does not apply to signal {c.signal!r}")
        if self._view_color() and c.color_head != "mlp":
            raise NfkitError("field option mod_layers='color' needs color_head='mlp'")
        n, res = (c.color_layers if self._view_color() else c.n_layers), [int(r) for r in c.mod_res]
        if c.mod_coord in ("xy", "view"):  # one [L, H, W] grid: W along the first coordinate
            self.gamma = nn.Parameter(torch.ones(1, n, res[1], res[0]))
            self.beta = nn.Parameter(torch.zeros(1, n, res[1], res[0]))
        elif c.mod_coord == "position":  # tri-plane: planes xy, xz, yz; the three samples are summed
            self.gamma = nn.Parameter(torch.full((3, n, res[0], res[0]), 1.0 / 3.0))
            self.beta = nn.Parameter(torch.zeros(3, n, res[0], res[0]))
        return CAMCore(self.make_encoding(dim), c.hidden, c.n_layers, "none" if self._view_color() else c.norm)

    @property
    def capabilities(self) -> Capabilities:
        """With the trunk modulated by the view the density depends on d (see
        :mod:`nfkit.renderers.view_density`) and there is no geometry/colour split."""
        view = self.config.signal == "radiance" and self.config.mod_coord == "view" and not self._view_color()
        return Capabilities(geometry_split=self.has_fast_path(), view_dependent_density=view)

    def density_seen(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Radiance: sigma [N] at x [N, 3] seen along unit d [N, 3], without the colour head."""
        return self._geometry(x, d)[0]

    def has_fast_path(self) -> bool:
        return super().has_fast_path() and (self.config.mod_coord != "view" or self._view_color())

    def _grid_lookup(self, g: torch.Tensor):
        """2-D grids at coordinates g [N, 2] in [-1, 1] -> (gamma [N, L], beta [N, L])."""
        grid = g.to(self.gamma.dtype)[None, :, None, :]  # [1, N, 1, 2]
        gb = torch.cat([self.gamma, self.beta], 1)  # [1, 2L, H, W]: one interpolation for both
        out = F.grid_sample(gb, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, :, :, 0].T
        n = self.gamma.shape[1]
        return out[:, :n], out[:, n:]

    def modulation(self, u: torch.Tensor, d: torch.Tensor | None):
        """(gamma [N, L], beta [N, L]) for the trunk at each point (None: no trunk modulation)."""
        mc = self.config.mod_coord
        if mc == "none" or self._view_color():
            return None
        if mc == "view" and d is None:  # direction-free density query: the grid-mean modulation
            g, b = self.gamma.mean((0, 2, 3)), self.beta.mean((0, 2, 3))
            return g.expand(u.shape[0], -1), b.expand(u.shape[0], -1)
        if mc == "position":
            axes = ((0, 1), (0, 2), (1, 2))
            return (sample_planes(self.gamma, u, axes, True).sum(0),
                    sample_planes(self.beta, u, axes, True).sum(0))
        return self._grid_lookup(view_angles(d) if mc == "view" else u * 2 - 1)

    def _color(self, feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if not self._view_color():
            return super()._color(feats, d)
        h = torch.cat([sh_encode(d, self.config.sh_degree).to(feats.dtype), feats], -1)
        gamma, beta = self._grid_lookup(view_angles(d))
        lins = [m for m in self.color_net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(lins[:-1]):
            h = lin(h)
            if self.config.norm == "layer":
                h = F.layer_norm(h, h.shape[-1:])
            h = F.relu(h * gamma[:, i: i + 1].to(h.dtype) + beta[:, i: i + 1].to(h.dtype))
        return torch.sigmoid(lins[-1](h))
