"""Density queries that respect fields whose density depends on the view direction.

Most families' density is a function of x alone (``field.density(x)``). A field with
``view_dependent_density = True`` (CAM with the trunk modulated by the view, :mod:`nfkit.fields.cam`) trains
with the density ``field(x, d).density`` of the ray it is seen along; its ``density(x)`` is only a
direction-free stand-in (the grid-mean modulation), which drifts from what any view sees as training goes on
(a wide CAM trunk after a 600 s fit on lego/100: test PSNR 25.9 dB rendered with ``density(x)``, 28.9 dB with
the views' own densities). Compositing, the occupancy grid and mesh export therefore ask these helpers instead.
"""
from __future__ import annotations

import torch


def view_dependent(field) -> bool:
    """True when ``field``'s density depends on the view direction (``field.view_dependent_density``)."""
    return bool(getattr(field, "view_dependent_density", False))


def density_along(field, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """sigma [N] at x [N, 3] seen along unit directions d [N, 3] (world, the rays' direction of travel): for a
    view-dependent field its ``density_seen(x, d)`` (no colour head) when it has one, else ``field(x, d).density``;
    otherwise ``field.density(x)``."""
    if not view_dependent(field):
        return field.density(x)
    seen = getattr(field, "density_seen", None)
    return seen(x, d) if seen is not None else field(x, d).density


def camera_density_fn(field, centres: torch.Tensor | None, generator: torch.Generator | None = None):
    """``density_fn`` (x [N, 3] -> sigma [N]) for :meth:`OccupancyGrid.update`: ``field.density`` unless the
    field's density depends on the view; then the density at each point as seen from a random one of the camera
    centres [C, 3] (world; the training cameras, whose views the field is fitted to), so a cell is kept when
    some of those views see matter there. ``centres`` None: the direction-free ``field.density``."""
    if not view_dependent(field) or centres is None or centres.numel() == 0:
        return field.density

    def fn(x: torch.Tensor) -> torch.Tensor:
        pick = torch.randint(0, centres.shape[0], (x.shape[0],), device=centres.device, generator=generator)
        d = torch.nn.functional.normalize(x - centres[pick].to(x.device), dim=-1)
        return density_along(field, x, d)

    return fn
