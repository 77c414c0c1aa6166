"""Where distillation samples come from: rays through random pixels of virtual cameras (drawn from a
:class:`~nfkit.renderers.camera_range.CameraPrior`: the training cameras' range, see
:mod:`nfkit.renderers.camera_range`), and points uniform in the scene bounds.
"""
from __future__ import annotations

import torch

from nfkit.renderers.cameras import Cameras, pixel_rays


def random_rays(cams: Cameras, n_rays: int, generator: torch.Generator | None = None):
    """``n_rays`` rays through random (continuous) pixel positions of random cameras of ``cams``.
    Returns rays_o, rays_d: [n_rays, 3] world, unit directions."""
    g = generator
    idx = torch.randint(0, len(cams), (n_rays,), generator=g)
    u = torch.rand(n_rays, generator=g) * cams.width - 0.5
    v = torch.rand(n_rays, generator=g) * cams.height - 0.5
    return pixel_rays(cams, idx, u, v)


def uniform_points(aabb: torch.Tensor, n: int, generator: torch.Generator | None = None):
    """``n`` points uniform in the AABB [2, 3] and random unit directions: ([n, 3], [n, 3])."""
    a = aabb.float().cpu()
    x = a[0] + torch.rand(n, 3, generator=generator) * (a[1] - a[0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    return x.to(aabb.device), d.to(aabb.device)
