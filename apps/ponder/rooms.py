"""Procedural indoor rooms: an analytic SDF union, ray cast into labelled point clouds and RGB-D frames.

Scene frame (already PonderV2's normalised cube, z up, metres / scene scale): the room spans
``ROOM_AABB`` = x, y in [-0.5, 0.5], z in [-0.5, 0]; the floor's top face is at z = -0.45, walls (2 or 3 of the 4
sides) have inner faces at |x| or |y| = 0.45 and rise to z = -0.02; there is no ceiling. 3-6 furniture pieces stand
on the floor: tables (top on four legs), chairs (seat, back, four legs), lamps (pole + shade), balls; axis-aligned
boxes, vertical cylinders and spheres.

Classes (:data:`CLASSES`): floor, wall, table, chair, lamp, ball. Colours are deliberately ambiguous: an object's
albedo is ``0.35 * class tint + 0.65 * a random colour``, every point adds N(0, 0.05) noise, and shading is
Lambertian under one light, so colour alone cannot separate the classes.

Per scene (:func:`make_room`): ``n_points`` points (xyz, colour, unit normal, label) subsampled from the hits of
:data:`SCAN_VIEWS` ray-cast views (a "fused scan"), and ``n_frames`` RGB-D frames of ``height`` x ``width``
(RGB in [0, 1], plane depth along the camera's -Z, 0 = no hit; per-pixel labels, 255 = no hit) with intrinsics
(fx, fy, cx, cy) and OpenGL camera-to-world poses (:mod:`nfkit.cameras`). Ray casting is sphere tracing of the
union SDF in torch (float64), exact for boxes and spheres.

Storage (:func:`write_rooms` / :func:`load_rooms`): ``DATA/rooms.json`` (config, classes, counts) and one
safetensors file per split (``train.safetensors``, ``test.safetensors``): ``points``/``colors``/``normals``
[S, N, 3] float32, ``labels`` [S, N] uint8, ``rgb`` [S, V, H, W, 3] uint8, ``depth`` [S, V, H, W] float32,
``seg`` [S, V, H, W] uint8, ``c2w`` [S, V, 4, 4] float32, ``intrinsics`` [S, V, 4] float32. No pickle.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nfkit.errors import DatasetError, NfkitError

CLASSES = ("floor", "wall", "table", "chair", "lamp", "ball")
# class tints (mixed 35 / 65 with a random colour per object: overlapping class colours)
TINTS = np.array([[0.55, 0.45, 0.35], [0.75, 0.75, 0.7], [0.55, 0.35, 0.2], [0.3, 0.4, 0.6], [0.8, 0.75, 0.4],
                  [0.7, 0.3, 0.3]])
ROOM_AABB = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.0))
FLOOR_Z, WALL_IN, WALL_TOP = -0.45, 0.45, -0.02
LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
SCAN_VIEWS = 8  # ray-cast views fused into the point cloud (the first n_frames are also the RGB-D frames)
FORMAT = "nfkit-ponder-rooms"


@dataclass
class RoomsConfig:
    out: str = "outputs/ponder_rooms"
    train: int = 200  # training scenes
    test: int = 50  # test scenes
    seed: int = 0
    n_points: int = 4096  # points per scene
    n_frames: int = 3  # RGB-D frames per scene
    width: int = 64
    height: int = 48


# ----- primitives: rows of (kind, label, object id, 7 parameters) ----------------------------------------------------
BOX, SPHERE, CYL = 0, 1, 2


def _box(lo, hi, label, obj):
    c = (np.asarray(lo) + np.asarray(hi)) / 2
    h = (np.asarray(hi) - np.asarray(lo)) / 2
    return (BOX, label, obj, *c, *h, 0.0)


def _furniture(kind: str, x: float, y: float, rng, obj: int) -> list:
    """Primitives of one piece of furniture standing on the floor at (x, y)."""
    f = FLOOR_Z
    if kind == "table":
        sx, sy, top, th, leg = rng.uniform(0.08, 0.13), rng.uniform(0.06, 0.1), rng.uniform(0.1, 0.16), 0.015, 0.012
        out = [_box((x - sx, y - sy, f + top - th), (x + sx, y + sy, f + top), 2, obj)]
        for ex in (-1, 1):
            for ey in (-1, 1):
                lx, ly = x + ex * (sx - leg), y + ey * (sy - leg)
                out.append(_box((lx - leg, ly - leg, f), (lx + leg, ly + leg, f + top - th), 2, obj))
        return out
    if kind == "chair":
        s, seat, back, leg = rng.uniform(0.045, 0.065), rng.uniform(0.06, 0.09), rng.uniform(0.07, 0.11), 0.01
        side = rng.integers(4)
        out = [_box((x - s, y - s, f + seat - 0.012), (x + s, y + s, f + seat), 3, obj)]
        bx = [(x - s, x - s + 0.015, y - s, y + s), (x + s - 0.015, x + s, y - s, y + s),
              (x - s, x + s, y - s, y - s + 0.015), (x - s, x + s, y + s - 0.015, y + s)][side]
        out.append(_box((bx[0], bx[2], f + seat), (bx[1], bx[3], f + seat + back), 3, obj))
        for ex in (-1, 1):
            for ey in (-1, 1):
                lx, ly = x + ex * (s - leg), y + ey * (s - leg)
                out.append(_box((lx - leg, ly - leg, f), (lx + leg, ly + leg, f + seat - 0.012), 3, obj))
        return out
    if kind == "lamp":
        h, r = rng.uniform(0.18, 0.3), rng.uniform(0.03, 0.05)
        return [(CYL, 4, obj, x, y, f + h / 2, 0.01, h / 2, 0.0, 0.0),
                (CYL, 4, obj, x, y, f + h, r, 0.03, 0.0, 0.0),
                (CYL, 4, obj, x, y, f + 0.005, 0.035, 0.005, 0.0, 0.0)]
    r = rng.uniform(0.03, 0.06)  # ball
    return [(SPHERE, 5, obj, x, y, f + r, r, 0.0, 0.0, 0.0)]


def room_primitives(rng: np.random.Generator) -> np.ndarray:
    """[K, 10] float64 rows (kind, label, object id, 7 parameters) of one random room."""
    prims = [_box((-0.5, -0.5, -0.5), (0.5, 0.5, FLOOR_Z), 0, 0)]
    sides = rng.permutation(4)[: rng.integers(2, 4)]
    for k, side in enumerate(sides):
        if side < 2:
            s = -1 if side == 0 else 1
            lo, hi = sorted([s * WALL_IN, s * 0.49])
            prims.append(_box((lo, -0.49, FLOOR_Z), (hi, 0.49, WALL_TOP), 1, 1 + k))
        else:
            s = -1 if side == 2 else 1
            lo, hi = sorted([s * WALL_IN, s * 0.49])
            prims.append(_box((-0.49, lo, FLOOR_Z), (0.49, hi, WALL_TOP), 1, 1 + k))
    n_obj, placed, obj = int(rng.integers(3, 7)), [], 10
    kinds = ("table", "chair", "lamp", "ball")
    for _ in range(60):
        if len(placed) == n_obj:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        x, y = rng.uniform(-0.33, 0.33, 2)
        rad = {"table": 0.17, "chair": 0.1, "lamp": 0.06, "ball": 0.07}[kind]
        if any((x - px) ** 2 + (y - py) ** 2 < (rad + pr) ** 2 for px, py, pr in placed):
            continue
        placed.append((x, y, rad))
        prims += _furniture(kind, x, y, rng, obj)
        obj += 1
    return np.array(prims, dtype=np.float64)


def primitive_sdf(prims: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Signed distances [K, P] of points x [P, 3] to primitives [K, 10] (boxes, spheres, vertical cylinders)."""
    kind, c, p = prims[:, 0:1], prims[:, 3:6], prims[:, 6:9]
    d = x[None] - c[:, None]  # [K, P, 3]
    q = d.abs() - p[:, None]
    box = q.clamp(min=0).norm(dim=-1) + q.amax(-1).clamp(max=0)
    sph = d.norm(dim=-1) - p[:, None, 0]
    qr = torch.stack([d[..., :2].norm(dim=-1) - p[:, None, 0], d[..., 2].abs() - p[:, None, 1]], -1)
    cyl = qr.clamp(min=0).norm(dim=-1) + qr.amax(-1).clamp(max=0)
    return torch.where(kind == BOX, box, torch.where(kind == SPHERE, sph, cyl))


