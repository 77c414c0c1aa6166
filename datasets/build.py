"""Turning validated frames into a :class:`SceneData` (shared by every transforms-json reader)."""
from __future__ import annotations

import numpy as np
import torch

from nfkit.errors import NfkitError
from nfkit.cameras import Cameras

from .images import load_images
from .scene import SceneData
from .transforms_json import FrameRef, distortion, intrinsics


def cube_aabb(half: float) -> torch.Tensor:
    """[2, 3] float32 axis-aligned cube ``[-half, half]^3``."""
    return torch.tensor([[-half] * 3, [half] * 3], dtype=torch.float32)


def check_max_side(max_side) -> None:
    """NfkitError unless ``max_side`` is None or an integer >= 0 (0 and None: full resolution)."""
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, (int, float))
                                 or int(max_side) != max_side or max_side < 0):
        raise NfkitError(f"max_side must be an integer >= 0 (0: full resolution), got {max_side!r}")


def build_scene(refs: list[FrameRef], c2w: np.ndarray, *, aabb: torch.Tensor, transform: torch.Tensor,
                scale: float, source: str, max_side: int | None) -> SceneData:
    """Loads the images of ``refs`` and assembles a SceneData.

    c2w: [len(refs), 4, 4] normalised camera-to-world (OpenGL).  Intrinsics come from each frame (see
    :func:`intrinsics`) and are rescaled like :meth:`Cameras.scaled` when ``max_side`` downscales the images.
    """
    check_max_side(max_side)
    images, width, height, factor = load_images([r.image for r in refs], [r.source for r in refs], max_side)
    k = torch.tensor([intrinsics(r, width, height) for r in refs], dtype=torch.float64)
    dist = torch.tensor([distortion(r) for r in refs], dtype=torch.float32)
    cams = Cameras(
        c2w=torch.as_tensor(c2w, dtype=torch.float32),
        fx=k[:, 0].float(), fy=k[:, 1].float(), cx=k[:, 2].float(), cy=k[:, 3].float(),
        width=width, height=height,
        dist=dist if bool((dist != 0).any()) else None,
    )
    if factor != 1.0:
        cams = cams.scaled(factor)
    assert (cams.height, cams.width) == tuple(images.shape[1:3])
    return SceneData(images=images, cameras=cams, names=[r.name for r in refs], aabb=aabb,
                     transform=transform, scale=float(scale), source=source)
