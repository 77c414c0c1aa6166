"""Stacking a dataset's images; reading and resizing one image is :mod:`nfkit.images` (the one reader, re-exported here).

Every function returns straight (not premultiplied) RGB or RGBA, float32 in [0, 1], ``[H, W, C]`` with C in {3, 4}.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nfkit.errors import DatasetError
from nfkit.images import downscale_factor, read_image, resize_image

from .notices import notice

__all__ = ["read_image", "resize_image", "downscale_factor", "load_images"]


def load_images(paths: list[Path], sources: list[Path], max_side: int | None = None,
                announce: bool = True) -> tuple[torch.Tensor, int, int, float]:
    """Reads same-sized images (``sources[i]``: the json naming ``paths[i]``), downscales them if their larger side exceeds ``max_side`` (0 or None: never; one notice when it does), and stacks them.

    Returns (images [N, H', W', C], file width W, file height H, factor) with ``factor`` from
    :func:`downscale_factor` and W' = max(1, round(W * factor)) (likewise H').  C = 4 if any file has alpha
    (files without alpha get alpha = 1), else 3.  Raises DatasetError naming the first file whose size differs
    from the first file's.
    """
    out, w0, h0, size, factor = [], None, None, None, 1.0
    for p, source in zip(paths, sources):
        img = read_image(p, source)
        h, w = img.shape[:2]
        if w0 is None:
            w0, h0 = w, h
            factor = downscale_factor(w, h, max_side)
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            if factor != 1.0 and announce:
                notice(f"note: images of {Path(p).parent} are {w}x{h}; using {size[0]}x{size[1]} (max side "
                       f"{max_side}; a max side of 0 keeps the full resolution)")
        elif (w, h) != (w0, h0):
            raise DatasetError(
                f"{source}: image {p} is {w}x{h} but {paths[0]} is {w0}x{h0}; all images must have the same size")
        out.append(resize_image(img, size[0], size[1]))
    if any(i.shape[-1] == 4 for i in out):
        out = [i if i.shape[-1] == 4 else torch.cat([i, torch.ones_like(i[..., :1])], -1) for i in out]
    return torch.stack(out), w0, h0, factor
