"""The one image reader of nfkit: image files (or scikit-image samples) -> float tensors, and area-style resizing.

Rules, the same for every caller (dataset readers, ``nfkit fit-image``, captures):

* result: straight (not premultiplied) RGB or RGBA, float32 in [0, 1], ``[H, W, C]`` with C in {3, 4};
* unsigned/signed integer pixels are divided by their type's maximum, booleans become 0/1, float pixels are
  clipped to [0, 1] (non-finite values are an error);
* greyscale ([H, W] or [H, W, 1]) becomes RGB, grey + alpha ([H, W, 2]) becomes RGBA;
* an image must have at least :data:`MIN_SIDE` pixels on each side;
* downscaling (:func:`resize_image`) averages areas: exact box filter for integer factors, antialiased bilinear
  otherwise, premultiplying alpha so transparent pixels' colour does not bleed in.

Every problem raises :class:`nfkit.errors.DatasetError` (an :class:`~nfkit.errors.NfkitError`) with one line
naming the file (and the json that named it, when given).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nfkit.errors import DatasetError

MIN_SIDE = 2  # a 1-pixel-wide image has no neighbourhood (SSIM, finite differences): refused with one line
SKIMAGE_PREFIX = "skimage:"


def _where(path, source) -> str:
    return f"{source}: image {path}" if source is not None else f"{path}"


def read_image(path, source=None) -> torch.Tensor:
    """Reads one image file -> [H, W, C] float32 in [0, 1], C = 3 (RGB) or 4 (RGBA) (rules: module docstring).

    path: the image file.  source: the file that names it (a transforms json...), for error messages, or None.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{source}: image file {path} not found" if source is not None
                           else f"{path}: no such image file")
    try:
        with warnings.catch_warnings():  # imageio's fallback plugins warn about their own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            arr = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises many types (OSError, ValueError, plugin errors) for bad files
        reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise DatasetError(f"{_where(path, source)}: cannot read it as an image ({reason})") from None
    return image_from_array(arr, _where(path, source))


def image_from_array(arr: np.ndarray, where: str = "image") -> torch.Tensor:
    """A decoded image array [H, W], [H, W, 1..4] of any numeric type -> [H, W, 3|4] float32 in [0, 1]."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise DatasetError(f"{where}: has shape {arr.shape}; expected a single H x W image with 1-4 channels")
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise DatasetError(f"{where}: is {arr.shape[1]}x{arr.shape[0]} pixels; expected at least "
                           f"{MIN_SIDE}x{MIN_SIDE}")
    if arr.dtype == np.bool_:
        img = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        img = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DatasetError(f"{where}: has NaN or infinite pixel values")
        img = np.clip(arr.astype(np.float32), 0.0, 1.0)
    else:
        raise DatasetError(f"{where}: has unsupported pixel type {arr.dtype}")
    img = torch.from_numpy(np.ascontiguousarray(img))
    c = img.shape[-1]
    if c == 1:
        img = img.expand(-1, -1, 3)
    elif c == 2:
        img = torch.cat([img[..., :1].expand(-1, -1, 3), img[..., 1:]], -1)
    return img.clamp_min(0.0).contiguous()


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
    """The factor ``max_side / max(width, height)`` when that side exceeds ``max_side``, else 1.0 (``max_side``
    None or 0: keep the full resolution).  The resized image is ``round(width * f) x round(height * f)`` (at
    least 1), as in :meth:`nfkit.cameras.Cameras.scaled`."""
    if not max_side or max(width, height) <= max_side:
        return 1.0
    return max_side / max(width, height)


def downscaled(img: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """[H, W, C] -> the image resized by :func:`downscale_factor` (unchanged when it fits ``max_side``)."""
    h, w = img.shape[:2]
    f = downscale_factor(w, h, max_side)
    return img if f == 1.0 else resize_image(img, max(1, round(w * f)), max(1, round(h * f)))


def _skimage_sample(spec: str) -> np.ndarray:
    name = spec[len(SKIMAGE_PREFIX):]
    try:
        import skimage.data
    except ImportError:
        raise DatasetError(f"{spec}: needs scikit-image (pip install scikit-image)") from None
    fn = getattr(skimage.data, name, None)
    if fn is None or not callable(fn) or name.startswith("_"):
        raise DatasetError(f"{spec}: scikit-image has no sample image {name!r} (try astronaut, coffee, chelsea)")
    return np.asarray(fn())


def load_image(spec, max_side: int | None = 0, background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """An image as float32 [H, W, 3] in [0, 1]: an image file, or ``skimage:NAME`` (a photograph bundled with
    scikit-image, e.g. ``skimage:astronaut``; no network needed).

    Read by :func:`read_image`'s rules; alpha is composited over ``background`` (RGB in [0, 1]); ``max_side`` > 0
    downscales (:func:`downscaled`) so the larger side is at most that.
    """
    spec = str(spec)
    if spec.startswith(SKIMAGE_PREFIX):
        img = image_from_array(_skimage_sample(spec), spec)
    else:
        img = read_image(spec)
    img = downscaled(img, max_side)
    if img.shape[-1] == 4:
        bg = torch.as_tensor(background, dtype=img.dtype)
        img = img[..., :3] * img[..., 3:] + bg * (1.0 - img[..., 3:])
    return img.contiguous()
