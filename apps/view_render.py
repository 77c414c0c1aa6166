"""Rendering one view for the viewer and for videos, and the camera conventions between viser and nfkit.

Cameras: nfkit's ``c2w`` is a 4x4 camera-to-world matrix in the field's normalised world with **OpenGL** camera
axes (+X right, +Y up, looking down -Z), as :class:`nfkit.renderers.Cameras`. Viser's cameras (the browser's view,
frusta) use **OpenCV** axes (+X right, +Y down, looking down +Z) with ``wxyz`` = the rotation ``R_world_camera``
and ``position`` = the camera centre, so ``c2w_gl = [R_cv @ diag(1, -1, -1) | position]``
(:func:`c2w_from_viser`, :func:`viser_from_c2w`). ``fov`` is always vertical.

Render modes (:data:`MODES`): ``rgb`` over a background colour; ``depth`` (expected depth of the visible surface,
colour-mapped between the frame's 2nd and 98th percentiles); ``opacity``; ``normals`` (world normals shown as
``0.5 + 0.5 n``: for SDF fields the renderer's composited unit normals, for density fields central differences of
``field.density`` at the visible surface). A crop box
zeroes the density outside it (field, occupancy grid and density cache alike).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from nfkit.errors import NfkitError
from nfkit.fields.base import capabilities_of, kind_of
from nfkit.poses import matrix_from_quat, quat_from_matrix, slerp  # noqa: F401  (re-exported)
from nfkit.renderers.camera_range import look_at as camera_look_at

MODES = ("rgb", "depth", "opacity", "normals")
_FLIP = np.diag([1.0, -1.0, -1.0])  # OpenGL <-> OpenCV camera axes (its own inverse)


# ---------------------------------------------------------------- rotations and camera conventions
# quat_from_matrix, matrix_from_quat, slerp: scipy-based, in nfkit.poses (imported above)


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
    """[4, 4] OpenGL c2w (float64) of a camera at ``eye`` looking at ``target`` with ``up`` roughly up in the image
    (:func:`nfkit.renderers.camera_range.look_at` for one camera)."""
    eye, target = (torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(1, 3) for v in (eye, target))
    return camera_look_at(eye, target, tuple(float(u) for u in up))[0].numpy()


def camera_state(cam):
    """Validated snapshot of a viser camera: (c2w [4, 4] OpenGL, fov_y degrees, aspect, canvas height) or None."""
    try:
        wxyz = np.asarray(cam.wxyz, dtype=np.float64).reshape(4)
        pos = np.asarray(cam.position, dtype=np.float64).reshape(3)
        fov, w, h = float(cam.fov), int(cam.image_width), int(cam.image_height)
    except Exception:  # noqa: BLE001  (wrong types or shapes from a client)
        return None
    if not (np.isfinite(wxyz).all() and np.isfinite(pos).all() and np.linalg.norm(wxyz) > 1e-6):
        return None
    if not (0.01 < fov < 3.1 and 0 < w <= 16384 and 0 < h <= 16384):
        return None
    return c2w_from_viser(wxyz, pos), math.degrees(fov), w / h, h


class CroppedField:
    """A field seen through a crop box ``[lo, hi]`` (world): zero density (SDF: far outside) beyond it.
    Declares the wrapped field's kind and capabilities (``geometry``/``color`` fast path, view-dependent density)."""

    def __init__(self, field, lo, hi):
        self.field, self.kind, self.aabb = field, kind_of(field), field.aabb
        self.capabilities = capabilities_of(field)
        self.lo, self.hi = torch.as_tensor(lo).float(), torch.as_tensor(hi).float()
        self.background = getattr(field, "background", lambda d: None)  # what lies beyond is not cropped

    def _inside(self, x):
        return ((x >= self.lo.to(x.device)) & (x <= self.hi.to(x.device))).all(-1)

    def _cut(self, x, s):
        return torch.where(self._inside(x), s, torch.full_like(s, 1e3 if self.kind == "sdf" else 0.0))

    def density(self, x):
        return self._cut(x, self.field.density(x))

    def density_seen(self, x, d):
        return self._cut(x, self.field.density_seen(x, d))

    def sdf(self, x):
        return self._cut(x, self.field.sdf(x))

    def sdf_and_gradient(self, x, create_graph=False):
        s, g = self.field.sdf_and_gradient(x, create_graph)
        return self._cut(x, s), g

    def surface(self):
        return self.field.surface()

    def geometry(self, x):
        s, feats = self.field.geometry(x)
        return self._cut(x, s), feats

    def color(self, feats, d):
        return self.field.color(feats, d)

    def __call__(self, x, d):
        out = self.field(x, d)
        if out.density is not None:
            out.density = self._cut(x, out.density)
        if out.sdf is not None:
            out.sdf = self._cut(x, out.sdf)
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


_CROP_MEMO: dict = {}


def cropped_cache(cache, lo, hi):
    """A :class:`~nfkit.renderers.DensityCache` with the lattice vertices outside ``[lo, hi]`` zeroed (the last
    one is remembered: the viewer asks for the same crop every frame)."""
    key = (id(cache), tuple(float(v) for v in lo), tuple(float(v) for v in hi))
    if key not in _CROP_MEMO:
        _CROP_MEMO.clear()
        _CROP_MEMO[key] = (cache, _cropped_cache(cache, lo, hi))  # holding `cache` keeps its id unique
    return _CROP_MEMO[key][1]


