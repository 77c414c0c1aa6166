"""Whole-image rendering with the field's own background (unbounded captures), on top of the shared renderer.

:func:`render_image_bg` is :func:`nfkit.renderers.render_image` with one difference: when the field has a
background model (``field.background(d)`` returns colours, see :mod:`nfkit.fields.background`), each chunk of
rays gets its per-ray background ``[R, 3]``, composited with the remaining transmittance by
:func:`~nfkit.renderers.render.render_rays_inference`; otherwise the given ``background`` ([3] or None) is used,
exactly as ``render_image`` does.
"""
from __future__ import annotations

import torch

from nfkit.fields.background import ray_background
from nfkit.renderers.cameras import Cameras
from nfkit.renderers.occupancy import OccupancyGrid
from nfkit.renderers.render import RenderOptions, gather_image, image_rays_on, on_device, render_rays_inference


@torch.no_grad()
def render_image_bg(field, grid: OccupancyGrid, cams: Cameras, i: int, opts: RenderOptions, background=None,
                    chunk: int = 1 << 14, cache=None) -> dict:
    """Render camera ``i`` of ``cams`` -> dict ``rgb`` [H, W, 3], ``opacity`` [H, W], ``depth`` [H, W], on the CPU.

    background: fallback colour ([3] or None) for fields without a background model.  ``cache``: optional
    :class:`~nfkit.renderers.DensityCache` (viewer mode). Rays and background go to the grid's device (the field's).
    """
    rays_o, rays_d = image_rays_on(cams, i, grid.aabb.device)
    background = on_device(background, grid.aabb.device)
    outs = []
    for o, d in zip(rays_o.split(chunk), rays_d.split(chunk)):
        bg = ray_background(field, d, background)
        kw = {} if cache is None else {"cache": cache}
        outs.append(render_rays_inference(field, grid, o, d, opts, bg, **kw))
    return gather_image(outs, cams.height, cams.width)
