"""Camera paths (keyframes -> smooth trajectory -> mp4) and the frame renderer shared with the viewer.

``nfkit render FIELD --path path.json --out video.mp4``.

Path file (JSON, ``version`` 1)::

    {"version": 1, "fov_deg": 50.0, "width": 640, "height": 360, "fps": 24, "seconds": 4.0,
     "keyframes": [{"c2w": [[...4 floats...] x 4]}, ...]}

``c2w`` is a 4x4 camera-to-world matrix in the field's normalised world, **OpenGL** camera axes (+X right, +Y up,
looking down -Z), as :class:`nfkit.renderers.Cameras`. ``fov_deg`` is the vertical field of view.

Viser's cameras use **OpenCV** axes (+X right, +Y down, looking down +Z) with ``wxyz`` = the rotation
``R_world_camera`` and ``position`` = the camera centre, so ``c2w_gl = [R_cv @ diag(1, -1, -1) | position]``
(:func:`c2w_from_viser`, :func:`viser_from_c2w`).

Interpolation: positions by a uniform Catmull-Rom spline through the keyframes (end points repeated),
rotations by slerp between consecutive keyframes, both on the same per-segment parameter; frames are spread
evenly over the keyframe segments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np
import torch

from nfkit.errors import NfkitError

MODES = ("rgb", "depth", "opacity", "normals")
_FLIP = np.diag([1.0, -1.0, -1.0])  # OpenGL <-> OpenCV camera axes (its own inverse)


# ---------------------------------------------------------------- rotations and camera conventions
def quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """[3, 3] rotation -> unit quaternion ``(w, x, y, z)`` with w >= 0 (Shepperd's method)."""
    r = np.asarray(r, dtype=np.float64)
    tr = np.trace(r)
    cands = [tr, r[0, 0], r[1, 1], r[2, 2]]
    k = int(np.argmax(cands))
    if k == 0:
        s = 2 * math.sqrt(max(tr + 1, 1e-12))
        q = [s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i, j, m = k - 1, k % 3, (k + 1) % 3
        s = 2 * math.sqrt(max(1 + r[i, i] - r[j, j] - r[m, m], 1e-12))
        q = [0.0] * 4
        q[0] = (r[m, j] - r[j, m]) / s
        q[1 + i] = s / 4
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + m] = (r[m, i] + r[i, m]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def matrix_from_quat(q: np.ndarray) -> np.ndarray:
    """Quaternion ``(w, x, y, z)`` (any norm) -> [3, 3] rotation."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (shortest arc)."""
    q0, q1 = np.asarray(q0, float), np.asarray(q1, float)
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(min(dot, 1.0))
    return (math.sin((1 - t) * th) * q0 + math.sin(t * th) * q1) / math.sin(th)


def c2w_from_viser(wxyz, position) -> np.ndarray:
    """Viser camera (OpenCV axes; ``wxyz`` = R_world_camera, ``position`` in world) -> [4, 4] OpenGL c2w."""
    m = np.eye(4)
    m[:3, :3] = matrix_from_quat(wxyz) @ _FLIP
    m[:3, 3] = np.asarray(position, dtype=np.float64)
    return m


def viser_from_c2w(c2w) -> tuple[np.ndarray, np.ndarray]:
    """[4, 4] OpenGL c2w -> (``wxyz`` [4], ``position`` [3]) of a viser camera / frustum (OpenCV axes)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return quat_from_matrix(c2w[:3, :3] @ _FLIP), c2w[:3, 3].copy()


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[4, 4] OpenGL c2w of a camera at ``eye`` looking at ``target`` with ``up`` roughly up in the image."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-9:
        r = np.cross(f, [1.0, 0.0, 0.0] if abs(f[0]) < 0.9 else [0.0, 1.0, 0.0])
    r /= np.linalg.norm(r)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, np.cross(r, f), -f, eye
    return m


# ---------------------------------------------------------------- path files
@dataclass
class CameraPath:
    """Keyframes ``[K, 4, 4]`` OpenGL c2w plus the video settings (vertical ``fov_deg``, pixels, fps, seconds)."""

    keyframes: list = dc_field(default_factory=list)
    fov_deg: float = 50.0
    width: int = 640
    height: int = 360
    fps: float = 24.0
    seconds: float = 4.0

    def n_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    def to_json(self) -> dict:
        return {"version": 1, "fov_deg": self.fov_deg, "width": self.width, "height": self.height, "fps": self.fps,
                "seconds": self.seconds,
                "keyframes": [{"c2w": np.asarray(k, dtype=float).round(8).tolist()} for k in self.keyframes]}


def _num(d: dict, key: str, lo: float, hi: float, where: str, integer: bool = False) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise NfkitError(f"{where}: {key!r} must be a number in [{lo}, {hi}], got {v!r}")
    if integer and int(v) != v:
        raise NfkitError(f"{where}: {key!r} must be an integer, got {v!r}")
    return int(v) if integer else float(v)


def path_from_json(d, where: str = "camera path") -> CameraPath:
    """Validate a decoded path file; any problem -> :class:`NfkitError` naming ``where`` and the key."""
    if not isinstance(d, dict):
        raise NfkitError(f"{where}: expected a JSON object")
    if d.get("version") != 1:
        raise NfkitError(f"{where}: unsupported camera path version {d.get('version')!r} (expected 1)")
    kfs = d.get("keyframes")
    if not isinstance(kfs, list) or not kfs:
        raise NfkitError(f"{where}: 'keyframes' must be a non-empty list")
    mats = []
    for i, k in enumerate(kfs):
        try:
            m = np.asarray(k["c2w"], dtype=np.float64)
        except (TypeError, KeyError, ValueError):
            raise NfkitError(f"{where}: keyframes[{i}] needs a 'c2w' 4x4 matrix of numbers") from None
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise NfkitError(f"{where}: keyframes[{i}].c2w must be a finite 4x4 matrix, got shape {m.shape}")
        r = m[:3, :3]
        if not np.allclose(r.T @ r, np.eye(3), atol=1e-3) or np.linalg.det(r) < 0:
            raise NfkitError(f"{where}: keyframes[{i}].c2w rotation is not orthonormal")
        mats.append(m)
    return CameraPath(mats, _num(d, "fov_deg", 1, 170, where), _num(d, "width", 8, 8192, where, True),
                      _num(d, "height", 8, 8192, where, True), _num(d, "fps", 1, 240, where),
                      _num(d, "seconds", 0.01, 36000, where))


def load_path(path) -> CameraPath:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise NfkitError(f"{p}: no such camera path file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NfkitError(f"{p}: not a camera path JSON file ({str(e)[:100]})") from None
    return path_from_json(d, str(p))


def save_path(path, cam_path: CameraPath) -> Path:
    """Atomic write (temporary file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(cam_path.to_json(), indent=1))
    os.replace(tmp, p)
    return p


def interpolate(cam_path: CameraPath, n_frames: int | None = None) -> np.ndarray:
    """``[n_frames, 4, 4]`` OpenGL c2w along the path (first and last frames are the end keyframes)."""
    keys = np.asarray(cam_path.keyframes, dtype=np.float64)
    n = n_frames or cam_path.n_frames()
    if len(keys) == 1 or n == 1:
        return np.repeat(keys[:1], n, 0)
    pos = keys[:, :3, 3]
    quats = [quat_from_matrix(k[:3, :3]) for k in keys]
    ext = np.concatenate([pos[:1], pos, pos[-1:]])
    out = np.tile(np.eye(4), (n, 1, 1))
    for f, s in enumerate(np.linspace(0, len(keys) - 1, n)):
        j = min(int(s), len(keys) - 2)
        u = s - j
        p0, p1, p2, p3 = ext[j], ext[j + 1], ext[j + 2], ext[j + 3]
        out[f, :3, 3] = 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u * u
                               + (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)
        out[f, :3, :3] = matrix_from_quat(slerp(quats[j], quats[j + 1], u))
    return out


# ---------------------------------------------------------------- rendering one view in any mode
class CroppedField:
    """A field seen through a crop box ``[lo, hi]`` (world): zero density (SDF: far outside) beyond it.
    Keeps the optional ``geometry``/``color`` fast path of the wrapped field."""

    def __init__(self, field, lo, hi):
        self.field, self.kind, self.aabb = field, getattr(field, "kind", "density"), field.aabb
        self.lo, self.hi = torch.as_tensor(lo).float(), torch.as_tensor(hi).float()
        if hasattr(field, "geometry") and hasattr(field, "color"):
            self.geometry, self.color = self._geometry, field.color

    def _cut(self, x, s):
        inside = ((x >= self.lo) & (x <= self.hi)).all(-1)
        return torch.where(inside, s, torch.full_like(s, 1e3 if self.kind == "sdf" else 0.0))

    def density(self, x):
        return self._cut(x, self.field.density(x))

    def _geometry(self, x):
        s, feats = self.field.geometry(x)
        return self._cut(x, s), feats

    def __call__(self, x, d):
        out = self.field(x, d)
        out.density = self._cut(x, out.density)
        return out


def cropped_grid(grid, lo, hi):
    """A copy of the occupancy grid with the cells that do not touch the box ``[lo, hi]`` emptied."""
    from nfkit.renderers import OccupancyGrid

    r = grid.resolution
    g = OccupancyGrid(grid.aabb, r)
    a0, a1 = grid.aabb[0], grid.aabb[1]
    cell = (a1 - a0) / r
    idx = torch.arange(r, dtype=torch.float32)
    ok = [((a0[k] + idx * cell[k]) <= float(hi[k])) & ((a0[k] + (idx + 1) * cell[k]) >= float(lo[k])) for k in range(3)]
    mask = (ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]).reshape(-1)
    g.density.copy_(grid.density)
    g.binary.copy_(grid.binary & mask.to(grid.binary.device))
    return g


def colormap(x: torch.Tensor) -> torch.Tensor:
    """[...] values in [0, 1] -> [..., 3] RGB (dark blue -> teal -> yellow, perceptually ordered)."""
    stops = torch.tensor([[0.05, 0.03, 0.25], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                          [0.99, 0.91, 0.14]])
    t = x.clamp(0, 1) * (len(stops) - 1)
    i = t.floor().long().clamp(max=len(stops) - 2)
    w = (t - i)[..., None]
    return stops[i] * (1 - w) + stops[i + 1] * w


@torch.no_grad()
def _normals(field, pts: torch.Tensor, eps: float) -> torch.Tensor:
    """World normals [N, 3] at pts [N, 3] by central differences of ``field.density`` (an SDF for kind sdf)."""
    offs = torch.eye(3) * eps
    x = torch.cat([pts + o for o in offs] + [pts - o for o in offs])
    s = field.density(x).float().reshape(6, -1)
    g = (s[:3] - s[3:]).T
    g = g if getattr(field, "kind", "density") == "sdf" else -g
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def render_view(field, grid, opts, c2w, width: int, height: int, fov_deg: float, mode: str = "rgb",
                background=(1.0, 1.0, 1.0), crop=None, should_stop=None, rows_per_chunk: int | None = None):
    """Render one view as ``uint8 [height, width, 3]`` (numpy), or ``None`` if ``should_stop()`` turned true.

    c2w: [4, 4] OpenGL camera-to-world (numpy or torch); fov_deg: vertical; mode: one of :data:`MODES`;
    background: RGB in [0, 1]; crop: ``(lo [3], hi [3])`` world box or None. The image is rendered in strips of
    rows (each a camera with a shifted principal point) so that ``should_stop`` is polled between strips.
    """
    from nfkit.renderers import camera_from_pose, image_rays, render_image

    if mode not in MODES:
        raise NfkitError(f"unknown render mode {mode!r}; expected one of {', '.join(MODES)}")
    if crop is not None:
        field, grid = CroppedField(field, *crop), cropped_grid(grid, *crop)
    cam = camera_from_pose(torch.as_tensor(np.asarray(c2w), dtype=torch.float32), width, height, fov_deg)
    bg = torch.tensor([float(c) for c in background])
    rows = rows_per_chunk or max(1, (1 << 14) // width)
    eps = float((field.aabb[1] - field.aabb[0]).max()) / 512
    strips = []
    for r0 in range(0, height, rows):
        if should_stop is not None and should_stop():
            return None
        h = min(rows, height - r0)
        strip = type(cam)(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy - r0, width, h)
        out = render_image(field, grid, strip, 0, opts, bg if mode == "rgb" else None)
        acc = out["opacity"].clamp(0, 1)[..., None]
        if mode == "rgb":
            img = out["rgb"]
        elif mode == "opacity":
            img = acc.expand(-1, -1, 3)
        elif mode == "depth":
            img = out["depth"] / out["opacity"].clamp_min(1e-6)  # expected depth of the visible surface
            strips.append((img, acc))
            continue
        else:
            o, d = image_rays(strip, 0)
            t = (out["depth"] / out["opacity"].clamp_min(1e-6)).reshape(-1)
            n = _normals(field, o + d * t[:, None], eps).reshape(h, width, 3)
            img = (n * 0.5 + 0.5) * acc + bg * (1 - acc)
        strips.append(img)
    if mode == "depth":  # normalise over the whole frame (2nd-98th percentile of the covered pixels)
        depth = torch.cat([s[0] for s in strips])
        acc = torch.cat([s[1] for s in strips])
        valid = depth[acc[..., 0] > 0.5]
        lo, hi = (torch.quantile(valid[:: max(1, valid.numel() // 10000)], torch.tensor([0.02, 0.98])).tolist()
                  if valid.numel() else (0.0, 1.0))
        img = colormap((depth - lo) / max(hi - lo, 1e-6)) * acc + bg * (1 - acc)
    else:
        img = torch.cat(strips)
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


# ---------------------------------------------------------------- video
def render_video(renderable, cam_path: CameraPath, out, mode: str = "rgb", background=(1.0, 1.0, 1.0),
                 progress: bool = True, should_stop=None, on_frame=None) -> Path | None:
    """Render the path to an mp4 (libx264 via imageio-ffmpeg), written atomically. ``renderable`` is
    ``(field, grid, opts)``. Odd sizes are rounded up to even (yuv420p). Returns the path, or None if stopped.
    ``on_frame(i, n)`` is called after each frame."""
    import imageio.v2 as imageio
    from tqdm import tqdm

    field, grid, opts = renderable
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    w, h = cam_path.width + cam_path.width % 2, cam_path.height + cam_path.height % 2
    poses = interpolate(cam_path)
    try:
        writer = imageio.get_writer(str(tmp), format="FFMPEG", fps=cam_path.fps, codec="libx264", quality=8,
                                    macro_block_size=1, pixelformat="yuv420p")
    except Exception as e:  # noqa: BLE001  (imageio raises several types for a bad target)
        raise NfkitError(f"{out}: cannot write a video there ({str(e)[:100]})") from None
    ok = False
    try:
        for i, c2w in enumerate(tqdm(poses, disable=not progress, desc="render", unit="frame", dynamic_ncols=True)):
            img = render_view(field, grid, opts, c2w, w, h, cam_path.fov_deg, mode, background, None, should_stop)
            if img is None:
                return None
            writer.append_data(img)
            if on_frame is not None:
                on_frame(i + 1, len(poses))
        ok = True
    finally:
        writer.close()
        if ok:
            os.replace(tmp, out)
        else:
            tmp.unlink(missing_ok=True)
    return out


def parse_color(text: str, where: str = "--background") -> tuple[float, float, float]:
    """``"1,1,1"`` (floats in [0, 1]) or ``"255,255,255"`` -> RGB in [0, 1]."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(math.isfinite(v) and 0 <= v <= 255 for v in vals):
        raise NfkitError(f"{where}: expected three numbers R,G,B in [0, 1] or [0, 255], got {text!r}")
    scale = 255.0 if max(vals) > 1 else 1.0
    return tuple(v / scale for v in vals)  # type: ignore[return-value]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit render", description="render a camera path to mp4")
    parser.add_argument("field", help="field file (.safetensors from nfkit fit)")
    parser.add_argument("--path", required=True, help="camera path JSON (from the viewer's 'Save path')")
    parser.add_argument("--out", required=True, help="output video (.mp4)")
    parser.add_argument("--mode", default="rgb", choices=MODES, help="what to render (default: rgb)")
    parser.add_argument("--background", default="1,1,1", help="background colour R,G,B (default: 1,1,1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(ns: argparse.Namespace) -> Path:
    from nfkit.renderers import load_renderable

    if Path(ns.out).suffix.lower() != ".mp4":
        raise NfkitError(f"--out {ns.out}: expected a .mp4 file name")
    background = parse_color(ns.background)
    cam_path = load_path(ns.path)
    field, grid, opts, _ = load_renderable(ns.field)
    out = render_video((field, grid, opts), cam_path, ns.out, ns.mode, background, progress=not ns.quiet)
    print(f"nfkit render: {cam_path.n_frames()} frames {cam_path.width}x{cam_path.height} -> {out}")
    return out


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    import sys

    sys.exit(main())