def scene_sdf(prims: torch.Tensor, x: torch.Tensor):
    """Union SDF [P] and the index [P] of the nearest primitive."""
    d = primitive_sdf(prims, x)
    v, i = d.min(0)
    return v, i


def sphere_trace(prims: torch.Tensor, rays_o: torch.Tensor, rays_d: torch.Tensor, t_max: float = 3.0,
                 iters: int = 160, eps: float = 2e-4):
    """Ray distances [R] of the first hits (inf: miss or leaves ``ROOM_AABB``), float64 inputs."""
    from nfkit.cameras import ray_aabb

    aabb = torch.tensor(ROOM_AABB, dtype=rays_o.dtype)
    _, t_far = ray_aabb(rays_o, rays_d, aabb)
    t = torch.zeros(rays_o.shape[0], dtype=rays_o.dtype)
    active = torch.ones_like(t, dtype=torch.bool)
    hit = torch.zeros_like(active)
    for _ in range(iters):
        if not bool(active.any()):
            break
        idx = active.nonzero()[:, 0]
        d, _ = scene_sdf(prims, rays_o[idx] + t[idx, None] * rays_d[idx])
        t[idx] += d
        done = d < eps
        hit[idx[done]] = True
        gone = (t[idx] > torch.minimum(t_far[idx], torch.tensor(t_max, dtype=t.dtype))) & ~done
        active[idx[done | gone]] = False
    t[~hit | (t > t_far + 1e-6)] = float("inf")
    return t


