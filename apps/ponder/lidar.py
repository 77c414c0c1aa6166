"""The real LiDAR arm: CGAL's labelled aerial point set ``b9_training.ply`` and the unlabelled ``urban.las``.

Debian's ``libcgal-demo`` ships them inside tarballs: ``/usr/share/doc/libcgal-dev/data.tar.gz``
(``data/points_3/b9_training.ply``: 22,300 points, x y z (float64), r g b, int label: -1 unlabelled, 0 ground,
1 vegetation, 2 roof; its colours encode the labels, so they are dropped) and
``/usr/share/doc/libcgal-dev/examples.tar.gz`` (``examples/Point_set_processing_3/data/urban.las``, LAS 1.2).
:func:`find_cgal_data` reads them from extracted files (``$NFKIT_CGAL_DATA`` or ``/usr/share/doc/libcgal-dev``)
or straight out of the tarballs; None when absent.

Scenes (:func:`tile_scenes`): square tiles of ``tile`` metres (half-overlapping) normalised into the rooms' cube
(xy centred and scaled by 1 / tile, z from the tile's lowest point: z' = -0.5 + (z - zmin) / tile, clamped to 0),
``n_points`` points resampled per tile, normals by PCA of the 16 nearest neighbours (oriented up), colour
channels zero, labels (-1 -> 255: ignored by the probes). Spatial split of b9: a checkerboard of 10 m blocks
(white blocks train, black test), each half tiled separately (a tile holds only its split's points). CGAL's
labelled points are three separate patches, one per class (ground x 10-46 m, vegetation x 78-91 m, roof x 50-71 m
from the west edge), so no split along one axis puts every class on both sides; the 10 m checkerboard does
(train 811 / 151 / 318, test 756 / 163 / 248 labelled points). RGB-D frames for pretraining
(:func:`splat_frames`): ``views`` oblique aerial cameras per tile, depth by z-buffered point splats (each point
covers ``splat`` x ``splat`` pixels; nearest wins), RGB zero: the LiDAR arm renders depth only.
"""
from __future__ import annotations

import io
import math
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch

from nfkit.errors import DatasetError

DOC = Path("/usr/share/doc/libcgal-dev")
B9 = "data/points_3/b9_training.ply"
URBAN = "examples/Point_set_processing_3/data/urban.las"
LIDAR_CLASSES = ("ground", "vegetation", "roof")
PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4", "uint": "<u4",
             "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1", "int16": "<i2", "uint16": "<u2",
             "int32": "<i4", "uint32": "<u4", "float32": "<f4", "float64": "<f8"}


def read_ply_vertices(raw: bytes, where: str = "ply") -> np.ndarray:
    """The vertex element of a binary little-endian or ASCII PLY as a numpy structured array."""
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise DatasetError(f"{where}: not a PLY file")
    header = raw[:end].decode("ascii", "replace").splitlines()
    body = raw[raw.index(b"\n", end) + 1:]
    fmt, n, props, in_vertex = "", 0, [], False
    for line in header:
        w = line.split()
        if w[:1] == ["format"]:
            fmt = w[1]
        elif w[:1] == ["element"]:
            in_vertex = w[1] == "vertex"
            n = int(w[2]) if in_vertex else n
        elif w[:1] == ["property"] and in_vertex:
            if w[1] == "list" or w[1] not in PLY_TYPES:
                raise DatasetError(f"{where}: unsupported vertex property {' '.join(w[1:])}")
            props.append((w[2], PLY_TYPES[w[1]]))
    dt = np.dtype(props)
    if fmt == "binary_little_endian":
        if len(body) < n * dt.itemsize:
            raise DatasetError(f"{where}: truncated ({len(body)} bytes for {n} vertices)")
        return np.frombuffer(body[: n * dt.itemsize], dtype=dt).copy()
    if fmt == "ascii":
        rows = np.loadtxt(io.StringIO(body.decode("ascii")), max_rows=n, ndmin=2)
        out = np.zeros(n, dtype=dt)
        for i, (name, _) in enumerate(props):
            out[name] = rows[:, i]
        return out
    raise DatasetError(f"{where}: unsupported PLY format {fmt!r}")


