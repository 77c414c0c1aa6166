"""IDR / DTU / VolSDF / NeuS datasets: ``cameras.npz`` beside an ``image/`` (or ``images/``) folder.

Two layouts of ``cameras.npz``:

* IDR (DTU, BlendedMVS as prepared by IDR, VolSDF, NeuS): ``world_mat_i`` = the 4x4 (or 3x4) projection
  ``K [R | t]`` of image ``i`` (world -> pixels, OpenCV camera axes), optionally ``scale_mat_i``, the similarity
  that maps the unit sphere around the object into the world (the same for every image).  Projections are
  decomposed by RQ (:func:`decompose_projection`).  With ``scale_mat`` the normalised coordinates are IDR's: the
  object inside the unit sphere, region of interest ``[-AABB_HALF_IDR, AABB_HALF_IDR]^3``; without it, as the
  nerfstudio reader (:func:`nfkit.datasets.normalize.normalize_poses`, ``[-1.5, 1.5]^3``).
* NEAT (e.g. ``../shared/data/abc_wireframe``): ``intrinsics`` [N, 3, 3] and ``extrinsics`` [N, 4, 4]
  camera-to-world, OpenCV camera axes; normalised as the nerfstudio reader.

Images: the files of ``image/``, ``images/`` or ``rgb/`` in sorted order, one per camera; masks from ``mask/`` or
``masks/`` beside them (:mod:`nfkit.datasets.masks`).  K follows OpenCV's pixel convention (see
:func:`nfkit.datasets.posed_images.from_opencv_k`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nfkit.cameras import GL_TO_CV
from nfkit.errors import DatasetError

from .build import cube_aabb
from .masks import list_images, mask_files
from .normalize import normalize_poses
from .posed_images import build_posed, from_opencv_k
from .scene import SceneData, similarity

CAMERAS_FILE = "cameras.npz"
IMAGE_DIRS = ("image", "images", "rgb")
AABB_HALF_IDR = 1.1  # IDR's unit sphere, with a margin
AABB_HALF = 1.5
_WORLD = re.compile(r"^world_mat_(\d+)$")


def decompose_projection(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P [3, 4] (or [4, 4]) = K [R | t] up to scale -> (K [3, 3] with K[2, 2] = 1 and a positive diagonal, R [3, 3]
    world -> camera with det +1 (OpenCV axes: the camera looks along +z), centre C [3]).  RQ by scipy."""
    from scipy.linalg import rq

    p = np.asarray(p, dtype=np.float64)[:3, :4]
    m = p[:, :3]
    if not np.isfinite(p).all() or not np.linalg.cond(m) < 1e12:
        raise DatasetError("singular or non-finite projection matrix")
    k, r = rq(m)
    d = np.diag(np.sign(np.diag(k)))
    k, r = k @ d, d @ r
    if np.linalg.det(r) < 0:  # P and -P are the same projection: take the one with a proper rotation
        r = -r
        m, p = -m, -p
        k = m @ r.T
    centre = -np.linalg.solve(m, p[:, 3])
    return k / k[2, 2], r, centre


def is_idr_dir(root: Path) -> bool:
    return (root / CAMERAS_FILE).is_file()


def _image_paths(root: Path, n: int, source: Path) -> list[Path]:
    folder = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if folder is None:
        raise DatasetError(f"{source}: no image folder beside it (expected one of {', '.join(IMAGE_DIRS)})")
    paths = list_images(folder)
    if len(paths) != n:
        raise DatasetError(f"{source}: has {n} cameras but {folder} holds {len(paths)} images")
    return paths


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable .npz file ({str(e)[:100]})") from None


def _idr_cameras(path: Path, cams: dict):
    """-> (k [N, 3, 3], c2w [N, 4, 4] OpenCV, scale_mat [4, 4] or None) from world_mat_i / scale_mat_i."""
    ids = sorted(int(m.group(1)) for m in map(_WORLD.match, cams) if m)
    ks, c2ws = [], []
    for i in ids:
        w = cams[f"world_mat_{i}"]
        if w.shape not in ((4, 4), (3, 4)):
            raise DatasetError(f"{path}: world_mat_{i} must be 4x4 or 3x4, got shape {w.shape}")
        try:
            k, r, c = decompose_projection(w)
        except DatasetError as e:
            raise DatasetError(f"{path}: world_mat_{i}: {e}") from None
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = r.T, c
        ks.append(k)
        c2ws.append(c2w)
    scale_mat = cams.get(f"scale_mat_{ids[0]}")
    return np.stack(ks), np.stack(c2ws), scale_mat


def _transform_from_scale_mat(path: Path, scale_mat: np.ndarray) -> tuple[np.ndarray, float]:
    """IDR's scale_mat (normalised -> world) -> (transform world -> normalised [4, 4], its scale)."""
    s = np.asarray(scale_mat, dtype=np.float64)
    if s.shape != (4, 4) or not np.isfinite(s).all():
        raise DatasetError(f"{path}: scale_mat must be a finite 4x4 matrix")
    lin = s[:3, :3]
    scale = np.cbrt(abs(np.linalg.det(lin)))
    if scale <= 0 or not np.allclose(lin @ lin.T, scale ** 2 * np.eye(3), atol=1e-6 * scale ** 2):
        raise DatasetError(f"{path}: scale_mat must be a similarity (uniform scale and translation)")
    return np.linalg.inv(s), float(1.0 / scale)


def load_idr(path: Path, split: str = "train", max_side: int | None = None) -> SceneData:
    """Loads an IDR / NEAT dataset; ``path``: the folder or its ``cameras.npz``."""
    npz = path if path.is_file() else path / CAMERAS_FILE
    root = npz.parent
    cams = _read_npz(npz)
    if any(_WORLD.match(k) for k in cams):
        k, c2w_cv, scale_mat = _idr_cameras(npz, cams)
    elif "intrinsics" in cams and "extrinsics" in cams:
        k, c2w_cv, scale_mat = cams["intrinsics"], cams["extrinsics"].astype(np.float64), None
        if k.ndim != 3 or k.shape[1:] != (3, 3) or c2w_cv.shape != (len(k), 4, 4):
            raise DatasetError(f"{npz}: intrinsics must be [N, 3, 3] and extrinsics [N, 4, 4], got "
                               f"{k.shape} and {c2w_cv.shape}")
    else:
        raise DatasetError(f"{npz}: expected world_mat_i (IDR / DTU) or intrinsics + extrinsics (NEAT) arrays, "
                           f"found {', '.join(sorted(cams)[:6]) or 'nothing'}")
    c2w = c2w_cv @ GL_TO_CV.double().numpy()
    paths = _image_paths(root, len(c2w), npz)
    if scale_mat is not None:
        transform, scale = _transform_from_scale_mat(npz, scale_mat)
        aabb = cube_aabb(AABB_HALF_IDR)
    else:
        scale, centre = normalize_poses(c2w)
        transform, aabb = similarity(scale, centre).numpy(), cube_aabb(AABB_HALF)
    return build_posed(paths, from_opencv_k(k), c2w, split=split, source=npz, root=root, transform=transform,
                       scale=scale, aabb=aabb, max_side=max_side, masks=mask_files(paths, root))
