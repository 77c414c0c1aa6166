"""Parsing the ``transforms*.json`` family (Blender / NeRF-synthetic, nerfstudio, instant-ngp).

All three share one core: a top-level dict with ``frames[]``, each frame holding ``file_path`` (relative to the
json) and ``transform_matrix`` (4x4 or 3x4 camera-to-world, OpenGL camera axes).  Intrinsics may sit at the top
level or in each frame (a frame's value wins):

* focal: ``fl_x`` / ``fl_y`` in pixels, else ``camera_angle_x`` / ``camera_angle_y`` (full field of view in
  radians, ``f = 0.5 * w / tan(0.5 * angle)``); ``fl_y`` defaults to ``fl_x``.
* principal point ``cx``, ``cy`` (default ``w / 2``, ``h / 2``); image size ``w``, ``h`` (default: the file's).
* distortion (OpenCV): ``k1, k2, p1, p2, k3`` (missing ones 0), or a ``distortion_params`` array, read as
  nerfstudio's order ``[k1, k2, k3, k4, p1, p2]`` when it has 6 entries and as OpenCV's ``[k1, k2, p1, p2(, k3)]``
  when it has 4 or 5.
* ``camera_model``: ``OPENCV`` (default) or ``PINHOLE``.

Checks (issue 25): ``transform_matrix`` must be a rigid pose (:func:`nfkit.poses.is_rigid`: orthonormal rotation
with det +1, bottom row 0 0 0 1); ``file_path`` must stay inside the dataset folder -- absolute paths and ``..`` that leave it are refused unless ``allow_outside_paths``;
frames whose image file is missing are dropped with one notice (:func:`drop_missing`), an error when none remains.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nfkit.errors import DatasetError
from nfkit.poses import is_rigid

from .notices import notice

SUPPORTED_CAMERA_MODELS = ("OPENCV", "PINHOLE")


@dataclass
class FrameRef:
    """One validated frame of a transforms json.

    c2w: [4, 4] float64, input world coordinates, OpenGL camera axes.
    image: the image file (``.png`` appended when ``file_path`` has no extension).
    name: ``image`` relative to the dataset root (POSIX separators).
    """

    source: Path
    meta: dict
    index: int
    frame: dict
    c2w: np.ndarray
    image: Path
    name: str


def read_json(path: Path) -> dict:
    """Reads a transforms json -> its top-level dict; DatasetError if missing, unparsable or not an object."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected a transforms json)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object with a 'frames' list, got {type(meta).__name__}")
    return meta


def leaves_folder(name: str) -> bool:
    """True when the relative file name ``name`` is absolute or climbs out of its folder with ``..``."""
    norm = os.path.normpath(name)
    return os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep) or norm.startswith("../")


def parse_frames(path: Path, meta: dict, root: Path, allow_outside_paths: bool = False) -> list[FrameRef]:
    """Validates every frame of ``meta`` (read from ``path``); image names are made relative to ``root``.

    allow_outside_paths: accept image paths that are absolute or leave ``root`` (else DatasetError)."""
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        what = "missing" if frames is None else "empty" if isinstance(frames, list) and not frames else "not a list"
        raise DatasetError(f"{path}: 'frames' is {what}; expected a non-empty list of frames")
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model not in SUPPORTED_CAMERA_MODELS:
        raise DatasetError(f"{path}: unsupported camera_model {meta.get('camera_model')!r} "
                           f"(expected one of {', '.join(SUPPORTED_CAMERA_MODELS)})")
    return [_parse_frame(path, meta, i, f, root, allow_outside_paths) for i, f in enumerate(frames)]


def _parse_frame(path: Path, meta: dict, i: int, frame, root: Path, allow_outside: bool) -> FrameRef:
    if not isinstance(frame, dict):
        raise DatasetError(f"{path}: frame {i} is not an object")
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise DatasetError(f"{path}: frame {i} has no '{key}'")
    fp = frame["file_path"]
    if not isinstance(fp, str) or not fp:
        raise DatasetError(f"{path}: frame {i} 'file_path' must be a non-empty string")
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (ValueError, TypeError):
        m = None
    if m is None or m.shape not in ((4, 4), (3, 4)):
        shape = "not a numeric matrix" if m is None else f"shape {m.shape}"
        raise DatasetError(f"{path}: frame {i} transform_matrix must be 4x4 (or 3x4), got {shape}")
    if not np.isfinite(m).all():
        raise DatasetError(f"{path}: frame {i} transform_matrix contains NaN or inf")
    if m.shape == (3, 4):
        m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]], 0)
    if not is_rigid(m):
        raise DatasetError(f"{path}: frame {i} transform_matrix is not a rigid camera pose (expected an orthonormal "
                           f"rotation with det +1 and the bottom row 0 0 0 1)")
    model = frame.get("camera_model")
    if model is not None and str(model).upper() not in SUPPORTED_CAMERA_MODELS:
        raise DatasetError(f"{path}: frame {i} has unsupported camera_model {model!r} "
                           f"(expected one of {', '.join(SUPPORTED_CAMERA_MODELS)})")
    image = Path(fp)
    if not image.suffix:
        image = image.with_name(image.name + ".png")
    image = path.parent / image
    name = Path(os.path.normpath(os.path.relpath(image, root))).as_posix()
    if not allow_outside and (os.path.isabs(fp) or leaves_folder(os.path.relpath(image, root))):
        raise DatasetError(f"{path}: frame {i} file_path {fp!r} leaves the dataset folder {root} (absolute or "
                           f"'..' paths are refused unless allowed: allow_outside_paths / --allow-outside-paths)")
    return FrameRef(path, meta, i, frame, m, image, name)


