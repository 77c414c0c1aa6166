"""Camera-pose math shared by the apps and the datasets: rotations as quaternions, slerp, look-at, smooth paths
through keyframes, orbits around a capture and cameras on a sphere.

Conventions: ``c2w`` is a [4, 4] (or [N, 4, 4]) float64 camera-to-world matrix with **OpenGL** camera axes
(+X right, +Y up, looking down -Z), as :class:`nfkit.cameras.Cameras`.  Quaternions are ``(w, x, y, z)`` (scalar
first, viser's ``wxyz``).  Rotations and spherical interpolation are scipy's
(:class:`scipy.spatial.transform.Rotation`, :class:`~scipy.spatial.transform.Slerp`).
"""
from __future__ import annotations

import math

import numpy as np


def _rotation():
    from scipy.spatial.transform import Rotation

    return Rotation


# ---------------------------------------------------------------- rotations
def quat_from_matrix(r) -> np.ndarray:
    """[3, 3] rotation -> unit quaternion ``(w, x, y, z)`` with w >= 0."""
    xyzw = _rotation().from_matrix(np.asarray(r, dtype=np.float64)).as_quat()
    q = np.concatenate([xyzw[..., 3:], xyzw[..., :3]], -1)
    return q if q[..., 0] >= 0 else -q


def matrix_from_quat(q) -> np.ndarray:
    """Quaternion ``(w, x, y, z)`` (any non-zero norm) -> [3, 3] rotation."""
    w, x, y, z = np.asarray(q, dtype=np.float64)
    return _rotation().from_quat([x, y, z, w]).as_matrix()


