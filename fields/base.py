"""The one protocol every field family implements, and the family registry.

A field maps points in **normalised scene coordinates** (the dataset's normalised world, see
:class:`nfkit.datasets.SceneData`) and unit view directions to a density (or an SDF) and a colour:

* ``field.density(x)``: x [N, 3] -> sigma [N] (>= 0; zero outside ``field.aabb``);
* ``field(x, d)``: x [N, 3], d [N, 3] unit -> :class:`FieldOutput` (``density`` [N], ``rgb`` [N, 3] in [0, 1],
  optional ``features`` [N, K]);
* ``field.aabb``: [2, 3] buffer, the region the field models;
* ``field.kind``: ``"density"`` or ``"sdf"``;
* ``field.config``: a dataclass that, with ``family``, rebuilds the field (:func:`build_field`).

Optional fast path (used by the inference renderer when present): ``field.geometry(x)`` -> (sigma [N],
features [N, K]) and ``field.color(features, d)`` -> rgb [N, 3], so colour is computed only where it matters
without re-evaluating the geometry.

Optional ``field.view_dependent_density`` (bool, False when absent): the density depends on the view direction
(CAM with its trunk modulated by the view). ``density(x)`` is then a direction-free stand-in; the renderers, the
trainer's occupancy grid, mesh export and the viewer's density cache use the density seen along views instead (``field(x, d).density``, or
the optional ``field.density_seen(x, d)`` without the colour head; :mod:`nfkit.renderers.view_density`).

Optional background (unbounded captures): ``field.background(d)``: d [N, 3] unit ray directions -> rgb [N, 3],
the colour a ray sees when it leaves the AABB unabsorbed (renderers composite it with the remaining
transmittance), or ``None`` when the field has none; see :mod:`nfkit.fields.background` (attached as the
submodule ``background_model``, saved and loaded with the field file).

Volume features (what ``nfkit convert`` distils, PVD's common interface; every radiance family has them):
``field.volume(x, d=None)`` -> :class:`VolumeFeature` (``log_sigma`` [N]: the raw log-density, sigma =
exp(log_sigma) inside the AABB, unclamped; ``geo`` [N, K]: the geometry features the colour head reads) and
``field.volume_color(vf, d)`` -> rgb [N, 3], the colour head on those features. Distillation compares
``log_sigma`` clamped to :data:`SIGMA_CLIP` ([-2, 7], log space, as PVD) and ``geo`` when both fields have the
same K (:data:`VOLUME_GEO` = 15 for every family with an MLP colour head: hashgrid, and mlp/cam/rbf/triplane with
``color_head="mlp"``, which ``nfkit convert`` uses for every student). The default below is built from
``geometry()``/``color()`` (``log_sigma`` = log of the density, ``geo`` = the fast path's features); families
override it where the raw value is at hand. ``d`` matters only for fields whose density depends on the view (CAM
with trunk modulation).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from nfkit.errors import FieldFileError


@dataclass
class FieldOutput:
    density: torch.Tensor  # [N] (or the SDF for kind == "sdf")
    rgb: torch.Tensor  # [N, 3] in [0, 1]
    features: torch.Tensor | None = None  # [N, K]


SIGMA_CLIP = (-2.0, 7.0)  # log-density range compared by distillation (PVD's sigma_clip_min / max)
VOLUME_GEO = 15  # geometry features of the common colour head (MLP over [SH_4(d), 15 features])
LOG_SIGMA_OUTSIDE = -30.0  # log_sigma reported outside the AABB (sigma = 0 there)


@dataclass
class VolumeFeature:
    """Per-point volume feature. log_sigma [N] (raw, unclamped; sigma = exp(log_sigma) inside the AABB and
    :data:`LOG_SIGMA_OUTSIDE` outside); geo [N, K] geometry features; head: what the family's own colour head
    reads (defaults to ``geo``; the hash grid's head also reads the raw density)."""

    log_sigma: torch.Tensor
    geo: torch.Tensor
    head: torch.Tensor | None = None


class Field(nn.Module):
    """Base class of all field families (see the module docstring for the protocol)."""

    family: ClassVar[str] = ""
    kind: ClassVar[str] = "density"

    def __init__(self, config, aabb: torch.Tensor):
        super().__init__()
        self.config = config
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World [N, 3] -> [0, 1]^3 inside the AABB."""
        return (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])

    def inside(self, x01: torch.Tensor) -> torch.Tensor:
        return ((x01 >= 0) & (x01 <= 1)).all(-1)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> FieldOutput:
        raise NotImplementedError

    def volume(self, x: torch.Tensor, d: torch.Tensor | None = None) -> VolumeFeature:
        """x [N, 3] world, d [N, 3] unit or None -> :class:`VolumeFeature` (default: from ``geometry()``, or from
        ``forward`` for fields without the fast path)."""
        if hasattr(self, "geometry"):
            sigma, feats = self.geometry(x)
        else:
            if d is None:
                d = torch.zeros_like(x).index_fill_(1, torch.tensor([2], device=x.device), 1.0)
            out = self(x, d)
            sigma, feats = out.density, out.features
            if feats is None:
                feats = torch.zeros(x.shape[0], 0, device=x.device)
        log_sigma = torch.log(sigma.clamp_min(1e-13)).clamp_min(LOG_SIGMA_OUTSIDE)
        return VolumeFeature(log_sigma, feats)

    def volume_color(self, vf: VolumeFeature, d: torch.Tensor) -> torch.Tensor:
        """The colour head on a :class:`VolumeFeature` from :meth:`volume`: rgb [N, 3] in [0, 1]."""
        if not hasattr(self, "color"):
            raise NotImplementedError(f"{self.family}: no colour head on volume features")
        return self.color(vf.head if vf.head is not None else vf.geo, d)

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def background(self, d: torch.Tensor) -> torch.Tensor | None:
        """Background colour [N, 3] along unit directions d [N, 3], or None without a background model."""
        model = self._modules.get("background_model")
        return None if model is None else model(d)


_REGISTRY: dict[str, tuple[type, type]] = {}


def register_field(cls: type) -> type:
    """Class decorator: registers ``cls`` under ``cls.family`` with its config class ``cls.Config``."""
    _REGISTRY[cls.family] = (cls, cls.Config)
    return cls


def families() -> list[str]:
    return sorted(_REGISTRY)


def build_field(family: str, config: dict | None = None, aabb=None) -> Field:
    """Rebuild a field from its family name and config dict (unknown keys are an error)."""
    if family not in _REGISTRY:
        raise FieldFileError(f"unknown field family {family!r}; known: {', '.join(families())}")
    cls, cfg_cls = _REGISTRY[family]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    config = dict(config or {})
    bad = set(config) - names
    if bad:
        raise FieldFileError(f"field family {family!r} has no config option(s) {sorted(bad)}")
    cfg = cfg_cls(**config)
    if aabb is None:
        aabb = torch.tensor([[-1.5] * 3, [1.5] * 3])
    return cls(cfg, aabb)


def trunc_exp_activation(raw: torch.Tensor) -> torch.Tensor:
    """exp with the argument clamped at 15 so early training cannot overflow."""
    return torch.exp(raw.clamp(max=15.0))


DensityFn = Callable[[torch.Tensor], torch.Tensor]
