"""Middlebury multi-view stereo datasets (temple, dino rings): ``<name>_par.txt`` beside the images.

``*_par.txt``: the number of images on the first line, then per image
``imgname.png k11 k12 k13 k21 k22 k23 k31 k32 k33 r11 r12 r13 r21 r22 r23 r31 r32 r33 t1 t2 t3``: the projection
is ``K [R | t]`` (world -> camera ``R x + t``, OpenCV camera axes, image origin top-left; pixel convention as
:func:`nfkit.datasets.posed_images.from_opencv_k`).  Images in the listed order.

The objects stand on a black cloth: masks come from ``mask/`` or ``masks/`` beside the images when there is such a
folder, else by thresholding the dark background (:func:`nfkit.datasets.masks.threshold_mask`), and become the
images' alpha.  Normalisation as the nerfstudio reader (:func:`nfkit.datasets.normalize.normalize_poses`: the
ring's cameras look at the object, which ends up at the origin), region of interest ``[-1.5, 1.5]^3``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nfkit.cameras import GL_TO_CV
from nfkit.errors import DatasetError

from .build import cube_aabb
from .masks import mask_files
from .normalize import normalize_poses
from .posed_images import build_posed, from_opencv_k
from .scene import SceneData, similarity
from .transforms_json import leaves_folder

PAR_SUFFIX = "_par.txt"
AABB_HALF = 1.5


def par_file(root: Path) -> Path | None:
    """The single ``*_par.txt`` of ``root``, or None."""
    found = sorted(root.glob(f"*{PAR_SUFFIX}"))
    return found[0] if len(found) == 1 else None


def read_par(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """-> (image names, K [N, 3, 3], world -> camera [N, 3, 4]); DatasetError naming the file and line."""
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    if not lines or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise DatasetError(f"{path}: the first line must be the number of images")
    n = int(lines[0][0])
    if len(lines) - 1 != n or n == 0:
        raise DatasetError(f"{path}: says {n} images but lists {len(lines) - 1}")
    names, ks, rts = [], [], []
    for i, parts in enumerate(lines[1:], start=2):
        try:
            vals = np.array([float(v) for v in parts[1:]])
        except ValueError:
            vals = np.zeros(0)
        if len(vals) != 21 or not np.isfinite(vals).all():
            raise DatasetError(f"{path}: line {i} must be 'imgname' and 21 numbers (K, R row-major, t)")
        names.append(parts[0])
        ks.append(vals[:9].reshape(3, 3))
        rts.append(np.concatenate([vals[9:18].reshape(3, 3), vals[18:21, None]], 1))
    return names, np.stack(ks), np.stack(rts)


def load_middlebury(path: Path, split: str = "train", max_side: int | None = None) -> SceneData:
    """Loads a Middlebury dataset; ``path``: the folder (holding one ``*_par.txt``) or the ``*_par.txt`` file."""
    par = path if path.is_file() else par_file(path)
    if par is None:
        raise DatasetError(f"{path}: expected exactly one *{PAR_SUFFIX} file")
    root = par.parent
    names, k, rt = read_par(par)
    paths = [root / n for n in names]
    if (bad := next((n for n in names if leaves_folder(n)), None)) is not None:
        raise DatasetError(f"{par}: image {bad!r} leaves the dataset folder (absolute or '..' path)")
    c2w_cv = np.tile(np.eye(4), (len(names), 1, 1))
    r = rt[:, :, :3]
    c2w_cv[:, :3, :3] = np.swapaxes(r, 1, 2)
    c2w_cv[:, :3, 3] = -np.einsum("nji,nj->ni", r, rt[:, :, 3])  # C = -R^T t
    c2w = c2w_cv @ GL_TO_CV.double().numpy()
    scale, centre = normalize_poses(c2w)
    masks = mask_files(paths, root)
    return build_posed(paths, from_opencv_k(k), c2w, split=split, source=par, root=root,
                       transform=similarity(scale, centre).numpy(), scale=scale, aabb=cube_aabb(AABB_HALF),
                       max_side=max_side, masks="threshold" if masks is None else masks)
