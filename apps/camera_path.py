"""Camera paths: keyframes -> smooth trajectory -> mp4, and ``nfkit render FIELD --path path.json --out video.mp4``.

Path file (JSON, ``version`` 1)::

    {"version": 1, "fov_deg": 50.0, "width": 640, "height": 360, "fps": 24, "seconds": 4.0,
     "keyframes": [{"c2w": [[...4 floats...] x 4]}, ...]}

``c2w`` is a 4x4 camera-to-world matrix in the field's normalised world, **OpenGL** camera axes (+X right, +Y up,
looking down -Z), as :class:`nfkit.renderers.Cameras`; ``fov_deg`` is the vertical field of view. (The viewer's
keyframes come from viser's OpenCV-axes cameras through :func:`nfkit.apps.view_render.c2w_from_viser`.)

Interpolation (:func:`nfkit.poses.interpolate_poses`): positions by a uniform Catmull-Rom spline through the
keyframes (end points repeated), rotations by slerp between consecutive keyframes, both on the same per-segment
parameter; frames are spread evenly over the keyframe segments. Frames render with :func:`nfkit.apps.view_render.render_view` (exact marching).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from nfkit.apps.view_render import MODES, render_view
from nfkit.errors import NfkitError
from nfkit.poses import interpolate_poses, is_rigid


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
        if not is_rigid(m):
            raise NfkitError(f"{where}: keyframes[{i}].c2w is not rigid (rotation not orthonormal with det +1, "
                             f"or bottom row not 0 0 0 1)")
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
    return interpolate_poses(cam_path.keyframes, n_frames or cam_path.n_frames())


# ---------------------------------------------------------------- video
def render_video(renderable, cam_path: CameraPath, out, mode: str = "rgb", background=(1.0, 1.0, 1.0),
                 progress: bool = True, should_stop=None, on_frame=None, frame_lock=None) -> Path | None:
    """Render the path to an mp4 (libx264 via imageio-ffmpeg), written atomically. ``renderable`` is
    ``(field, grid, opts)``. Odd sizes are rounded up to even (yuv420p). Returns the path, or None if stopped.
    ``on_frame(i, n)`` is called after each frame; each frame renders inside ``with frame_lock():`` if given
    (the viewer's render lock, so videos share the CPU with interactive frames)."""
    from contextlib import nullcontext

    import imageio.v2 as imageio

    from nfkit.progress import progress_bar

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
        bar = progress_bar(iterable=poses, disable=not progress, desc="render", unit="frame", dynamic_ncols=True)
        for i, c2w in enumerate(bar):
            with frame_lock() if frame_lock is not None else nullcontext():
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
