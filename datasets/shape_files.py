"""Reading shape files: triangle meshes (OFF, OBJ, PLY, STL) and point clouds (PLY without faces, XYZ, NPY).

* :func:`file_kind`: 'mesh' or 'points' from the suffix; a PLY file's header decides (an ``element face`` with
  at least one face makes it a mesh), without reading the body.
* :func:`read_mesh`: a triangle mesh (trimesh, ``process=False``) with finite vertices and valid faces; it need not
  be watertight (occupancy and SDF targets need that: :func:`nfkit.datasets.shapes.load_mesh` checks it).
* :func:`read_points`: points [N, 3] float64 of a point cloud: PLY vertices (trimesh), XYZ text (one point a line,
  ``x y z`` and optional further columns such as normals or colour, spaces or commas, ``#`` comments), NPY
  ([N, >=3] numeric array, read without pickle).
* :func:`read_shape`: either of the two, by :func:`file_kind`.
* :func:`normalise_points`, :func:`surface_points`, :func:`unsigned_distance`: the point-cloud side of
  :mod:`nfkit.datasets.shapes` (same normalisation: the bounding box's longest side spans
  ``[-half_extent, half_extent]``).

Anything else (text that is no mesh, an empty file, a PLY without vertices, NaN coordinates, all points at one
place) is a one-line :class:`~nfkit.errors.DatasetError` naming the file and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfkit.errors import DatasetError

MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl")
POINT_SUFFIXES = (".ply", ".xyz", ".npy")
SHAPE_SUFFIXES = tuple(dict.fromkeys(MESH_SUFFIXES + POINT_SUFFIXES))
EXPECTED = "expected a mesh (OFF, OBJ, PLY, STL) or a point cloud (PLY, XYZ, NPY)"


def trimesh_module():
    try:
        import trimesh
    except ImportError:
        raise DatasetError('reading meshes and point clouds needs trimesh: pip install "trimesh[easy]"') from None
    return trimesh


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such mesh or point-cloud file ({EXPECTED})")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file ({EXPECTED})")
    return path


def ply_face_count(path) -> int:
    """Faces declared by a PLY file's header (0 for a point cloud)."""
    path = _existing(path)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.startswith(b"ply") or b"end_header" not in head:
        raise DatasetError(f"{path}: not a PLY file (no 'ply ... end_header' header; {EXPECTED})")
    faces = 0
    for line in head.split(b"end_header", 1)[0].splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"face":
            try:
                faces = int(parts[2])
            except ValueError:
                raise DatasetError(f"{path}: malformed PLY header ({line.decode(errors='replace')!r})") from None
    return faces