def drop_missing(refs: list[FrameRef]) -> list[FrameRef]:
    """The frames whose image file exists; one notice saying how many were dropped, DatasetError when none is left
    (naming the first missing file and its json)."""
    present = [r for r in refs if r.image.is_file()]
    if not present:
        raise DatasetError(f"{refs[0].source}: image file {refs[0].image} not found (none of the {len(refs)} frames' "
                           f"images exist)")
    if len(present) < len(refs):
        first = next(r for r in refs if not r.image.is_file())
        notice(f"warning: {first.source}: skipping {len(refs) - len(present)} of {len(refs)} frames whose image "
               f"file is missing (first: {first.name})")
    return present


def _num(ref: FrameRef, value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{ref.source}: frame {ref.index} '{key}' must be a finite number, got {value!r}")
    return float(value)


def _fmt(v: float | None) -> str:
    return "unset" if v is None else str(round(v))


def _lookup(ref: FrameRef, key: str) -> float | None:
    """The frame's value for ``key``, else the top level's, else None; validated as a finite number."""
    value = ref.frame.get(key, ref.meta.get(key))
    return None if value is None else _num(ref, value, key)


def _focal(ref: FrameRef, fl_key: str, angle_key: str, size: int) -> float | None:
    """Focal length from ``fl_key`` (pixels) or ``angle_key`` (field of view); frame level before top level."""
    for scope in (ref.frame, ref.meta):
        if fl_key in scope:
            return _num(ref, scope[fl_key], fl_key)
        if angle_key in scope:
            angle = _num(ref, scope[angle_key], angle_key)
            if not 0.0 < angle < math.pi:
                raise DatasetError(f"{ref.source}: frame {ref.index} '{angle_key}' must be in (0, pi) radians")
            return 0.5 * size / math.tan(0.5 * angle)
    return None


def intrinsics(ref: FrameRef, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of the image file, whose size is ``width`` x ``height``.

    A declared ``w`` / ``h`` that differs from the file's size is an error (the intrinsics would not match).
    """
    w, h = _lookup(ref, "w"), _lookup(ref, "h")
    if (w is not None and round(w) != width) or (h is not None and round(h) != height):
        raise DatasetError(f"{ref.source}: image {ref.image} is {width}x{height} but frame {ref.index} declares "
                           f"w={_fmt(w)}, h={_fmt(h)} (expected the file's size)")
    fx = _focal(ref, "fl_x", "camera_angle_x", width)
    if fx is None:
        raise DatasetError(f"{ref.source}: frame {ref.index} has no intrinsics (expected 'fl_x' or "
                           f"'camera_angle_x' in the frame or at the top level)")
    fy = _focal(ref, "fl_y", "camera_angle_y", height)
    fy = fx if fy is None else fy
    if fx <= 0 or fy <= 0:
        raise DatasetError(f"{ref.source}: frame {ref.index} focal length must be positive, got {fx}, {fy}")
    cx, cy = _lookup(ref, "cx"), _lookup(ref, "cy")
    return fx, fy, width / 2.0 if cx is None else cx, height / 2.0 if cy is None else cy


def distortion(ref: FrameRef) -> list[float]:
    """OpenCV (k1, k2, p1, p2, k3) of a frame; zeros when none is given."""
    params = ref.frame.get("distortion_params", ref.meta.get("distortion_params"))
    if params is not None:
        try:
            p = [float(v) for v in params]
        except (TypeError, ValueError):
            p = None
        if p is None or len(p) not in (4, 5, 6) or not all(math.isfinite(v) for v in p):
            raise DatasetError(f"{ref.source}: frame {ref.index} 'distortion_params' must be 4-6 finite numbers")
        if len(p) == 6:  # nerfstudio order: k1, k2, k3, k4, p1, p2
            k1, k2, k3, k4, p1, p2 = p
        else:  # OpenCV order: k1, k2, p1, p2[, k3]
            k1, k2, p1, p2, k3, k4 = *p[:4], (p[4] if len(p) == 5 else 0.0), 0.0
    else:
        k1, k2, k3, k4, p1, p2 = (_lookup(ref, k) or 0.0 for k in ("k1", "k2", "k3", "k4", "p1", "p2"))
    if k4 != 0.0:
        raise DatasetError(f"{ref.source}: frame {ref.index} has k4 = {k4}; only OpenCV k1, k2, p1, p2, k3 "
                           f"distortion is supported")
    return [k1, k2, p1, p2, k3]
