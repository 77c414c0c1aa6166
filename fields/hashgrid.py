"""Hash-grid radiance field (instant-ngp style): hash encoding -> density MLP -> colour MLP with SH directions."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nfkit.fields.base import (LOG_SIGMA_OUTSIDE, Capabilities, Field, FieldOutput, VolumeFeature, register_field,
                               trunc_exp_activation)
from nfkit.fields.encodings import HashEncoding, HashGridConfig, sh_encode


def mlp(n_in: int, hidden: int, n_layers: int, n_out: int) -> nn.Sequential:
    """``n_layers`` hidden layers of width ``hidden`` with ReLU, then a linear output layer."""
    layers, d = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


@register_field
class HashGridField(Field):
    """Density: MLP(hash(x)) -> [raw density, 15 geometry features]; colour: MLP(SH(d), geometry features)."""

    family = "hashgrid"
    capabilities = Capabilities(geometry_split=True)

    @dataclass
    class Config:
        n_levels: int = 16
        n_features_per_level: int = 2
        log2_hashmap_size: int = 19
        base_resolution: int = 16
        max_resolution: int = 2048
        hidden: int = 64
        geo_features: int = 15
        density_layers: int = 1
        color_layers: int = 2
        sh_degree: int = 4
        backend: str = "auto"  # auto | cpp | torch | tcnn

    def __init__(self, config: "HashGridField.Config", aabb):
        super().__init__(config, aabb)
        c = config
        pls = (c.max_resolution / c.base_resolution) ** (1.0 / max(1, c.n_levels - 1))
        self.encoding = HashEncoding(
            HashGridConfig(c.n_levels, c.n_features_per_level, c.log2_hashmap_size, c.base_resolution, pls), c.backend)
        self.density_net = mlp(self.encoding.out_dim, c.hidden, c.density_layers, 1 + c.geo_features)
        self.color_net = mlp(c.sh_degree**2 + 1 + c.geo_features, c.hidden, c.color_layers, 3)

    def _geometry(self, x: torch.Tensor):
        x01 = self.normalize(x)
        inside = self.inside(x01)
        h = self.density_net(self.encoding(x01.clamp(0, 1)))
        sigma = trunc_exp_activation(h[:, 0] - 1.0) * inside
        return sigma, h

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._geometry(x)[0]

    def geometry(self, x: torch.Tensor):
        """Optional fast path of the protocol: (sigma [N], features [N, K]) to hand to :meth:`color` later."""
        return self._geometry(x)

    def color(self, feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """feats from :meth:`geometry`, d: [N, 3] unit -> rgb [N, 3]."""
        sh = sh_encode(d, self.config.sh_degree).to(feats.dtype)
        return torch.sigmoid(self.color_net(torch.cat([sh, feats], -1)))

    def volume(self, x: torch.Tensor, d: torch.Tensor | None = None) -> VolumeFeature:
        """PVD volume feature (see :mod:`nfkit.fields.base`): log_sigma = raw - 1 (the argument of exp),
        geo = the 15 geometry features; the colour head reads [raw, geo] (``head``)."""
        x01 = self.normalize(x)
        h = self.density_net(self.encoding(x01.clamp(0, 1)))
        log_sigma = torch.where(self.inside(x01), h[:, 0] - 1.0, torch.full_like(h[:, 0], LOG_SIGMA_OUTSIDE))
        return VolumeFeature(log_sigma, h[:, 1:], h)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> FieldOutput:
        sigma, h = self._geometry(x)
        return FieldOutput(sigma, self.color(h, d), h[:, 1:])
