"""Hash-grid coordinate network for the image and shape signals: family ``"hashgrid-coord"``.

The radiance family ``"hashgrid"`` (:mod:`nfkit.fields.hashgrid`) stays as it is; this family puts the same
multiresolution hash encoding (:class:`~nfkit.fields.encodings.HashEncoding`, tiny-cuda-nn layout, C++ kernels on
CPU) in front of a small ReLU MLP as a :class:`~nfkit.fields.coordnet.CoordField` core, so the heads of
every signal apply (``nfkit fit-image/fit-sdf --field hashgrid`` build it). Core: u [N, D] in [0, 1]^D (D = 2 is
lifted to 3-D at z = 0.5) -> hash encoding [N, n_levels * F] -> ``n_layers`` x (Linear(hidden) -> ReLU).

Defaults per signal (parameters, with hidden 64 x 2):

| signal | levels x features, table, resolutions | parameters |
|---|---|---|
| image | 16 x 2, 2^16, 16 -> 512 | 1,706,739 |
| sdf / occupancy | 16 x 2, 2^17, 16 -> 512 | 3,155,185 |
| radiance | 16 x 2, 2^19, 16 -> 2048 | 12,209,955 |
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nfkit.fields.base import register_field
from nfkit.fields.coordnet import CoordConfig, CoordField, with_defaults
from nfkit.fields.encodings import HashEncoding, HashGridConfig

SIGNAL_DEFAULTS = {
    "image": {"log2_hashmap_size": 16, "max_resolution": 512},
    "sdf": {"log2_hashmap_size": 17, "max_resolution": 512},
    "occupancy": {"log2_hashmap_size": 17, "max_resolution": 512},
    "radiance": {"log2_hashmap_size": 19, "max_resolution": 2048},
}


class HashCore(nn.Module):
    """u [N, D] in [0, 1]^D -> [N, hidden] (see the module docstring)."""

    def __init__(self, dim: int, enc_cfg: HashGridConfig, hidden: int, n_layers: int, backend: str):
        super().__init__()
        self.dim = dim
        self.encoding = HashEncoding(enc_cfg, backend)
        layers, d = [], self.encoding.out_dim
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
            d = hidden
        self.decoder = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, u: torch.Tensor, mod=None) -> torch.Tensor:
        if self.dim == 2:
            u = torch.cat([u, torch.full_like(u[:, :1], 0.5)], -1)
        return self.decoder(self.encoding(u.float().contiguous()))


@register_field
class HashCoordField(CoordField):
    """Hash encoding + small MLP as a coordinate core (see the module docstring)."""

    family = "hashgrid-coord"
    grid_param_names = ("encoding",)

    @dataclass
    class Config(CoordConfig):
        n_levels: int = 16
        n_features_per_level: int = 2
        log2_hashmap_size: int | None = None  # None: per signal
        base_resolution: int = 16
        max_resolution: int | None = None
        hidden: int = 64
        n_layers: int = 2
        backend: str = "auto"  # auto | cpp | torch | tcnn

    def resolve_config(self, config):
        return with_defaults(config, SIGNAL_DEFAULTS[config.signal])

    def build_core(self, dim: int) -> nn.Module:
        c = self.config
        pls = (c.max_resolution / c.base_resolution) ** (1.0 / max(1, c.n_levels - 1))
        enc = HashGridConfig(c.n_levels, c.n_features_per_level, c.log2_hashmap_size, c.base_resolution, pls)
        return HashCore(dim, enc, c.hidden, c.n_layers, c.backend)
