"""Reading image files into float tensors, with an optional area-style downscale.

Every function returns straight (not premultiplied) RGB or RGBA, float32 in [0, 1], ``[H, W, C]`` with C in {3, 4}.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nfkit.errors import DatasetError


def read_image(path: Path, source: Path) -> torch.Tensor:
    """Reads one image file -> [H, W, C] float32 in [0, 1], C = 3 (RGB) or 4 (RGBA).

    uint8 / uint16 / other integer types are divided by their maximum; float images are kept as they are.
    Greyscale ([H, W] or [H, W, 1]) becomes RGB, grey + alpha ([H, W, 2]) becomes RGBA.
    ``source`` is the json that names the file (for error messages).
    """
    import imageio.v3 as iio

    if not path.is_file():
        raise DatasetError(f"{source}: image file {path} not found")
    try:
        with warnings.catch_warnings():  # imageio's fallback plugins warn about their own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            arr = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types (OSError, ValueError, plugin errors) for bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{source}: cannot read image {path} ({reason})") from e
    return _to_float_rgb(arr, path, source)


def _to_float_rgb(arr: np.ndarray, path: Path, source: Path) -> torch.Tensor:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DatasetError(
            f"{source}: image {path} has shape {arr.shape}; expected a single H x W image with 1-4 channels")
    if arr.dtype == np.bool_:
        img = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        img = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating):
        img = arr.astype(np.float32)
    else:
        raise DatasetError(f"{source}: image {path} has unsupported pixel type {arr.dtype}")
    img = torch.from_numpy(np.ascontiguousarray(img))
    c = img.shape[-1]
    if c == 1:
        img = img.expand(-1, -1, 3)
    elif c == 2:
        img = torch.cat([img[..., :1].expand(-1, -1, 3), img[..., 1:]], -1)
    return img.contiguous()


def resize_image(img: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[H, W, C] -> [height, width, C] area-style downscale (straight alpha handled by premultiplying).

    Integer factors use exact box averaging (``mode="area"``); other factors use antialiased bilinear.
    RGB is premultiplied by alpha before filtering and divided after, so transparent pixels' colour does
    not bleed into the result.
    """
    h0, w0, c = img.shape
    if (h0, w0) == (height, width):
        return img
    x = img.permute(2, 0, 1)[None]
    if c == 4:
        x = torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)
    if w0 % width == 0 and h0 % height == 0:
        y = F.interpolate(x, size=(height, width), mode="area")
    else:
        y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    if c == 4:
        a = y[:, 3:].clamp(0.0, 1.0)
        rgb = torch.where(a > 1e-8, y[:, :3] / a.clamp_min(1e-8), torch.zeros_like(y[:, :3]))
        y = torch.cat([rgb.clamp(0.0, 1.0), a], 1)
    return y[0].permute(1, 2, 0).contiguous()


def downscale_factor(width: int, height: int, max_side: int | None) -> float:
    """The factor ``max_side / max(width, height)`` when that side exceeds ``max_side``, else 1.0.

    The resized image is ``round(width * f) x round(height * f)`` (at least 1), as in :meth:`Cameras.scaled`.
    """
    if max_side is None or max(width, height) <= max_side:
        return 1.0
    return max_side / max(width, height)


def load_images(paths: list[Path], sources: list[Path], max_side: int | None = None) -> tuple[torch.Tensor, int, int, float]:
    """Reads same-sized images (``sources[i]``: the json naming ``paths[i]``), downscales them if their larger side exceeds ``max_side``, and stacks them.

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
        elif (w, h) != (w0, h0):
            raise DatasetError(
                f"{source}: image {p} is {w}x{h} but {paths[0]} is {w0}x{h0}; all images must have the same size")
        out.append(resize_image(img, size[0], size[1]))
    if any(i.shape[-1] == 4 for i in out):
        out = [i if i.shape[-1] == 4 else torch.cat([i, torch.ones_like(i[..., :1])], -1) for i in out]
    return torch.stack(out), w0, h0, factor
