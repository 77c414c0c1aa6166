"""LLFF datasets: ``poses_bounds.npy`` beside an ``images/`` folder (the NeRF forward-facing scenes, and any
capture posed with LLFF's ``imgs2poses.py``).

``poses_bounds.npy``: [N, 17] float, one row per image in sorted file order: a 3x5 matrix flattened row-major --
columns 0-2 the camera-to-world rotation with LLFF's axes (down, right, backwards), column 3 the camera centre,
column 4 ``(height, width, focal)`` in pixels of the full-resolution images -- then the scene's near and far
depth for that view.  Axes become OpenGL (right, up, backwards) by ``[c1, -c0, c2]``.  When the files in
``images/`` are smaller than ``height x width`` the focal length is scaled to them; the principal point is the
image centre (in NeRF's pixel convention, see :func:`nfkit.datasets.posed_images.from_opencv_k`).

Normalisation as the nerfstudio reader (:func:`nfkit.datasets.normalize.normalize_poses`); region of interest:
the box of the views' frusta between their near and far depths (:func:`nfkit.datasets.normalize.points_aabb`,
which caps it).  Masks from ``mask/`` or ``masks/`` beside ``images/``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nfkit.errors import DatasetError

from .build import cube_aabb
from .images import read_image
from .masks import list_images, mask_files
from .normalize import normalize_poses, points_aabb
from .posed_images import build_posed
from .scene import SceneData, similarity

POSES_FILE = "poses_bounds.npy"
AABB_HALF = 1.5


def is_llff_dir(root: Path) -> bool:
    return (root / POSES_FILE).is_file()


def _frustum_points(c2w: np.ndarray, hwf: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Corners and centre of every view's image at its near and far depth -> [N * 10, 3] (input coordinates)."""
    h, w, f = hwf[:, 0], hwf[:, 1], hwf[:, 2]
    pts = []
    for sx, sy in ((0, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)):
        d_cam = np.stack([sx * 0.5 * w / f, sy * 0.5 * h / f, -np.ones_like(f)], -1)  # OpenGL, z = -1
        d = np.einsum("nij,nj->ni", c2w[:, :3, :3], d_cam)
        for depth in (bounds[:, 0], bounds[:, 1]):
            pts.append(c2w[:, :3, 3] + depth[:, None] * d)
    return np.concatenate(pts)


def load_llff(path: Path, split: str = "train", max_side: int | None = None) -> SceneData:
    """Loads an LLFF dataset; ``path``: the folder or its ``poses_bounds.npy``."""
    npy = path if path.is_file() else path / POSES_FILE
    root = npy.parent
    try:
        arr = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{npy}: not a readable .npy file ({str(e)[:100]})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0 or not np.isfinite(arr).all():
        raise DatasetError(f"{npy}: expected a finite [N, 17] array (3x5 pose + near, far per image), got "
                           f"shape {arr.shape}")
    poses, bounds = arr[:, :15].reshape(-1, 3, 5).astype(np.float64), arr[:, 15:].astype(np.float64)
    if not (images_dir := root / "images").is_dir():
        raise DatasetError(f"{npy}: no images/ folder beside it")
    paths = list_images(images_dir)
    if len(paths) != len(poses):
        raise DatasetError(f"{npy}: has {len(poses)} poses but {images_dir} holds {len(paths)} images")
    hwf = poses[:, :, 4]
    if (hwf <= 0).any() or (bounds <= 0).any():
        raise DatasetError(f"{npy}: height, width, focal and near/far bounds must be positive")
    c2w = np.tile(np.eye(4), (len(poses), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = poses[:, :, 1], -poses[:, :, 0], poses[:, :, 2]
    c2w[:, :3, 3] = poses[:, :, 3]
    first = read_image(paths[0], npy)
    fh, fw = first.shape[:2]
    sx, sy = fw / hwf[:, 1], fh / hwf[:, 0]
    k = np.stack([hwf[:, 2] * sx, hwf[:, 2] * sy, np.full_like(sx, 0.5 * fw + 0.5), np.full_like(sy, 0.5 * fh + 0.5)], -1)
    scale, centre = normalize_poses(c2w)
    pts = _frustum_points(c2w, hwf, bounds)
    box = points_aabb(np.stack([pts.min(0), pts.max(0)]), scale, centre)
    aabb = cube_aabb(AABB_HALF) if box is None else torch.tensor(box, dtype=torch.float32)
    return build_posed(paths, k, c2w, split=split, source=npy, root=root, transform=similarity(scale, centre).numpy(),
                       scale=scale, aabb=aabb, max_side=max_side,
                       masks=mask_files(paths, root))
