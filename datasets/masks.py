"""Per-image foreground masks: files beside the images, or a threshold on a dark background; applied as alpha.

* Mask files (:func:`mask_files`): a folder ``mask/`` or ``masks/`` beside the images' folder (IDR / DTU / NeuS
  layout: ``scan/image/000000.png`` with ``scan/mask/000.png``).  A mask belongs to the image with the same file
  stem; when the stems differ (IDR's DTU files) but the folder holds exactly as many images as there are images,
  they pair in sorted order.  Any image type; the first channel is the alpha (0 background, 1 foreground; values
  between are partial coverage, as after a downscale).
* Dark backgrounds (:func:`threshold_mask`): foreground = brightest channel above a threshold, then a small
  morphological opening, the largest connected component, and holes smaller than a fraction of the image filled
  (the gaps between a temple's columns stay background, dark specks on the object do not).
* :func:`with_alpha`: images [N, H, W, 3|4] and masks [N, H, W] -> straight RGBA whose alpha is the mask (times
  any alpha the files had), which ``nfkit fit`` trains as it trains RGBA renders (random background).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nfkit.errors import DatasetError

MASK_DIRS = ("mask", "masks")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".exr", ".webp")
DARK_THRESHOLD = 0.18  # brightest channel above this: foreground (Middlebury's black cloth sits below ~0.15)
SMALL_HOLE_FRACTION = 0.0013  # holes under this fraction of the image area are filled
OPENING_ITERATIONS = 2


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by extension), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def mask_files(images: list[Path], root: Path) -> list[Path] | None:
    """The mask file of every image in ``images`` (all in one folder), or None when there is no mask folder.

    The mask folder sits beside the images' folder, or inside the dataset folder ``root`` when the images lie
    directly in it.  Raises DatasetError naming the mask folder when it exists but some image has no mask.
    """
    if not images:
        return None
    parent = images[0].parent
    base = root if parent.resolve() == Path(root).resolve() else parent.parent
    folder = next((base / d for d in MASK_DIRS if (base / d).is_dir() and (base / d).resolve() != parent.resolve()),
                  None)
    if folder is None:
        return None
    found = list_images(folder)
    by_stem = {p.stem: p for p in found}
    if all(p.stem in by_stem for p in images):
        return [by_stem[p.stem] for p in images]
    all_images = list_images(parent)
    if len(found) == len(all_images):
        pos = {p: i for i, p in enumerate(all_images)}
        if all(p in pos for p in images):
            return [found[pos[p]] for p in images]
    missing = next(p for p in images if p.stem not in by_stem)
    raise DatasetError(f"{folder}: no mask for image {missing.name} (expected a file named {missing.stem}.* there, "
                       f"or as many masks as images)")


def threshold_mask(img: torch.Tensor, threshold: float = DARK_THRESHOLD) -> torch.Tensor:
    """img [H, W, 3|4] float in [0, 1] on a dark background -> [H, W] bool foreground (module docstring)."""
    from scipy import ndimage

    fg = img[..., :3].amax(-1).numpy() > threshold
    fg = ndimage.binary_opening(fg, structure=np.ones((3, 3), bool), iterations=OPENING_ITERATIONS)
    lab, n = ndimage.label(fg)
    if n == 0:
        return torch.from_numpy(fg)
    fg = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    holes, _ = ndimage.label(~fg)
    sizes = np.bincount(holes.ravel())
    small = sizes < SMALL_HOLE_FRACTION * fg.size
    small[0] = False
    return torch.from_numpy(fg | small[holes])


def with_alpha(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """images [N, H, W, 3|4] straight colour, masks [N, H, W] (bool or float in [0, 1]) -> [N, H, W, 4] RGBA."""
    if masks.shape != images.shape[:3]:
        raise DatasetError(f"masks of shape {tuple(masks.shape)} do not match images {tuple(images.shape[:3])}")
    a = masks.to(images.dtype)[..., None]
    if images.shape[-1] == 4:
        return torch.cat([images[..., :3], images[..., 3:] * a], -1)
    return torch.cat([images, a], -1)
