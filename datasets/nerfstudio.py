"""nerfstudio / instant-ngp datasets: one ``transforms.json`` for all images.

Splits: when the json lists ``train_filenames`` / ``val_filenames`` / ``test_filenames`` (nerfstudio's
convention; entries compared with ``file_path`` after normalising ``./`` prefixes) those lists decide, "val" and
"test" standing in for each other when only one is given.  Otherwise every 8th frame in file order
(``index % 8 == 0``) is held out as "test" (= "val") and the rest are "train".  ``split="all"``: every frame.

Normalisation, computed from *all* frames so every split shares it:

* json with ``aabb_scale`` (instant-ngp: already centred and scaled): input coordinates kept, region of
  interest ``1.5 * aabb_scale * [-1, 1]^3``;
* otherwise the similarity of :func:`normalize_poses` (centre on the optical axes' closest point, mean camera
  distance 4), region of interest ``[-1.5, 1.5]^3`` -- or, when the json has ``nfkit_points_bounds`` (written by
  :func:`nfkit.datasets.colmap.colmap_to_transforms`: the sparse points' robust box), that box, normalised and
  grown a little (:func:`points_aabb`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from nfkit.errors import DatasetError, SplitNotFound

from .build import build_scene, cube_aabb
from .normalize import apply_similarity, normalize_poses, points_aabb
from .scene import SceneData, similarity
from .transforms_json import FrameRef, drop_missing, parse_frames, read_json

HOLDOUT_EVERY = 8
AABB_HALF = 1.5
SPLITS = ("train", "val", "test", "all")


def _norm_name(p: str) -> str:
    return Path(os.path.normpath(p)).as_posix()


def select_split(path: Path, meta: dict, refs: list[FrameRef], split: str) -> list[int]:
    """Indices into ``refs`` of the frames of ``split`` (see the module docstring for the rules)."""
    if split not in SPLITS:
        raise DatasetError(f"{path}: unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    n = len(refs)
    if split == "all":
        return list(range(n))
    lists = {s: meta[f"{s}_filenames"] for s in ("train", "val", "test") if f"{s}_filenames" in meta}
    if lists:
        key = split if split in lists else {"val": "test", "test": "val"}.get(split)
        if key not in lists:
            raise DatasetError(f"{path}: has {', '.join(k + '_filenames' for k in lists)} but no "
                               f"{split}_filenames")
        if not isinstance(lists[key], list) or not all(isinstance(x, str) for x in lists[key]):
            raise DatasetError(f"{path}: {key}_filenames must be a list of strings")
        wanted = {_norm_name(x) for x in lists[key]}
        idx = [i for i, r in enumerate(refs)
               if _norm_name(r.frame["file_path"]) in wanted or r.name in wanted]
        rule = f"{key}_filenames"
    else:
        held_out = split in ("val", "test")
        idx = [i for i in range(n) if (i % HOLDOUT_EVERY == 0) == held_out]
        rule = f"every {HOLDOUT_EVERY}th frame held out"
    if not idx:
        raise SplitNotFound(f"{path}: split {split!r} has no frames ({n} frames in the file, {rule})")
    return idx


def _ngp_aabb_scale(path: Path, meta: dict) -> float:
    v = meta["aabb_scale"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise DatasetError(f"{path}: 'aabb_scale' must be a positive number, got {v!r}")
    return float(v)


def load_nerfstudio(path: Path, split: str = "train", max_side: int | None = None,
                    allow_outside_paths: bool = False) -> SceneData:
    """Loads a nerfstudio / instant-ngp ``transforms.json`` (``path``: the json file).  Frames whose image is
    missing are dropped first (:func:`~nfkit.datasets.transforms_json.drop_missing`), before normalisation and
    splitting."""
    meta = read_json(path)
    refs = drop_missing(parse_frames(path, meta, path.parent, allow_outside_paths))
    all_c2w = np.stack([r.c2w for r in refs])
    if "aabb_scale" in meta:
        s, centre = 1.0, np.zeros(3)
        aabb = cube_aabb(AABB_HALF * _ngp_aabb_scale(path, meta))
        transform = torch.eye(4, dtype=torch.float64)
    else:
        s, centre = normalize_poses(all_c2w)
        box = points_aabb(meta.get("nfkit_points_bounds"), s, centre)
        aabb = cube_aabb(AABB_HALF) if box is None else torch.tensor(box, dtype=torch.float32)
        transform = similarity(s, centre)
    idx = select_split(path, meta, refs, split)
    c2w = apply_similarity(all_c2w[idx], s, centre)
    return build_scene([refs[i] for i in idx], c2w, aabb=aabb, transform=transform, scale=s,
                       source=str(path), max_side=max_side)