def slerp(q0, q1, t: float) -> np.ndarray:
    """Spherical interpolation (shortest arc) of quaternions ``(w, x, y, z)``: ``t`` = 0 gives ``q0``, 1 ``q1``
    (as unit quaternions with w >= 0)."""
    from scipy.spatial.transform import Slerp

    rots = _rotation().from_matrix(np.stack([matrix_from_quat(q0), matrix_from_quat(q1)]))
    return quat_from_matrix(Slerp([0.0, 1.0], rots)([float(t)]).as_matrix()[0])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Cameras at ``eye`` [..., 3] looking at ``target`` [..., 3] -> c2w [..., 4, 4] float64 (OpenGL: -Z towards
    the target, +Y as close to ``up`` as possible; looking straight along ``up``, +X is world X)."""
    eye, target = np.broadcast_arrays(np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64))
    z = eye - target
    z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    x = np.cross(np.broadcast_to(np.asarray(up, dtype=np.float64), z.shape), z)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    x = np.where(n < 1e-6, np.array([1.0, 0.0, 0.0]), x / np.maximum(n, 1e-12))
    y = np.cross(z, x)
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def is_rigid(c2w, atol: float = 1e-3) -> np.ndarray:
    """c2w [..., 4, 4] -> bool [...]: rotation orthonormal within ``atol``, determinant +1, bottom row 0 0 0 1."""
    m = np.asarray(c2w, dtype=np.float64)
    r = m[..., :3, :3]
    ortho = np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)).max(axis=(-2, -1)) <= atol
    det = np.abs(np.linalg.det(r) - 1.0) <= 3 * atol
    bottom = np.abs(m[..., 3, :] - [0.0, 0.0, 0.0, 1.0]).max(axis=-1) <= 1e-6
    return ortho & det & bottom & np.isfinite(m).all(axis=(-2, -1))


# ---------------------------------------------------------------- paths through keyframes
def catmull_rom(points: np.ndarray, s) -> np.ndarray:
    """Uniform Catmull-Rom spline through ``points`` [K, D] (end points repeated) at parameters ``s`` [F] in
    [0, K - 1] (integer ``s`` hits the keyframes) -> [F, D]."""
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    ext = np.concatenate([p[:1], p, p[-1:]])
    j = np.minimum(s.astype(int), len(p) - 2)
    u = (s - j)[:, None]
    p0, p1, p2, p3 = ext[j], ext[j + 1], ext[j + 2], ext[j + 3]
    return 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2
                  + (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)


def interpolate_poses(keyframes, n_frames: int) -> np.ndarray:
    """Keyframes [K, 4, 4] c2w -> [n_frames, 4, 4]: positions on a Catmull-Rom spline, rotations by slerp between
    consecutive keyframes, both on the same per-segment parameter; frames spread evenly over the segments, the
    first and last frames are the end keyframes."""
    from scipy.spatial.transform import Slerp

    keys = np.asarray(keyframes, dtype=np.float64)
    if len(keys) == 1 or n_frames == 1:
        return np.repeat(keys[:1], n_frames, 0)
    s = np.linspace(0, len(keys) - 1, n_frames)
    out = np.tile(np.eye(4), (n_frames, 1, 1))
    out[:, :3, 3] = catmull_rom(keys[:, :3, 3], s)
    rots = _rotation().from_matrix(keys[:, :3, :3])
    out[:, :3, :3] = Slerp(np.arange(len(keys), dtype=np.float64), rots)(s).as_matrix()
    return out


# ---------------------------------------------------------------- orbits and spheres
def covered_arc(az) -> tuple[float, float]:
    """Azimuths [N] (radians) -> (start, length) of the smallest arc holding them all (the circle minus the
    largest gap between neighbours); length 0 for a single camera."""
    a = np.sort(np.mod(np.asarray(az, dtype=np.float64), 2 * math.pi))
    if len(a) < 2:
        return float(a[0]) if len(a) else 0.0, 0.0
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    j = int(np.argmax(gaps))
    start = float(a[(j + 1) % len(a)])
    return (start if start <= math.pi else start - 2 * math.pi), float(2 * math.pi - gaps[j])


FULL_TURN_ARC = math.radians(300)


def _orbit_frame(c2w: np.ndarray, centre: np.ndarray):
    """(up, height, radius, e1, e2) of the orbit circle of training cameras ``c2w`` [N, 4, 4] around ``centre``."""
    up = c2w[:, :3, 1].mean(0)
    up = up / max(np.linalg.norm(up), 1e-12) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    rel = c2w[:, :3, 3] - centre
    height = float((rel @ up).mean())
    horiz = rel - (rel @ up)[:, None] * up
    radius = float(np.linalg.norm(horiz, axis=-1).mean())
    if radius < 1e-6:  # cameras straight above the centre: orbit at their distance
        radius = max(float(np.linalg.norm(rel, axis=-1).mean()), 1.0)
    e1 = horiz[0] if np.linalg.norm(horiz[0]) > 1e-6 else np.cross(up, [1.0, 0.0, 0.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.cross(up, [0.0, 1.0, 0.0])
    e1 = e1 / np.linalg.norm(e1)
    return up, height, radius, e1, np.cross(up, e1), horiz


def orbit_poses(train_c2w, n_frames: int = 48, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """train_c2w: [N, 4, 4] OpenGL c2w (normalised world) -> [n_frames, 4, 4] poses on one circle around ``centre``.

    up: the cameras' mean +Y; the circle lies at their mean height along ``up`` and mean horizontal distance.
    When their azimuths cover at least :data:`FULL_TURN_ARC` the orbit turns once starting at the first camera,
    otherwise it sweeps the covered arc and back (cosine-eased).  Every pose looks at ``centre``.
    """
    c2w = np.asarray(train_c2w, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    up, height, radius, e1, e2, horiz = _orbit_frame(c2w, centre)
    start, arc = covered_arc(np.arctan2(horiz @ e2, horiz @ e1))  # first camera at azimuth 0
    k = np.arange(n_frames)
    if arc >= FULL_TURN_ARC:
        a = 2 * math.pi * k / n_frames
    else:  # start -> start + arc -> start
        a = start + arc * 0.5 * (1 - np.cos(2 * math.pi * k / n_frames))
    eye = centre + height * up + radius * (np.cos(a)[:, None] * e1 + np.sin(a)[:, None] * e2)
    return look_at(eye, centre, up)


def fibonacci_directions(n: int) -> np.ndarray:
    """[n, 3] unit vectors spread evenly over the sphere (Fibonacci lattice, z from near +1 to near -1)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def sphere_poses(n: int, radius: float, centre=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[n, 4, 4] OpenGL c2w of cameras at ``centre + radius * fibonacci_directions(n)``, each looking at
    ``centre`` with ``up`` roughly up in the image."""
    centre = np.asarray(centre, dtype=np.float64)
    return look_at(centre + radius * fibonacci_directions(n), centre, up)