def sdf_normals(prims: torch.Tensor, x: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """Unit normals [P, 3] of the union SDF by central differences."""
    e = torch.eye(3, dtype=x.dtype) * h
    g = torch.stack([scene_sdf(prims, x + e[i])[0] - scene_sdf(prims, x - e[i])[0] for i in range(3)], -1)
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world [4, 4] at ``eye`` looking at ``target`` (world up +z)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    up = np.cross(right, fwd)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    return m


def room_cameras(rng, n: int, width: int, height: int, prims: torch.Tensor | None = None):
    """``n`` cameras inside the room looking at its middle: c2w [n, 4, 4], intrinsics [n, 4] (fx, fy, cx, cy).
    With ``prims``, camera centres are redrawn until they are at least 3 cm outside every solid."""
    c2w, k = [], []
    f = 0.8 * width
    for _ in range(n):
        for _ in range(100):
            a = rng.uniform(0, 2 * math.pi)
            r = rng.uniform(0.25, 0.4)
            eye = np.array([r * math.cos(a), r * math.sin(a), rng.uniform(-0.2, -0.08)])
            if prims is None or float(scene_sdf(prims, torch.tensor(eye)[None])[0]) > 0.03:
                break
        target = np.array([*rng.uniform(-0.15, 0.15, 2), FLOOR_Z + rng.uniform(0.03, 0.15)])
        c2w.append(look_at(eye, target))
        k.append([f, f, width / 2, height / 2])
    return np.stack(c2w), np.array(k)


def cast_views(prims: torch.Tensor, c2w: np.ndarray, intr: np.ndarray, width: int, height: int) -> dict:
    """Ray cast views: ``t`` [V, H*W] ray distance (inf: miss), ``pts``, ``dirs`` [V, H*W, 3], ``zdir`` [V, H*W]
    (d . camera forward: plane depth = t * zdir)."""
    from nfkit.cameras import Cameras, image_rays

    cams = Cameras(torch.tensor(c2w), *[torch.tensor(intr[:, i]) for i in range(4)], width, height)
    o, d = zip(*[image_rays(cams, i) for i in range(len(c2w))])
    o, d = torch.stack(o).double(), torch.stack(d).double()
    t = sphere_trace(prims, o.reshape(-1, 3), d.reshape(-1, 3)).reshape(o.shape[:2])
    fwd = -torch.tensor(c2w[:, :3, 2])[:, None, :]
    zdir = (d * fwd).sum(-1)
    return {"t": t, "pts": o + torch.where(torch.isfinite(t), t, torch.zeros_like(t))[..., None] * d, "dirs": d,
            "zdir": zdir}


def shade(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    return np.clip(albedo * (0.4 + 0.6 * np.clip(normals @ LIGHT, 0, 1))[:, None], 0, 1)


def make_room(seed: int, index: int, cfg: RoomsConfig) -> dict:
    """One scene (see the module docstring) from ``(seed, index)``; numpy arrays."""
    rng = np.random.default_rng([seed, index])
    prims_np = room_primitives(rng)
    prims = torch.tensor(prims_np)
    n_obj = int(prims_np[:, 2].max()) + 1
    labels_of_obj = np.zeros(n_obj, dtype=np.int64)
    labels_of_obj[prims_np[:, 2].astype(int)] = prims_np[:, 1].astype(int)
    albedo = 0.35 * TINTS[labels_of_obj] + 0.65 * rng.uniform(0.15, 0.95, (n_obj, 3))
    c2w, intr = room_cameras(rng, max(SCAN_VIEWS, cfg.n_frames), cfg.width, cfg.height, prims)
    v = cast_views(prims, c2w, intr, cfg.width, cfg.height)
    ok = torch.isfinite(v["t"])
    pts = v["pts"][ok]
    _, near = scene_sdf(prims, pts)
    obj = prims_np[near.numpy(), 2].astype(int)
    nrm = sdf_normals(prims, pts).numpy()
    col = np.clip(shade(albedo[obj], nrm) + rng.normal(0, 0.05, (len(obj), 3)), 0, 1)
    pick = uniform_subsample(pts.numpy(), cfg.n_points, rng)
    n_pix = cfg.width * cfg.height
    flat_view = np.repeat(np.arange(len(c2w)), n_pix)[ok.reshape(-1).numpy()]
    nf = cfg.n_frames
    rgb = np.zeros((nf, n_pix, 3))
    seg = np.full((nf, n_pix), 255, dtype=np.uint8)
    in_frame = flat_view < nf
    pix = np.nonzero(ok[:nf].reshape(-1).numpy())[0]
    rgb.reshape(-1, 3)[pix] = col[in_frame]
    seg.reshape(-1)[pix] = labels_of_obj[obj[in_frame]]
    depth = (v["t"][:nf] * v["zdir"][:nf]).numpy()
    depth[~(np.isfinite(depth) & (depth > 0))] = 0.0
    shape = (nf, cfg.height, cfg.width)
    return {"points": pts.numpy()[pick].astype(np.float32), "colors": col[pick].astype(np.float32),
            "normals": nrm[pick].astype(np.float32), "labels": labels_of_obj[obj[pick]].astype(np.uint8),
            "rgb": (rgb.reshape(*shape, 3) * 255 + 0.5).astype(np.uint8),
            "depth": depth.reshape(shape).astype(np.float32),
            "seg": seg.reshape(shape), "c2w": c2w[:nf].astype(np.float32), "intrinsics": intr[:nf].astype(np.float32)}


def uniform_subsample(pts: np.ndarray, n: int, rng, cell: float = 0.01) -> np.ndarray:
    """Indices of ``n`` points [n] spread evenly over the surface: one random hit per ``cell`` voxel (a scan's
    density falls with distance; a fused mesh's does not), then ``n`` of those at random (with repetition when
    fewer)."""
    order = rng.permutation(len(pts))
    _, first = np.unique(np.floor(pts[order] / cell).astype(np.int64), axis=0, return_index=True)
    keep = order[first]
    return rng.choice(keep, size=n, replace=len(keep) < n)


KEYS = ("points", "colors", "normals", "labels", "rgb", "depth", "seg", "c2w", "intrinsics")


def write_rooms(cfg: RoomsConfig, progress=None) -> dict:
    """Generate and write both splits (see the module docstring); returns the counts."""
    from safetensors.numpy import save_file

    from nfkit.atomic import atomic_path, write_json_atomic

    if cfg.train < 1 or cfg.test < 1 or cfg.n_points < 1 or cfg.n_frames < 1:
        raise NfkitError("--train, --test, --n-points and --n-frames must be positive")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NfkitError(f"--out {out}: is a file; expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    index = 0
    for split, n in (("train", cfg.train), ("test", cfg.test)):
        scenes = []
        for _ in range(n):
            scenes.append(make_room(cfg.seed, index, cfg))
            index += 1
            if progress is not None:
                progress.update(1)
        arrays = {k: np.ascontiguousarray(np.stack([s[k] for s in scenes])) for k in KEYS}
        with atomic_path(out / f"{split}.safetensors") as tmp:
            save_file(arrays, str(tmp))
    meta = {"format": FORMAT, "config": asdict(cfg), "classes": list(CLASSES), "scenes": {"train": cfg.train,
                                                                                            "test": cfg.test}}
    write_json_atomic(out / "rooms.json", meta)
    return meta["scenes"]


def check_clouds(points: torch.Tensor, where: str) -> None:
    """A point cloud batch [S, N, 3] must hold points, all finite: else one-line NfkitError."""
    if points.ndim != 3 or points.shape[-1] != 3:
        raise DatasetError(f"{where}: points of shape {tuple(points.shape)}; expected [scenes, N, 3]")
    if points.shape[0] == 0 or points.shape[1] == 0:
        raise DatasetError(f"{where}: the point cloud has no points")
    bad = ~torch.isfinite(points).all(-1).all(-1)
    if bool(bad.any()):
        raise DatasetError(f"{where}: scene {int(bad.nonzero()[0, 0])}'s point cloud has NaN or infinite "
                           "coordinates")


def load_rooms(data, split: str) -> dict:
    """Tensors of one split (float32 colours and RGB in [0, 1], long labels), checked; see the module docstring."""
    from safetensors.numpy import load_file

    root = Path(data)
    meta_path, path = root / "rooms.json", root / f"{split}.safetensors"
    if not meta_path.is_file() or not path.is_file():
        raise DatasetError(f"{root}: not a rooms folder (expected rooms.json and {split}.safetensors; "
                           "write one with nfkit ponder make-rooms)")
    try:
        meta = json.loads(meta_path.read_text())
        arrays = load_file(str(path))
    except Exception as e:  # safetensors raises its own types for truncated files
        raise DatasetError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    missing = [k for k in KEYS if k not in arrays]
    if meta.get("format") != FORMAT or missing:
        raise DatasetError(f"{path}: not a {FORMAT} file (missing {missing})")
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    check_clouds(t["points"], str(path))
    t["labels"], t["seg"] = t["labels"].long(), t["seg"].long()
    t["rgb"] = t["rgb"].float() / 255.0
    t["classes"] = meta.get("classes", list(CLASSES))
    return t
