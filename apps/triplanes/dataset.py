"""Shape folders: writing the procedural set and the real-mesh arm, listing a folder, ground truth per shape.

Layout (ModelNet's): ``ROOT/<class>/<split>/<class>_NNNN.ply`` with split ``train`` or ``test``; a folder without
split sub-folders (``ROOT/<class>/*.off``) is read as all ``train``. Shape files: meshes (OFF, OBJ, PLY, STL) and
point clouds (PLY without faces, XYZ, NPY; :mod:`nfkit.datasets.shape_files`).

Real-mesh arm (:func:`make_real_arm`): every mesh of a folder is a class; each sample is that mesh under nuisance
(:func:`nuisance`): anisotropic scale 0.8-1.2 per axis, a smooth non-rigid warp (three sinusoidal displacement
fields, ~3 % of the size), a rotation about the up axis (z) uniform in [0, 2 pi) and surface noise along the vertex
normals (sigma 0.3 % of the size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfkit.atomic import atomic_path
from nfkit.datasets.shape_files import MESH_SUFFIXES, SHAPE_SUFFIXES
from nfkit.errors import DatasetError, NfkitError

SPLITS = ("train", "test")


def write_mesh(mesh, path: Path) -> Path:
    """Write a trimesh as binary PLY (or by ``path``'s suffix), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        mesh.export(file_obj=fh, file_type=path.suffix.lstrip(".").lower())
    return path


def shape_rng(seed: int, *keys) -> np.random.Generator:
    """A generator for one shape, independent of every other shape's (seed, class, split, index)."""
    return np.random.default_rng([seed, *[(abs(hash_str(k)) if isinstance(k, str) else int(k)) for k in keys]])


def hash_str(s: str) -> int:
    """A stable (not per-process salted) 32-bit hash of a string."""
    import zlib

    return zlib.crc32(s.encode())


def make_procedural(out, per_class: int, test_per_class: int, seed: int = 0, classes=None, progress=None) -> int:
    """Write ``per_class`` training and ``test_per_class`` test shapes of each class under ``out``; files already
    there are kept (resume). Returns the number of shapes written now."""
    from nfkit.apps.triplanes.procedural import CLASSES, make_shape

    classes = tuple(classes or CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise NfkitError(f"unknown shape classes {unknown}; known: {', '.join(CLASSES)}")
    written = 0
    for name in classes:
        for split, n in (("train", per_class), ("test", test_per_class)):
            for i in range(n):
                path = Path(out) / name / split / f"{name}_{i:04d}.ply"
                if not path.is_file():
                    write_mesh(make_shape(name, shape_rng(seed, name, split, i)), path)
                    written += 1
                if progress is not None:
                    progress.update(1)
    return written


def nuisance(mesh, rng, scale=(0.8, 1.2), warp: float = 0.03, noise: float = 0.003):
    """A copy of a (normalised) trimesh under nuisance: anisotropic scale, smooth warp, rotation about z, noise
    along the vertex normals (``warp`` and ``noise`` in units of the shape's longest side)."""
    import trimesh

    v = np.asarray(mesh.vertices, float).copy()
    size = float(np.ptp(v, 0).max())
    v = (v - v.mean(0)) * rng.uniform(*scale, 3)
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        freq = rng.normal(0, 2.5, 3) / size
        v += warp * size * direction * np.sin(v @ freq + rng.uniform(0, 2 * math.pi))[:, None]
    a = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    v = v @ rot.T
    out = trimesh.Trimesh(v, np.asarray(mesh.faces), process=False)
    normals = np.asarray(out.vertex_normals)
    out.vertices = v + normals * rng.normal(0, noise * size, (len(v), 1))
    if out.volume < 0:
        out.invert()
    return out


def make_real_arm(mesh_dir, out, per_class: int, test_per_class: int, seed: int = 0, progress=None) -> int:
    """One class per mesh file of ``mesh_dir``; ``per_class`` + ``test_per_class`` nuisance samples of each."""
    from nfkit.datasets.shapes import load_mesh

    files = sorted(p for p in Path(mesh_dir).glob("*") if p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise DatasetError(f"{mesh_dir}: no mesh files ({', '.join(MESH_SUFFIXES)})")
    written = 0
    for f in files:
        todo = [(split, i) for split, n in (("train", per_class), ("test", test_per_class)) for i in range(n)]
        todo = [(s, i) for s, i in todo if not (Path(out) / f.stem / s / f"{f.stem}_{i:04d}.ply").is_file()]
        base = load_mesh(f)[0] if todo else None
        for split, i in todo:
            write_mesh(nuisance(base, shape_rng(seed, f.stem, split, i)), Path(out) / f.stem / split / f"{f.stem}_{i:04d}.ply")
            written += 1
        if progress is not None:
            progress.update(per_class + test_per_class)
    return written


@dataclass
class ShapeList:
    """A shape folder: ``files[i]`` of class ``classes[labels[i]]`` in split ``splits[i]``."""

    files: list
    labels: list
    splits: list
    classes: list

    def __len__(self) -> int:
        return len(self.files)

    def as_json(self) -> dict:
        return {"classes": self.classes, "shapes": [{"file": f, "label": lab, "split": s}
                                                    for f, lab, s in zip(self.files, self.labels, self.splits)]}


def list_shapes(root, split: str = "all") -> ShapeList:
    """Every shape file under ``root/<class>/`` (see the module docstring), sorted; ``split``: all, train or test."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder of shape classes (expected {root}/<class>/[train|test/]*.ply)")
    if split not in ("all", *SPLITS):
        raise NfkitError(f"--split: expected all, train or test, got {split!r}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    files, labels, splits = [], [], []
    for k, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.suffix.lower() not in SHAPE_SUFFIXES or not p.is_file():
                continue
            rel = p.relative_to(root / c).parts
            s = rel[0] if len(rel) > 1 and rel[0] in SPLITS else "train"
            if split in ("all", s):
                files.append(str(p))
                labels.append(k)
                splits.append(s)
    if not files:
        raise DatasetError(f"{root}: no shape files ({', '.join(SHAPE_SUFFIXES)}) in class folders {root}/<class>/")
    return ShapeList(files, labels, splits, classes)


@dataclass
class ShapeTargets:
    """Ground truth of one shape: points [N, 3] float32 in [-1, 1]^3, occupancy [N] float32 (1 inside),
    surface [M, 3] float32 (points on the surface, the PointNet input)."""

    points: np.ndarray
    occupancy: np.ndarray
    surface: np.ndarray


def shape_targets(mesh, n: int, sigmas=(0.01, 0.04), near_fraction: float = 0.6, n_surface: int = 1024,
                  seed: int = 0) -> ShapeTargets:
    """Occupancy samples of a normalised watertight trimesh: ``near_fraction`` of ``n`` at the surface + N(0,
    sigma^2) per axis (split evenly over ``sigmas``), the rest uniform in [-1, 1]^3; inside tests by
    :func:`nfkit.datasets.shapes.inside`."""
    import trimesh

    from nfkit.datasets.shapes import inside

    rng = np.random.default_rng(seed)
    n_near = int(round(n * near_fraction))
    per = [n_near // len(sigmas)] * len(sigmas)
    per[0] += n_near - sum(per)
    surf, _ = trimesh.sample.sample_surface(mesh, n_near + n_surface, seed=seed)
    near = np.concatenate([surf[sum(per[:i]): sum(per[: i + 1])] + rng.normal(0, s, (k, 3))
                           for i, (k, s) in enumerate(zip(per, sigmas))])
    pts = np.clip(np.concatenate([near, rng.uniform(-1, 1, (n - n_near, 3))]), -1, 1)
    occ = inside(mesh, pts).astype(np.float32)
    return ShapeTargets(pts.astype(np.float32), occ, surf[n_near:].astype(np.float32))


def release_meshes(meshes) -> None:
    """Free the meshes' ray-tracing scenes now. trimesh's Embree intersector (embreex) makes an Embree device for
    every mesh's scene, and a mesh and its intersector reference each other, so without this the scenes pile up
    until the cyclic garbage collector runs: after ~1200 meshes in one process embreex segfaulted here (trimesh
    issue #2410 reports the same after ~1000 cached meshes)."""
    import gc

    for m in meshes:
        cache = getattr(getattr(m, "ray", None), "_cache", None)
        if cache is not None:
            cache.clear()
    gc.collect()
