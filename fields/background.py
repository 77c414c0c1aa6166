"""Background models: the colour seen along a ray that leaves the field's AABB without being absorbed.

Real captures are unbounded (a table, a room behind the object); the fine field covers only the region of
interest (its AABB, from the sparse points).  What lies beyond is modelled by a small field over the ray
*direction* alone -- a learned environment map, as the "background" of nerfacto/instant-ngp -- composited with
the ray's remaining transmittance: ``rgb = sum_i w_i c_i + T_final * background(d)``.  A direction-only model
has no parallax, so it suits what is far compared to the camera motion; near surfaces belong inside the AABB.

:class:`EnvironmentMap`: a cascade of equirectangular textures (latitude-longitude, the world +Z axis is the
pole, as the "z up" of nerfstudio's COLMAP convention) of doubling resolution; the sampled (bilinear) logits of
every level are summed and squashed by a sigmoid.  The coarse levels fill directions no training ray saw with
the colour of their neighbourhood.  Initial colour: grey 0.5.

Attaching (:func:`attach_background`) makes the model a submodule ``background_model`` of the field, so its
parameters train with the field and its tensors are saved in the field file under ``field.background_model.*``;
the file's JSON gets ``"background": {"kind": "envmap", "config": {...}}`` (see :mod:`nfkit.fields.io`) and
loading re-attaches it.  Renderers ask ``field.background(d)`` (:meth:`nfkit.fields.Field.background`), which
is ``None`` when the field has no background model; :func:`ray_background` also works for wrappers.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfkit.errors import FieldFileError


class EnvironmentMap(nn.Module):
    """Direction -> RGB: summed bilinear lookups in ``levels`` lat-long textures, the finest ``height`` x
    ``2 * height`` texels, each coarser level half the size; sigmoid at the end."""

    kind = "envmap"

    @dataclass
    class Config:
        height: int = 64  # rows of the finest texture (latitude); columns (longitude) are twice this
        levels: int = 4

    def __init__(self, config: "EnvironmentMap.Config | None" = None):
        super().__init__()
        self.config = config or EnvironmentMap.Config()
        c = self.config
        if c.height < 2 or c.levels < 1 or c.height >> (c.levels - 1) < 2:
            raise ValueError(f"envmap: need height >= 2 * 2^(levels - 1), got height={c.height}, levels={c.levels}")
        self.textures = nn.ParameterList(
            nn.Parameter(torch.zeros(1, 3, c.height >> k, 2 * (c.height >> k))) for k in range(c.levels))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """d: [N, 3] directions (any length > 0, world axes) -> rgb [N, 3] in (0, 1), dtype of the textures."""
        d = d.float()
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        lon = torch.atan2(d[:, 1], d[:, 0]) / math.pi  # [-1, 1]
        lat = -torch.asin(d[:, 2].clamp(-1, 1)) / (0.5 * math.pi)  # [-1, 1], +Z (up) at the top row
        grid = torch.stack([lon, lat], -1)[None, None]  # [1, 1, N, 2]
        logit = 0
        for tex in self.textures:
            # Longitude wraps around: pad one column on each side so bilinear weights cross the seam.
            t = torch.cat([tex[..., -1:], tex, tex[..., :1]], -1)
            w = tex.shape[-1]
            g = torch.stack([grid[..., 0] * w / (w + 2), grid[..., 1]], -1)
            logit = logit + F.grid_sample(t, g, mode="bilinear", padding_mode="border", align_corners=False)
        return torch.sigmoid(logit[0, :, 0].T)

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)


BACKGROUNDS = {"envmap": EnvironmentMap}


def build_background(kind: str, config: dict | None = None) -> nn.Module:
    """A background model from its kind and config dict (as stored in a field file)."""
    if kind not in BACKGROUNDS:
        raise FieldFileError(f"unknown background kind {kind!r}; known: {', '.join(BACKGROUNDS)}")
    cls = BACKGROUNDS[kind]
    try:
        return cls(cls.Config(**(config or {})))
    except (TypeError, ValueError) as e:
        raise FieldFileError(f"background {kind!r}: bad config {config!r} ({e})") from None


def attach_background(field, model: nn.Module | None) -> None:
    """Makes ``model`` the field's background (submodule ``background_model``); None detaches it."""
    if model is None:
        if "background_model" in getattr(field, "_modules", {}):
            del field._modules["background_model"]
        return
    field.background_model = model.to(field.aabb.device)


def background_header(field) -> dict | None:
    """``{"kind", "config"}`` of the field's background model for the field file, or None."""
    model = getattr(field, "_modules", {}).get("background_model")
    if model is None:
        return None
    return {"kind": model.kind, "config": model.config_dict()}


def ray_background(field, rays_d: torch.Tensor, default=None):
    """The background colour for rays with directions ``rays_d`` [R, 3]: ``field.background(rays_d)`` [R, 3]
    when the field (or a wrapper forwarding ``background``) has a model, else ``default`` (e.g. a [3] colour
    or None)."""
    fn = getattr(field, "background", None)
    bg = fn(rays_d) if callable(fn) else None
    return default if bg is None else bg