def read_las_xyz(raw: bytes, where: str = "las") -> np.ndarray:
    """xyz [N, 3] float64 of a LAS 1.0-1.4 file (every point format stores scaled int32 x, y, z first)."""
    if raw[:4] != b"LASF" or len(raw) < 227:
        raise DatasetError(f"{where}: not a LAS file")
    offset, = struct.unpack_from("<I", raw, 96)
    rec_len, = struct.unpack_from("<H", raw, 105)
    n, = struct.unpack_from("<I", raw, 107)
    if n == 0 and raw[25] >= 4 and len(raw) >= 255:  # LAS 1.4: 64-bit count
        n, = struct.unpack_from("<Q", raw, 247)
    scale = np.array(struct.unpack_from("<3d", raw, 131))
    shift = np.array(struct.unpack_from("<3d", raw, 155))
    if len(raw) < offset + n * rec_len:
        raise DatasetError(f"{where}: truncated ({n} points of {rec_len} bytes announced)")
    rec = np.frombuffer(raw, dtype=np.uint8, count=n * rec_len, offset=offset).reshape(n, rec_len)
    xyz = rec[:, :12].copy().view("<i4").astype(np.float64)
    return xyz * scale + shift


def _member(name: str, tarball: Path):
    root = Path(os.environ.get("NFKIT_CGAL_DATA", DOC))
    for cand in (root / name, root / Path(name).name):
        if cand.is_file():
            return cand.read_bytes()
    if tarball.is_file():
        with tarfile.open(tarball) as tf:
            try:
                return tf.extractfile(name).read()
            except KeyError:
                return None
    return None


def find_cgal_data() -> dict | None:
    """``{"b9": (xyz [N, 3], labels [N]), "urban": xyz [M, 3]}`` or None when libcgal-demo is absent."""
    b9 = _member(B9, DOC / "data.tar.gz")
    urban = _member(URBAN, DOC / "examples.tar.gz")
    if b9 is None or urban is None:
        return None
    v = read_ply_vertices(b9, B9)
    xyz = np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
    return {"b9": (xyz, v["label"].astype(np.int64)), "urban": read_las_xyz(urban, URBAN)}


def pca_normals(xyz: np.ndarray, k: int = 16) -> np.ndarray:
    """Unit normals [N, 3] by PCA of the k nearest neighbours, oriented to +z."""
    from scipy.spatial import cKDTree

    _, nn = cKDTree(xyz).query(xyz, k=min(k, len(xyz)))
    nb = xyz[nn] - xyz[nn].mean(1, keepdims=True)
    _, _, vt = np.linalg.svd(nb, full_matrices=False)
    n = vt[:, -1]
    return np.where(n[:, 2:] < 0, -n, n)


def tile_scenes(xyz: np.ndarray, labels: np.ndarray | None, tile: float, n_points: int, rng,
                min_points: int = 200) -> list[dict]:
    """Half-overlapping tiles of ``tile`` metres -> normalised scenes (module docstring) with numpy arrays."""
    lo, hi = xyz[:, :2].min(0), xyz[:, :2].max(0)
    starts = [np.arange(lo[a], max(lo[a] + 1e-6, hi[a] - tile / 2), tile / 2) for a in range(2)]
    out = []
    for x0 in starts[0]:
        for y0 in starts[1]:
            m = (xyz[:, 0] >= x0) & (xyz[:, 0] < x0 + tile) & (xyz[:, 1] >= y0) & (xyz[:, 1] < y0 + tile)
            if m.sum() < min_points:
                continue
            p = xyz[m]
            q = np.empty_like(p)
            q[:, :2] = (p[:, :2] - [x0 + tile / 2, y0 + tile / 2]) / tile
            q[:, 2] = np.minimum(-0.5 + (p[:, 2] - p[:, 2].min()) / tile, 0.0)
            pick = rng.choice(len(q), size=n_points, replace=len(q) < n_points)
            lab = np.full(len(q), 255) if labels is None else np.where(labels[m] < 0, 255, labels[m])
            out.append({"points": q[pick].astype(np.float32), "normals": pca_normals(q)[pick].astype(np.float32),
                        "labels": lab[pick].astype(np.int64)})
    return out


