"""The one protocol every field family implements, and the family registry.

A field maps points in **normalised scene coordinates** (the dataset's normalised world, see
:class:`nfkit.datasets.SceneData`) and unit view directions to a density (or an SDF) and a colour:

* ``field.density(x)``: x [N, 3] -> sigma [N] (>= 0; zero outside ``field.aabb``);
* ``field(x, d)``: x [N, 3], d [N, 3] unit -> :class:`FieldOutput` (``density`` [N], ``rgb`` [N, 3] in [0, 1],
  optional ``features`` [N, K]);
* ``field.aabb``: [2, 3] buffer, the region the field models;
* ``field.kind`` (class constant, or fixed at build time from the config): ``"density"`` (radiance fields) or
  ``"sdf"`` (signed distance, negative inside) for 3-D renderable fields; the coordinate fits also declare
  ``"image"`` and ``"occupancy"``. Code that can draw only some kinds checks it with :func:`require_kind`;
* ``field.capabilities``: a frozen :class:`Capabilities`, declared per family as data (from the config where it
  depends on it), never discovered through ``hasattr``:

  - ``geometry_split``: the fast path ``field.geometry(x)`` -> (sigma [N], features [N, K]) and
    ``field.color(features, d)`` -> rgb [N, 3], so the inference renderer computes colour only where it matters
    without re-evaluating the geometry (without it both raise :class:`NfkitError`);
  - ``view_dependent_density``: the density depends on the view direction (CAM with its trunk modulated by the
    view). ``density(x)`` is then a direction-free stand-in; the renderers, the occupancy grid, mesh export and
    the viewer's density cache use the density seen along views instead (``field.density_seen(x, d)``;
    :mod:`nfkit.renderers.view_density`);
  - ``channels``: names of the extra per-point outputs in ``FieldOutput.channels`` (NEAT's attraction offsets,
    semantics, ...), composited along rays with the colour's weights.
* ``field.has_background``: whether an environment map is attached (unbounded captures); ``field.background(d)``:
  d [N, 3] unit ray directions -> rgb [N, 3], the colour a ray sees when it leaves the AABB unabsorbed (renderers
  composite it with the remaining transmittance), or ``None`` when the field has none; see
  :mod:`nfkit.fields.background` (attached as the submodule ``background_model``, saved with the field file).
* ``field.config``: a dataclass that, with ``family``, rebuilds the field (:func:`build_field`).

SDF fields (kind ``"sdf"``, :mod:`nfkit.fields.sdf`) answer ``field.sdf(x)`` -> [N] and
``field.sdf_and_gradient(x, create_graph)`` -> (sdf [N], grad [N, 3]) instead of ``density(x)``; their
``forward`` returns ``FieldOutput(density=None, rgb, features, sdf, gradient)`` (the gradient differentiable
when grad mode is on) and ``field.surface()`` gives the surface-to-density model the renderer uses (the
family ``neus`` learns it: submodule ``surface_model``, :class:`nfkit.fields.sdf.SurfaceDensity`).

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

from nfkit.errors import FieldFileError, NfkitError

RENDERABLE_KINDS = ("density", "sdf")


@dataclass(frozen=True)
class Capabilities:
    """What a field offers beyond the protocol's minimum (see the module docstring)."""

    geometry_split: bool = False  # geometry(x) -> (sigma, feats) and color(feats, d)
    view_dependent_density: bool = False  # the density depends on d (density_seen(x, d))
    channels: tuple[str, ...] = ()  # names of FieldOutput.channels


NO_CAPABILITIES = Capabilities()


@dataclass
class FieldOutput:
    """Per-point outputs. Radiance fields: ``density`` [N] >= 0. SDF fields: ``density`` None, ``sdf`` [N] and
    ``gradient`` [N, 3] (grad f, with graph when grad mode is on). ``channels``: name -> [N, C] extra outputs
    (those of ``field.capabilities.channels``)."""

    density: torch.Tensor | None  # [N]
    rgb: torch.Tensor  # [N, 3] in [0, 1]
    features: torch.Tensor | None = None  # [N, K]
    sdf: torch.Tensor | None = None  # [N]
    gradient: torch.Tensor | None = None  # [N, 3]
    channels: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


def capabilities_of(field) -> Capabilities:
    """``field.capabilities``; objects that are not :class:`Field` and declare none (plain modules with
    ``density``/``forward``, e.g. test doubles) have none: :data:`NO_CAPABILITIES`."""
    return getattr(field, "capabilities", NO_CAPABILITIES)


def kind_of(field) -> str:
    """``field.kind``; ``"density"`` for plain modules that declare none."""
    return getattr(field, "kind", "density")


def require_kind(field, kinds: tuple[str, ...], what: str) -> None:
    """Raise :class:`NfkitError` (one line) unless ``field``'s kind is one of ``kinds``; ``what`` names the code
    path, e.g. ``require_kind(field, ("density",), "the viewer's density cache")``."""
    kind = kind_of(field)
    if kind not in kinds:
        fam = getattr(field, "family", "") or type(field).__name__
        raise NfkitError(f"{what} needs a {' or '.join(kinds)} field, got a {kind} field ({fam})")


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
    capabilities: ClassVar[Capabilities] = NO_CAPABILITIES  # families whose config decides override as a property

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

    def geometry(self, x: torch.Tensor):
        """Fast path (``capabilities.geometry_split``): x [N, 3] -> (sigma [N], features [N, K])."""
        raise NfkitError(f"{self.family or type(self).__name__} field has no geometry/colour split")

    def color(self, feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Fast path (``capabilities.geometry_split``): features from :meth:`geometry`, d [N, 3] -> rgb [N, 3]."""
        raise NfkitError(f"{self.family or type(self).__name__} field has no geometry/colour split")

    def density_seen(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """sigma [N] at x seen along unit d [N, 3]; families with a view-dependent density override it without
        the colour head. Default: ``field(x, d).density``."""
        return self(x, d).density

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """SDF fields: signed distance [N] at x [N, 3] (world units, negative inside)."""
        require_kind(self, ("sdf",), "sdf(x)")
        raise NotImplementedError

    def sdf_and_gradient(self, x: torch.Tensor, create_graph: bool = False):
        """SDF fields: (sdf [N], grad f [N, 3]); differentiable w.r.t. the parameters when ``create_graph``."""
        require_kind(self, ("sdf",), "sdf_and_gradient(x)")
        raise NotImplementedError

    def surface(self):
        """SDF fields: the surface-to-density model (:class:`nfkit.fields.sdf.SurfaceDensity`) the renderer uses."""
        require_kind(self, ("sdf",), "surface()")
        raise NotImplementedError

    @property
    def has_background(self) -> bool:
        """Whether an environment map (submodule ``background_model``) is attached."""
        return "background_model" in self._modules

    def volume(self, x: torch.Tensor, d: torch.Tensor | None = None) -> VolumeFeature:
        """x [N, 3] world, d [N, 3] unit or None -> :class:`VolumeFeature` (default: from ``geometry()``, or from
        ``forward`` for fields without the fast path). Radiance fields only."""
        require_kind(self, ("density",), f"{self.family} volume features (nfkit convert)")
        if self.capabilities.geometry_split:
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
        if not self.capabilities.geometry_split:
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
