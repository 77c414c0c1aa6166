"""An orbit video around the captured object: ``DIR/orbit.mp4`` after ``nfkit fit`` on a capture.

Geometry (:func:`nfkit.poses.orbit_poses`), all in the field's normalised world (OpenGL camera axes, see :mod:`nfkit.apps.camera_path`):

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

from nfkit.apps.camera_path import CameraPath, render_video
from nfkit.poses import FULL_TURN_ARC, covered_arc, orbit_poses

__all__ = ["FULL_TURN_ARC", "covered_arc", "orbit_poses", "orbit_path", "write_orbit_video"]


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
