"""A :class:`SceneData` from image files and camera arrays: the shared back end of the readers without a transforms
json (IDR / DTU ``cameras.npz``, LLFF ``poses_bounds.npy``, Middlebury ``*_par.txt``).

Conventions of the arrays handed in:

* ``c2w``: [N, 4, 4] input (file) world coordinates, **OpenGL** camera axes (readers convert with
  :func:`nfkit.cameras.opencv_to_opengl`); each must be rigid (:func:`nfkit.poses.is_rigid`).
* ``k``: [N, 4] (fx, fy, cx, cy) in pixels of the image files, nfkit's pixel-centre convention (centre of pixel
  ``u`` at ``u + 0.5``).  :func:`from_opencv_k` converts an OpenCV / IDR matrix K, whose pixel centres sit at
  integer coordinates (IDR and NEAT cast rays through ``u`` for pixel ``u``), by adding half a pixel.
* Splits: the nerfstudio reader's rule, every 8th image in file order held out (:func:`holdout_split`); sets of
  fewer than 24 images hold out every ``ceil(n / 3)``-th, so that 3 views are held out (16 views: 0, 6, 12).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nfkit.cameras import Cameras
from nfkit.errors import DatasetError, SplitNotFound
from nfkit.poses import is_rigid

from .build import check_max_side
from .images import load_images
from .masks import threshold_mask, with_alpha
from .nerfstudio import HOLDOUT_EVERY
from .scene import SceneData

SPLITS = ("train", "val", "test", "all")


def holdout_split(n: int, split: str, source) -> list[int]:
    """Indices of ``split`` among ``n`` images: every :data:`HOLDOUT_EVERY`-th (index % 8 == 0) is "test" / "val";
    below ``3 * HOLDOUT_EVERY`` images every ``ceil(n / 3)``-th, so that 3 views are held out."""
    if split not in SPLITS:
        raise DatasetError(f"{source}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if split == "all":
        return list(range(n))
    held = split != "train"
    every = HOLDOUT_EVERY if n >= 3 * HOLDOUT_EVERY else max(2, -(-n // 3))
    idx = [i for i in range(n) if (i % every == 0) == held]
    if not idx:
        raise SplitNotFound(f"{source}: split {split!r} has no images ({n} images, every {every}th held out)")
    return idx


def from_opencv_k(k: np.ndarray) -> np.ndarray:
    """[N, 3, 3] OpenCV intrinsics (pixel centres at integers) -> [N, 4] (fx, fy, cx + 0.5, cy + 0.5)."""
    k = np.asarray(k, dtype=np.float64)
    k = k / k[:, 2:3, 2:3]
    return np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2] + 0.5, k[:, 1, 2] + 0.5], -1)


def check_rigid(c2w: np.ndarray, source, names: list[str]) -> None:
    """DatasetError naming ``source`` and the first image whose pose is not rigid."""
    ok = is_rigid(c2w)
    if not ok.all():
        i = int(np.argmin(ok))
        raise DatasetError(f"{source}: camera of {names[i]} (index {i}) is not a rigid pose (rotation must be "
                           f"orthonormal with det +1)")


def normalised_c2w(c2w: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """c2w [N, 4, 4] under the similarity ``transform`` [4, 4] of scale ``scale`` (rotation part / scale kept)."""
    out = np.array(c2w, dtype=np.float64)
    rot = transform[:3, :3] / scale
    out[:, :3, :3] = rot @ out[:, :3, :3]
    out[:, :3, 3] = out[:, :3, 3] @ transform[:3, :3].T + transform[:3, 3]
    return out


def build_posed(paths: list[Path], k: np.ndarray, c2w: np.ndarray, *, split: str, source, root: Path,
                transform: np.ndarray, scale: float, aabb: torch.Tensor, max_side: int | None,
                masks=None) -> SceneData:
    """Loads the images of ``split`` and assembles a SceneData.

    paths: N image files; k: [N, 4] intrinsics of the files (module docstring); c2w: [N, 4, 4] input coordinates
    (OpenGL); transform: [4, 4] similarity input -> normalised of scale ``scale``; aabb: [2, 3] normalised.
    masks: None, a list of N mask files (alpha = their first channel), or ``"threshold"`` (a dark background:
    :func:`nfkit.datasets.masks.threshold_mask`).
    """
    check_max_side(max_side)
    names = [Path(p).relative_to(root).as_posix() if Path(p).is_relative_to(root) else str(p) for p in paths]
    check_rigid(c2w, source, names)
    idx = holdout_split(len(paths), split, source)
    images, width, height, factor = load_images([paths[i] for i in idx], [source] * len(idx), max_side)
    if masks == "threshold":
        images = with_alpha(images, torch.stack([threshold_mask(img) for img in images]))
    elif masks is not None:
        m, _, _, _ = load_images([masks[i] for i in idx], [source] * len(idx), max_side, announce=False)
        if m.shape[1:3] != images.shape[1:3]:
            raise DatasetError(f"{source}: mask {masks[idx[0]]} is not the size of image {paths[idx[0]]}")
        images = with_alpha(images, m[..., 0])
    kk = torch.as_tensor(np.asarray(k, dtype=np.float64)[idx])
    cams = Cameras(c2w=torch.as_tensor(normalised_c2w(c2w[idx], transform, scale), dtype=torch.float32),
                   fx=kk[:, 0].float(), fy=kk[:, 1].float(), cx=kk[:, 2].float(), cy=kk[:, 3].float(),
                   width=width, height=height)
    if factor != 1.0:
        cams = cams.scaled(factor)
    return SceneData(images=images, cameras=cams, names=[names[i] for i in idx], aabb=aabb,
                     transform=torch.as_tensor(transform, dtype=torch.float64), scale=float(scale),
                     source=str(source))
