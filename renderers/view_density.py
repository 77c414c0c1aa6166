"""Density queries that respect fields whose density depends on the view direction.

Most families' density is a function of x alone (``field.density(x)``). A field whose capabilities declare
``view_dependent_density`` (CAM with the trunk modulated by the view, :mod:`nfkit.fields.cam`) trains
with the density ``field(x, d).density`` of the ray it is seen along; its ``density(x)`` is only a
direction-free stand-in (the grid-mean modulation), which drifts from what any view sees as training goes on
(a wide CAM trunk after a 600 s fit on lego/100: test PSNR 25.9 dB rendered with ``density(x)``, 28.9 dB with
the views' own densities). Compositing and the occupancy grid therefore ask these helpers instead; mesh export and
the viewer's density cache, which need one density per point, take the mean over a few cameras.
"""
from __future__ import annotations

import torch

from nfkit.fields.base import capabilities_of, kind_of, require_kind


def view_dependent(field) -> bool:
    """True when ``field``'s density depends on the view direction (``capabilities.view_dependent_density``)."""
    return capabilities_of(field).view_dependent_density


def density_along(field, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """sigma [N] at x [N, 3] seen along unit directions d [N, 3] (world, the rays' direction of travel): for a
    view-dependent field its ``density_seen(x, d)`` (no colour head where the family offers that, else
    ``field(x, d).density``); otherwise ``field.density(x)``."""
    if not view_dependent(field):
        return field.density(x)
    return field.density_seen(x, d)


def occupancy_density_fn(field, cam_centres: torch.Tensor | None = None, resolution: int = 64):
    """x [N, 3] -> the density-like values [N] the occupancy grid is updated from, for any renderable kind: SDF
    fields a density stand-in from |sdf| and the current NeuS inv_s / VolSDF beta
    (:func:`~nfkit.renderers.sdf.sdf_occupancy_fn`; ``resolution``: the grid's, so that a cell the surface crosses
    stays occupied); density fields :func:`camera_density_fn` (the density seen
    from a random one of the camera centres [C, 3] when it depends on the view, else ``field.density``)."""
    if kind_of(field) == "sdf":
        from nfkit.renderers.sdf import sdf_occupancy_fn

        return sdf_occupancy_fn(field, resolution)
    require_kind(field, ("density",), "the occupancy grid")
    return camera_density_fn(field, cam_centres)


def camera_density_fn(field, centres: torch.Tensor | None):
    """``density_fn`` (x [N, 3] -> sigma [N]) for :meth:`OccupancyGrid.update`: ``field.density`` unless the
    field's density depends on the view; then the density at each point as seen from a random one of the camera
    centres [C, 3] (world; the training cameras, whose views the field is fitted to), so a cell is kept when
    some of those views see matter there. ``centres`` None: the direction-free ``field.density``."""
    if not view_dependent(field) or centres is None or centres.numel() == 0:
        return field.density

    def fn(x: torch.Tensor) -> torch.Tensor:
        pick = torch.randint(0, centres.shape[0], (x.shape[0],), device=centres.device)
        d = torch.nn.functional.normalize(x - centres[pick].to(x.device), dim=-1)
        return density_along(field, x, d)

    return fn


def mean_view_density(field, centres: torch.Tensor | None = None, n_views: int = 8):
    """x [N, 3] -> sigma [N], one direction-free density for uses that need one (mesh export, the viewer's density
    cache): ``field.density`` unless the field's density depends on the view; then, given camera centres [C, 3]
    (world), the mean of the densities seen from ``n_views`` of them spread evenly over the list. On lego/100 the
    default cam (180 s) renders at 26.66 dB with this mean over 8 training cameras, 26.78 dB with each ray's own
    density and 22.89 dB with its ``density(x)`` stand-in. ``centres`` None: ``field.density``."""
    if not view_dependent(field) or centres is None or len(centres) == 0:
        return field.density
    pick = torch.linspace(0, len(centres) - 1, min(n_views, len(centres))).round().long()
    cs = centres[pick].to(field.aabb.device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return sum(density_along(field, x, torch.nn.functional.normalize(x - c, dim=-1)) for c in cs) / len(cs)

    return fn


def stored_view_centres(field, meta: dict, where: str, n: int = 16):
    """Centres [n, 3] (world) of virtual cameras in the camera range stored in the field file whose header is
    ``meta`` (``where`` names it for errors; see :func:`~nfkit.renderers.camera_range.field_prior`) when
    ``field``'s density depends on the view, else None. For :func:`mean_view_density` when no training cameras
    are at hand (the viewer, ``nfkit convert`` without ``--data``)."""
    if not view_dependent(field):
        return None
    from nfkit.renderers.camera_range import field_prior, virtual_cameras

    prior, _ = field_prior(field.aabb.cpu(), meta, str(where))
    return virtual_cameras(prior, n, 64, torch.Generator().manual_seed(0)).c2w[:, :3, 3]
