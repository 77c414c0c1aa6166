"""An orbit video around the captured object: ``DIR/orbit.mp4`` after ``nfkit fit`` on a capture.

Geometry, all in the field's normalised world (OpenGL camera axes, see :mod:`nfkit.apps.camera_path`):

* centre: the origin -- the point closest to every training camera's optical axis, on which the capture's
  normalisation is centred (:func:`nfkit.datasets.normalize.focus_point`), i.e. what the cameras look at;
* up: the mean of the training cameras' up vectors (+Y columns of ``c2w``), unit length;
* the circle: in the plane perpendicular to ``up``, at the cameras' mean height above the centre along ``up``
  and their mean horizontal distance from it.  When the cameras' azimuths cover at least :data:`FULL_TURN_ARC`
  (the largest azimuth gap between neighbouring cameras is small) the video turns once, starting at the first
  camera; otherwise it sweeps the covered arc and back (smoothly, cosine-eased), since a hand-held capture that
  saw one side only has nothing trustworthy to show of the other;
* every frame looks at the centre; vertical field of view and aspect from the first training camera, the
  larger side at most ``max_side`` pixels.

Frames render through :func:`nfkit.apps.camera_path.render_video` (so the field's background model, when it
has one, fills the rays that leave the AABB).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nfkit.apps.camera_path import CameraPath, render_video
from nfkit.apps.view_render import look_at

FULL_TURN_ARC = math.radians(300)


def covered_arc(az: np.ndarray) -> tuple[float, float]:
    """Azimuths [N] (radians) -> (start, length) of the smallest arc holding them all (the circle minus the
    largest gap between neighbours); length 0 for a single camera."""
    a = np.sort(np.mod(np.asarray(az, dtype=np.float64), 2 * math.pi))
    if len(a) < 2:
        return float(a[0]) if len(a) else 0.0, 0.0
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
    j = int(np.argmax(gaps))
    start = float(a[(j + 1) % len(a)])
    return (start if start <= math.pi else start - 2 * math.pi), float(2 * math.pi - gaps[j])


def orbit_poses(train_c2w: np.ndarray, n_frames: int = 48, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """train_c2w: [N, 4, 4] OpenGL camera-to-world (normalised world) -> [n_frames, 4, 4] orbit poses."""
    c2w = np.asarray(train_c2w, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    up = c2w[:, :3, 1].mean(0)
    up = up / max(np.linalg.norm(up), 1e-12) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    rel = c2w[:, :3, 3] - centre
    height = float((rel @ up).mean())
    horiz = rel - (rel @ up)[:, None] * up
    radius = float(np.linalg.norm(horiz, axis=-1).mean())
    if radius < 1e-6:  # cameras straight above the centre: orbit at their distance
        radius = max(float(np.linalg.norm(rel, axis=-1).mean()), 1.0)
    # Orthonormal basis (e1, e2) of the orbit plane, e1 towards the first camera.
    e1 = horiz[0] if np.linalg.norm(horiz[0]) > 1e-6 else np.cross(up, [1.0, 0.0, 0.0])
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.cross(up, [0.0, 1.0, 0.0])
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    az = np.arctan2(horiz @ e2, horiz @ e1)  # first camera at 0
    start, arc = covered_arc(az)
    poses = []
    for k in range(n_frames):
        if arc >= FULL_TURN_ARC:
            a = 2 * math.pi * k / n_frames
        else:  # start -> start + arc -> start
            a = start + arc * 0.5 * (1 - math.cos(2 * math.pi * k / n_frames))
        eye = centre + height * up + radius * (math.cos(a) * e1 + math.sin(a) * e2)
        poses.append(look_at(eye, centre, up))
    return np.stack(poses)


def orbit_path(cams, n_frames: int = 48, fps: float = 12.0, max_side: int = 320) -> CameraPath:
    """A :class:`CameraPath` whose keyframes are the ``n_frames`` orbit poses of ``cams`` (a :class:`Cameras`
    of the training views), played at ``fps``; the interpolation then returns the keyframes themselves."""
    c2w = cams.c2w.detach().cpu().numpy()
    fov = math.degrees(2 * math.atan(0.5 * cams.height / float(cams.fy[0])))
    f = min(1.0, max_side / max(cams.width, cams.height))
    w, h = max(8, round(cams.width * f)), max(8, round(cams.height * f))
    return CameraPath(list(orbit_poses(c2w, n_frames)), fov_deg=fov, width=w, height=h, fps=fps,
                      seconds=n_frames / fps)


def write_orbit_video(field, grid, opts, cams, out, n_frames: int = 48, fps: float = 12.0,
                      max_side: int = 320, progress: bool = False) -> Path:
    """Renders the orbit of :func:`orbit_path` to the mp4 ``out`` (atomic write) -> its path."""
    return render_video((field, grid, opts), orbit_path(cams, n_frames, fps, max_side), out, progress=progress)
