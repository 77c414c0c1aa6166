"""Tri-plane hybrid field (after Cardace et al., ICLR 2024): family ``"triplane"``.

Core: u [N, D] in [0, 1]^D -> axis-aligned feature planes ``planes`` [P, C, R, R] sampled bilinearly (border
padding; a plane's width axis is its first coordinate) -> combined -> optional NeRF frequency encoding of u
concatenated (upstream uses 10 frequencies) -> ``n_layers`` x (Linear(hidden) -> ReLU) -> [N, hidden].

* D = 3 (radiance, sdf, occupancy): P = 3 planes over (x, y), (x, z), (y, z).
* D = 2 (image): P = 1 plane over (x, y) (the only axis-aligned plane of a 2-D domain).
* ``combine``: ``"sum"`` (upstream; C features) or ``"concat"`` (P x C features).

Upstream decodes with a per-shape SIREN; here the decoder is a ReLU MLP shared by the heads of
:mod:`nfkit.fields.coordnet`. Planes start N(0, ``init_std``^2).

Defaults per signal (parameters):

| signal | planes | decoder | parameters |
|---|---|---|---|
| radiance | 3 x 16 x 128^2, sum | 1 x 64 | 794,963 (planes 786,432; colour MLP 6,403) |
| image | 1 x 8 x 256^2 + 8 frequencies (34-d) | 2 x 64 | 531,395 (plane 524,288) |
| sdf / occupancy | 3 x 8 x 128^2, sum, + 4 frequencies (27-d) | 2 x 64 | 399,745 (planes 393,216) |
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nfkit.fields.base import register_field
from nfkit.fields.coordnet import CoordConfig, CoordField, FrequencyEncoding, check_choice, sample_planes, with_defaults

SIGNAL_DEFAULTS = {
    "radiance": {"resolution": 128, "channels": 16, "pe_freqs": 0, "hidden": 64, "n_layers": 1},
    "image": {"resolution": 256, "channels": 8, "pe_freqs": 8, "hidden": 64, "n_layers": 2},
    "sdf": {"resolution": 128, "channels": 8, "pe_freqs": 4, "hidden": 64, "n_layers": 2},
    "occupancy": {"resolution": 128, "channels": 8, "pe_freqs": 4, "hidden": 64, "n_layers": 2},
}
AXES = {2: ((0, 1),), 3: ((0, 1), (0, 2), (1, 2))}


class TriplaneCore(nn.Module):
    """u [N, D] in [0, 1]^D -> [N, hidden] (see the module docstring)."""

    def __init__(self, dim: int, resolution: int, channels: int, combine: str, pe_freqs: int, hidden: int,
                 n_layers: int, init_std: float):
        super().__init__()
        self.axes, self.combine = AXES[dim], combine
        self.planes = nn.Parameter(torch.randn(len(self.axes), channels, resolution, resolution) * init_std)
        self.pe = FrequencyEncoding(dim, pe_freqs) if pe_freqs > 0 else None
        n_in = channels * (len(self.axes) if combine == "concat" else 1) + (self.pe.out_dim if self.pe else 0)
        layers, d = [], n_in
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            d = hidden
        self.decoder = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, u: torch.Tensor, mod=None) -> torch.Tensor:
        s = sample_planes(self.planes, u.to(self.planes.dtype), self.axes)  # [P, N, C]
        f = s.sum(0) if self.combine == "sum" else s.permute(1, 0, 2).reshape(u.shape[0], -1)
        if self.pe is not None:
            f = torch.cat([f, self.pe(u).to(f.dtype)], -1)
        return self.decoder(f)


@register_field
class TriplaneField(CoordField):
    """Tri-plane features + small MLP decoder (see the module docstring)."""

    family = "triplane"
    grid_param_names = ("planes",)

    @dataclass
    class Config(CoordConfig):
        resolution: int | None = None  # plane side R (None: per signal)
        channels: int | None = None  # features per plane C
        combine: str = "sum"  # sum | concat
        pe_freqs: int | None = None  # frequency encoding of u concatenated to the plane features (0: none)
        hidden: int | None = None
        n_layers: int | None = None
        init_std: float = 0.1

    def resolve_config(self, config):
        return with_defaults(config, SIGNAL_DEFAULTS[config.signal])

    def build_core(self, dim: int) -> nn.Module:
        c = self.config
        check_choice("combine", c.combine, ("sum", "concat"))
        return TriplaneCore(dim, int(c.resolution), int(c.channels), c.combine, int(c.pe_freqs), int(c.hidden),
                            int(c.n_layers), c.init_std)