def splat_frames(points: np.ndarray, rng, views: int = 3, width: int = 64, height: int = 48, splat: int = 3):
    """Depth frames [V, H, W] (plane depth, 0: empty) of a normalised tile by z-buffered splats, with OpenGL c2w
    [V, 4, 4] and intrinsics [V, 4] of oblique aerial cameras."""
    from .rooms import look_at

    f = 0.8 * width
    c2w, intr, depth = [], [], []
    for _ in range(views):
        a = rng.uniform(0, 2 * math.pi)
        eye = np.array([0.45 * math.cos(a), 0.45 * math.sin(a), rng.uniform(-0.05, 0.0)])
        m = look_at(eye, np.array([*rng.uniform(-0.1, 0.1, 2), -0.45]))
        pc = (points - m[:3, 3]) @ m[:3, :3]  # camera coordinates (OpenGL: looking down -z)
        z = -pc[:, 2]
        ok = z > 1e-3
        u = np.floor(pc[ok, 0] / z[ok] * f + width / 2).astype(int)
        v = np.floor(-pc[ok, 1] / z[ok] * f + height / 2).astype(int)
        buf = np.full((height, width), np.inf)
        r = splat // 2
        for du in range(-r, r + 1):
            for dv in range(-r, r + 1):
                uu, vv = u + du, v + dv
                inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
                np.minimum.at(buf, (vv[inside], uu[inside]), z[ok][inside])
        depth.append(np.where(np.isfinite(buf), buf, 0.0))
        c2w.append(m)
        intr.append([f, f, width / 2, height / 2])
    return np.stack(depth).astype(np.float32), np.stack(c2w).astype(np.float32), np.array(intr, np.float32)


def as_split(scenes: list[dict], rng, views: int = 3) -> dict:
    """Scenes -> the tensors of :func:`~.rooms.load_rooms` (zero colours, zero RGB, depth from splats)."""
    if not scenes:
        raise DatasetError("LiDAR arm: no tile holds enough points")
    frames = [splat_frames(s["points"], rng, views) for s in scenes]
    t = {k: torch.from_numpy(np.stack([s[k] for s in scenes])) for k in ("points", "normals", "labels")}
    t["colors"] = torch.zeros_like(t["points"])
    t["depth"] = torch.from_numpy(np.stack([f[0] for f in frames]))
    t["c2w"] = torch.from_numpy(np.stack([f[1] for f in frames]))
    t["intrinsics"] = torch.from_numpy(np.stack([f[2] for f in frames]))
    t["rgb"] = torch.zeros(*t["depth"].shape, 3)
    t["seg"] = torch.full(t["depth"].shape, 255, dtype=torch.long)
    t["classes"] = list(LIDAR_CLASSES)
    return t


def lidar_splits(data: dict, tile: float = 30.0, n_points: int = 4096, seed: int = 0, block: float = 10.0) -> dict:
    """``{"pretrain", "train", "test"}`` splits: b9's white and black ``block``-metre checkerboard blocks (module
    docstring); pretraining on the unlabelled clouds: urban.las tiles + the b9 training tiles (labels unused)."""
    rng = np.random.default_rng(seed)
    xyz, lab = data["b9"]
    cell = np.floor((xyz[:, :2] - xyz[:, :2].min(0)) / block).astype(np.int64)
    left = cell.sum(1) % 2 == 0
    train = tile_scenes(xyz[left], lab[left], tile, n_points, rng)
    test = tile_scenes(xyz[~left], lab[~left], tile, n_points, rng)
    urban = tile_scenes(data["urban"], None, tile, n_points, rng)
    return {"pretrain": as_split(urban + train, rng), "train": as_split(train, rng), "test": as_split(test, rng)}