def file_kind(path) -> str:
    """'mesh' or 'points' (see the module docstring); an unknown suffix is a one-line error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return "mesh" if ply_face_count(path) > 0 else "points"
    if suffix in MESH_SUFFIXES:
        return "mesh"
    if suffix in POINT_SUFFIXES:
        return "points"
    raise DatasetError(f"{path}: unknown shape file type {suffix!r} ({EXPECTED})")


def _check_points(path, v: np.ndarray, what: str) -> np.ndarray:
    if v.ndim != 2 or v.shape[1] < 3 or len(v) == 0:
        raise DatasetError(f"{path}: no points found ({what})")
    v = np.asarray(v[:, :3], dtype=np.float64)
    if not np.isfinite(v).all():
        raise DatasetError(f"{path}: point coordinates are not finite (NaN or inf)")
    if not float(np.ptp(v, 0).max()) > 0:
        raise DatasetError(f"{path}: degenerate shape (all points at one place)")
    return v


def read_mesh(path):
    """A triangle mesh file -> trimesh.Trimesh (not normalised, not necessarily watertight)."""
    trimesh = trimesh_module()
    path = _existing(path)
    try:
        mesh = trimesh.load(str(path), process=False, force="mesh")
    except Exception as e:  # trimesh raises many types for malformed files
        raise DatasetError(f"{path}: unreadable mesh ({str(e)[:120]}; expected a triangle mesh)") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise DatasetError(f"{path}: no triangles found (expected a triangle mesh: OFF, OBJ, PLY, STL)")
    _check_points(path, np.asarray(mesh.vertices), "expected a triangle mesh")
    faces = np.asarray(mesh.faces)
    if faces.min() < 0 or faces.max() >= len(mesh.vertices):
        raise DatasetError(f"{path}: faces refer to vertices that do not exist")
    return mesh


def _read_xyz(path: Path) -> np.ndarray:
    rows = []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file (expected an XYZ point cloud: x y z per line)") from None
    for k, line in enumerate(text.splitlines()):
        line = line.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        try:
            rows.append([float(t) for t in line[:3]])
        except ValueError:
            raise DatasetError(f"{path}: line {k + 1} is not 'x y z' numbers (expected an XYZ point cloud)") from None
        if len(line) < 3:
            raise DatasetError(f"{path}: line {k + 1} has fewer than 3 numbers (expected an XYZ point cloud)")
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise DatasetError(f"{path}: not an NPY file (expected a numeric [N, 3] array written by numpy.save)")
    try:
        v = np.load(str(path), allow_pickle=False)
    except Exception as e:  # ValueError (pickled / malformed), OSError
        raise DatasetError(f"{path}: unreadable NPY file ({str(e)[:100]}; expected an [N, 3] array)") from None
    if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu" or v.ndim != 2 or v.shape[1] < 3:
        raise DatasetError(f"{path}: holds a {getattr(v, 'dtype', '?')} array of shape {getattr(v, 'shape', '?')}"
                           " (expected a numeric [N, 3] point array)")
    return v


def read_points(path) -> np.ndarray:
    """A point-cloud file (PLY, XYZ, NPY) -> points [N, 3] float64 (not normalised). A mesh PLY gives its
    vertices."""
    path = _existing(path)
    suffix = path.suffix.lower()
    what = "expected a point cloud: PLY, XYZ or NPY"
    if suffix == ".xyz":
        v = _read_xyz(path)
    elif suffix == ".npy":
        v = _read_npy(path)
    elif suffix == ".ply":
        ply_face_count(path)  # a header check first: trimesh reads some garbage as an empty scene
        try:
            v = np.asarray(trimesh_module().load(str(path), process=False).vertices)
        except Exception as e:
            raise DatasetError(f"{path}: unreadable PLY ({str(e)[:120]}; {what})") from None
    else:
        raise DatasetError(f"{path}: unknown point-cloud file type {suffix!r} ({what})")
    return _check_points(path, v, what)


@dataclass
class ShapeFile:
    """One shape file: ``kind`` 'mesh' (``mesh`` a trimesh) or 'points' (``points`` [N, 3] float64)."""

    path: str
    kind: str
    mesh: object = None
    points: np.ndarray | None = None


def read_shape(path) -> ShapeFile:
    """Read a mesh or a point cloud (by :func:`file_kind`)."""
    kind = file_kind(path)
    if kind == "mesh":
        return ShapeFile(str(path), kind, mesh=read_mesh(path))
    return ShapeFile(str(path), kind, points=read_points(path))


def normalise_points(points: np.ndarray, half_extent: float = 0.9) -> tuple[np.ndarray, float]:
    """points [N, 3] -> (points centred on their bounding box and scaled so its longest side is
    ``2 * half_extent``, the scale)."""
    lo, hi = points.min(0), points.max(0)
    scale = 2 * half_extent / float((hi - lo).max())
    return (points - (lo + hi) / 2) * scale, scale


def surface_points(mesh, n: int, seed: int = 0) -> np.ndarray:
    """n points [n, 3] uniform on a trimesh's surface (area-weighted), reproducible from ``seed``."""
    pts, _ = trimesh_module().sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts, dtype=np.float64)


def unsigned_distance(cloud: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Distance [Q] from each query [Q, 3] to its nearest point of ``cloud`` [N, 3] (``scipy.spatial.cKDTree``)."""
    from scipy.spatial import cKDTree

    return cKDTree(cloud).query(queries, k=1)[0]