def _cropped_cache(cache, lo, hi):
    r = cache.values.shape[-1]
    lin = [torch.linspace(float(cache.aabb[0, k]), float(cache.aabb[1, k]), r) for k in range(3)]
    ok = [(lin[k] >= float(lo[k])) & (lin[k] <= float(hi[k])) for k in range(3)]
    mask = ok[2][:, None, None] & ok[1][None, :, None] & ok[0][None, None, :]  # values are indexed (z, y, x)
    return type(cache)(cache.values * mask, cache.aabb)


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
    """World normals [N, 3] at pts [N, 3] by central differences of ``field.density`` (``field.sdf`` for kind sdf)."""
    offs = torch.eye(3) * eps
    x = torch.cat([pts + o for o in offs] + [pts - o for o in offs])
    sdf = kind_of(field) == "sdf"
    s = (field.sdf(x) if sdf else field.density(x)).float().reshape(6, -1)
    g = (s[:3] - s[3:]).T
    g = g if sdf else -g
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def render_view(field, grid, opts, c2w, width: int, height: int, fov_deg: float, mode: str = "rgb",
                background=(1.0, 1.0, 1.0), crop=None, should_stop=None, rows_per_chunk: int | None = None,
                cache=None, with_depth: bool = False):
    """Render one view as ``uint8 [height, width, 3]`` (numpy), or ``None`` if ``should_stop()`` turned true.

    c2w: [4, 4] OpenGL camera-to-world (numpy or torch); fov_deg: vertical; mode: one of :data:`MODES`;
    background: RGB in [0, 1], used where the field has no background model (``field.background``, unbounded
    captures; rgb mode draws the field's own background then); crop: ``(lo [3], hi [3])`` world box or None.
    The image is rendered in strips of rows (each a camera with a shifted principal point) so that
    ``should_stop`` is polled between strips.
    cache: optional :class:`~nfkit.renderers.DensityCache` (viewer mode, see ``render_image``).
    with_depth: also return the view-space z-depth ``float32 [height, width]`` of the visible surface (``far``
    = 100 where opacity < 0.5), which viser uses to let its 3D objects be hidden behind the field.
    """
    from nfkit.renderers import camera_from_pose, image_rays, render_image
    from nfkit.renderers.background import render_image_bg

    if mode not in MODES:
        raise NfkitError(f"unknown render mode {mode!r}; expected one of {', '.join(MODES)}")
    if crop is not None:
        field, grid = CroppedField(field, *crop), cropped_grid(grid, *crop)
        cache = None if cache is None else cropped_cache(cache, *crop)
    cam = camera_from_pose(torch.as_tensor(np.asarray(c2w), dtype=torch.float32), width, height, fov_deg)
    bg = torch.tensor([float(c) for c in background])
    rows = rows_per_chunk or max(1, (1 << 13) // width)
    eps = float((field.aabb[1] - field.aabb[0]).max()) / 256  # finite-difference step of the normals
    strips, dist, accs = [], [], []
    for r0 in range(0, height, rows):
        if should_stop is not None and should_stop():
            return None
        h = min(rows, height - r0)
        strip = type(cam)(cam.c2w, cam.fx, cam.fy, cam.cx, cam.cy - r0, width, h)
        kw = {} if cache is None else {"cache": cache}
        if mode == "rgb":  # the field's own background where it has one
            out = render_image_bg(field, grid, strip, 0, opts, bg, **kw)
        else:
            out = render_image(field, grid, strip, 0, opts, None, **kw)
        acc = out["opacity"].clamp(0, 1)[..., None]
        t = out["depth"] / out["opacity"].clamp_min(1e-6)  # distance along the ray to the visible surface
        dist.append(t)
        accs.append(acc)
        if mode == "rgb":
            strips.append(out["rgb"])
        elif mode == "opacity":
            strips.append(acc.expand(-1, -1, 3))
        elif mode == "normals" and "normals" in out:  # SDF fields: the renderer's composited normals
            n = torch.nn.functional.normalize(out["normals"], dim=-1)
            strips.append((n * 0.5 + 0.5) * acc + bg * (1 - acc))
        elif mode == "normals":
            o, d = image_rays(strip, 0)
            n = _normals(field, o + d * t.reshape(-1, 1), eps).reshape(h, width, 3)
            strips.append((n * 0.5 + 0.5) * acc + bg * (1 - acc))
    dist, acc = torch.cat(dist), torch.cat(accs)
    if mode == "depth":  # normalise over the whole frame (2nd-98th percentile of the covered pixels)
        valid = dist[acc[..., 0] > 0.5]
        lo, hi = (torch.quantile(valid[:: max(1, valid.numel() // 10000)], torch.tensor([0.02, 0.98])).tolist()
                  if valid.numel() else (0.0, 1.0))
        img = colormap((dist - lo) / max(hi - lo, 1e-6)) * acc + bg * (1 - acc)
    else:
        img = torch.cat(strips)
    img = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    if not with_depth:
        return img
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    x, y = (u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy
    z = dist / torch.sqrt(1 + x * x + y * y)  # ray distance -> view-space depth
    return img, torch.where(acc[..., 0] > 0.5, z, torch.full_like(z, 100.0)).numpy().astype(np.float32)
