"""The in-memory scene a dataset reader returns, and small helpers on it.

Conventions:

* Images are straight (not premultiplied) RGBA or RGB, float32 in ``[0, 1]``, ``[N, H, W, C]``.
* Cameras live in **normalised** scene coordinates (OpenGL camera axes, see :mod:`nfkit.cameras`).
* ``transform`` maps input (file) world coordinates to normalised ones: ``x_n = transform @ [x, 1]``.  Readers
  only ever produce a similarity ``x_n = s * (x - c)`` (no rotation), but :func:`unnormalize_points` inverts
  any affine ``transform``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nfkit.cameras import Cameras


@dataclass
class SceneData:
    """One split of a dataset, loaded.

    images: [N, H, W, C] float32 in [0, 1]; C = 4 (straight RGBA) when the files have alpha, else 3.
    cameras: :class:`Cameras` with c2w [N, 4, 4] in normalised coordinates (OpenGL), fx/fy/cx/cy [N] pixels
        for the images as returned (after any ``max_side`` downscale), dist [N, 5] (k1, k2, p1, p2, k3) or None.
    names: N image paths relative to the dataset root (POSIX separators).
    aabb: [2, 3] float32 (min, max) region of interest in normalised coordinates.
    transform: [4, 4] float64 similarity, input world coordinates -> normalised coordinates.
    scale: the similarity's scale ``s`` (normalised length = ``s`` * input length).
    source: path of the json file read (for a Blender ``split="all"``, the dataset directory).
    """

    images: torch.Tensor
    cameras: Cameras
    names: list[str]
    aabb: torch.Tensor
    transform: torch.Tensor
    scale: float
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]


def composite(images: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Straight-alpha RGBA over a background colour.

    images: [..., 4] RGBA (straight alpha) or [..., 3] RGB, which is returned unchanged.
    background: [3] (or anything broadcastable to [..., 3]) RGB in [0, 1].
    Returns [..., 3]: ``rgb * a + background * (1 - a)``.
    """
    c = images.shape[-1]
    if c == 3:
        return images
    if c != 4:
        raise ValueError(f"composite: expected [..., 3] or [..., 4] images, got shape {tuple(images.shape)}")
    bg = torch.as_tensor(background).to(device=images.device, dtype=images.dtype)
    rgb, alpha = images[..., :3], images[..., 3:4]
    return rgb * alpha + bg * (1.0 - alpha)


def unnormalize_points(points: torch.Tensor, data: SceneData) -> torch.Tensor:
    """Normalised scene coordinates [P, 3] -> input (file) world coordinates [P, 3], same dtype as ``points``.

    Inverts ``data.transform`` in float64, so large input coordinates keep their precision.
    """
    inv = torch.linalg.inv(data.transform.to(device=points.device, dtype=torch.float64))
    p = points.to(torch.float64)
    return (p @ inv[:3, :3].T + inv[:3, 3]).to(points.dtype)


def similarity(scale: float, centre) -> torch.Tensor:
    """[4, 4] float64 matrix of ``x -> scale * (x - centre)``; ``centre``: 3 numbers."""
    t = torch.eye(4, dtype=torch.float64)
    c = torch.as_tensor(centre, dtype=torch.float64).reshape(3)
    t[:3, :3] *= scale
    t[:3, 3] = -scale * c
    return t
