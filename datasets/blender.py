"""Blender / NeRF-synthetic datasets: ``transforms_{train,val,test}.json`` in one directory.

Each file names its split's frames (``file_path`` usually without extension, e.g. ``"./train/r_0"``; ``.png``
is appended).  Intrinsics: ``camera_angle_x`` (``fx = 0.5 * W / tan(0.5 * camera_angle_x)``), optional
``camera_angle_y`` (else ``fy = fx``), principal point at the image centre; nerfstudio-style keys (``fl_x``, ...)
are honoured too.  Coordinates are kept as they are (identity transform, scale 1); the region of interest is
the cube ``[-1.5, 1.5]^3`` that encloses the NeRF-synthetic objects.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from nfkit.errors import DatasetError, SplitNotFound

from .build import build_scene, cube_aabb
from .scene import SceneData
from .transforms_json import drop_missing, parse_frames, read_json

SPLITS = ("train", "val", "test")
AABB_HALF = 1.5
_SPLIT_FILE = re.compile(r"^transforms_(train|val|test)\.json$")


def is_blender_dir(root: Path) -> bool:
    """True when ``root`` holds at least one ``transforms_{train,val,test}.json``."""
    return any((root / f"transforms_{s}.json").is_file() for s in SPLITS)


def blender_split_of(path: Path) -> str | None:
    """'train' / 'val' / 'test' for a file named ``transforms_<split>.json``, else None."""
    m = _SPLIT_FILE.match(path.name)
    return m.group(1) if m else None


def split_files(root: Path, split: str) -> list[Path]:
    """The json files of ``split`` ("val" falls back to "test" when there is no val file; "all": every file)."""
    if split == "all":
        files = [root / f"transforms_{s}.json" for s in SPLITS if (root / f"transforms_{s}.json").is_file()]
        return files
    if split not in SPLITS:
        raise DatasetError(f"{root}: unknown split {split!r} (expected one of train, val, test, all)")
    path = root / f"transforms_{split}.json"
    if split == "val" and not path.is_file() and (root / "transforms_test.json").is_file():
        path = root / "transforms_test.json"
    if not path.is_file():
        raise SplitNotFound(f"{path}: file not found (Blender dataset without a '{split}' split)")
    return [path]


def load_blender(path: Path, split: str = "train", max_side: int | None = None,
                 allow_outside_paths: bool = False) -> SceneData:
    """Loads a Blender dataset.

    path: the dataset directory, or one ``transforms_<split>.json`` (then ``split`` must be that split or "all",
    and only that file is read).  Returns a SceneData in input coordinates (identity transform).
    """
    if path.is_file():
        own = blender_split_of(path)
        if split not in (own, "all"):
            raise DatasetError(f"{path}: this is the {own!r} split file but split={split!r} was requested; "
                               f"pass split={own!r}, or the dataset directory")
        files, root = [path], path.parent
    else:
        files, root = split_files(path, split), path
    refs = []
    for f in files:
        refs += parse_frames(f, read_json(f), root, allow_outside_paths)
    refs = drop_missing(refs)
    c2w = np.stack([r.c2w for r in refs])
    source = str(files[0]) if len(files) == 1 else str(root)
    return build_scene(refs, c2w, aabb=cube_aabb(AABB_HALF), transform=torch.eye(4, dtype=torch.float64),
                       scale=1.0, source=source, max_side=max_side)
