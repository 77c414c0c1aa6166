"""Format detection: one entry point, :func:`load_dataset`, for every supported dataset layout."""
from __future__ import annotations

import os
from pathlib import Path

from nfkit.errors import DatasetError

from .blender import blender_split_of, is_blender_dir, load_blender
from .idr import CAMERAS_FILE, is_idr_dir, load_idr
from .llff import POSES_FILE, is_llff_dir, load_llff
from .middlebury import PAR_SUFFIX, load_middlebury, par_file
from .nerfstudio import load_nerfstudio
from .scene import SceneData

DEFAULT_MAX_SIDE = 800  # larger images are downscaled for training by default (nerfstudio does the same)
FORMATS = ("transforms_{train,val,test}.json (Blender)", "transforms.json (nerfstudio / instant-ngp)",
           f"{CAMERAS_FILE} (IDR / DTU / NEAT)", f"{POSES_FILE} (LLFF)", f"*{PAR_SUFFIX} (Middlebury)")


def load_dataset(path, split: str = "train", max_side: int | None = DEFAULT_MAX_SIDE,
                 allow_outside_paths: bool = False) -> SceneData:
    """Loads one split of a dataset.

    path: a directory or a dataset file.  Detected formats, in order:

    1. Blender / NeRF-synthetic: a directory with ``transforms_{train,val,test}.json`` (or one of those files);
       ``split`` picks the file, "val" falls back to "test"; ``split="all"`` reads every file.
    2. nerfstudio / instant-ngp: a directory with ``transforms.json``, or any other json file;
       ``split`` in {"train", "val", "test", "all"} (see :mod:`nfkit.datasets.nerfstudio`).
    3. IDR / DTU / NEAT: ``cameras.npz`` beside ``image/`` or ``images/`` (:mod:`nfkit.datasets.idr`).
    4. LLFF: ``poses_bounds.npy`` beside ``images/`` (:mod:`nfkit.datasets.llff`).
    5. Middlebury multi-view stereo: one ``*_par.txt`` beside the images (:mod:`nfkit.datasets.middlebury`).

    Formats 3-5 split as the nerfstudio reader without file lists (every 8th image held out) and take per-image
    masks from a ``mask/`` folder beside the images as alpha (:mod:`nfkit.datasets.masks`).

    max_side: when the larger image side exceeds it, images are downscaled (area averaging) so that side is
    ``max_side``, intrinsics are scaled to match, and one notice says so; 0 or None keeps the full resolution.
    allow_outside_paths: accept transforms-json image paths that are absolute or climb out of the dataset folder
    with ``..`` (refused by default).
    Raises :class:`~nfkit.errors.DatasetError` (one-line message naming the file) for anything malformed.
    """
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        if is_blender_dir(p):
            return load_blender(p, split, max_side, allow_outside_paths)
        if (p / "transforms.json").is_file():
            return load_nerfstudio(p / "transforms.json", split, max_side, allow_outside_paths)
        if is_idr_dir(p):
            return load_idr(p, split, max_side)
        if is_llff_dir(p):
            return load_llff(p, split, max_side)
        if par_file(p) is not None:
            return load_middlebury(p, split, max_side)
        raise DatasetError(f"{p}: no dataset found (expected one of: {'; '.join(FORMATS)})")
    if p.is_file():
        if blender_split_of(p) is not None:
            return load_blender(p, split, max_side, allow_outside_paths)
        if p.name == CAMERAS_FILE:
            return load_idr(p, split, max_side)
        if p.name == POSES_FILE:
            return load_llff(p, split, max_side)
        if p.name.endswith(PAR_SUFFIX):
            return load_middlebury(p, split, max_side)
        return load_nerfstudio(p, split, max_side, allow_outside_paths)
    raise DatasetError(f"{p}: not found (expected a dataset directory or a transforms json file)")
