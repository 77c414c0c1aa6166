"""Format detection: one entry point, :func:`load_dataset`, for every supported dataset layout."""
from __future__ import annotations

import os
from pathlib import Path

from nfkit.errors import DatasetError

from .blender import blender_split_of, is_blender_dir, load_blender
from .nerfstudio import load_nerfstudio
from .scene import SceneData


def load_dataset(path, split: str = "train", max_side: int | None = None) -> SceneData:
    """Loads one split of a dataset.

    path: a directory or a json file.  Detected formats, in order:

    1. Blender / NeRF-synthetic: a directory with ``transforms_{train,val,test}.json`` (or one of those files);
       ``split`` picks the file, "val" falls back to "test"; ``split="all"`` reads every file.
    2. nerfstudio / instant-ngp: a directory with ``transforms.json``, or any other json file;
       ``split`` in {"train", "val", "test", "all"} (see :mod:`nfkit.datasets.nerfstudio`).

    max_side: when the larger image side exceeds it, images are downscaled (area averaging) so that side is
    ``max_side``, and intrinsics are scaled to match.
    Raises :class:`~nfkit.errors.DatasetError` (one-line message naming the file) for anything malformed.
    """
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        if is_blender_dir(p):
            return load_blender(p, split, max_side)
        if (p / "transforms.json").is_file():
            return load_nerfstudio(p / "transforms.json", split, max_side)
        raise DatasetError(f"{p}: no transforms.json or transforms_{{train,val,test}}.json found (expected a "
                           f"nerfstudio / instant-ngp or Blender dataset directory)")
    if p.is_file():
        if blender_split_of(p) is not None:
            return load_blender(p, split, max_side)
        return load_nerfstudio(p, split, max_side)
    raise DatasetError(f"{p}: not found (expected a dataset directory or a transforms json file)")
