"""Choosing frames from a video: ~N frames spread over time, the sharpest of each time window, downscaled.

Decoding uses PyAV (``pip install av``, part of the ``capture`` extra).  A video of ``T`` decoded frames is
split into ``k = min(n_frames, T)`` consecutive windows of (almost) equal length; in each window the frame
with the highest sharpness wins.  Sharpness is the variance of the 4-neighbour Laplacian of the frame's grey
image at the output resolution (``max_side``), the usual blur measure: motion blur and defocus remove high
frequencies and lower it.

Frames are returned as ``[H, W, 3]`` uint8 RGB, all the same size: the video's size scaled so that the larger
side is at most ``max_side`` (area filter).  A rotation tag in the file (phone videos) is applied, so frames
come out upright as a player would show them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nfkit.errors import NfkitError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
                    ".mts", ".m2ts", ".ts", ".ogv")


class FrameSelection(NamedTuple):
    """What :func:`select_frames` returns.

    frames: k arrays [H, W, 3] uint8 RGB (downscaled), in time order.
    indices: k decoded-frame indices (0-based, in decoding order) of the chosen frames.
    scores: k sharpness values (variance of the Laplacian, grey in [0, 255]) of the chosen frames.
    n_total: number of frames decoded from the video.
    all_scores: n_total sharpness values, one per decoded frame.
    fps: the stream's average frame rate (0.0 if unknown).
    """

    frames: list
    indices: list
    scores: list
    n_total: int
    all_scores: np.ndarray
    fps: float


def laplacian_variance(grey: np.ndarray) -> float:
    """Sharpness of one image: variance of the 4-neighbour Laplacian. grey: [H, W] (any numeric type)."""
    g = np.asarray(grey, dtype=np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) of a ``width`` x ``height`` frame scaled so its larger side is at most ``max_side`` (never up)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    f = max_side / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


def _import_av():
    try:
        import av
    except ImportError as e:
        raise NfkitError("reading videos needs PyAV: pip install av (or pip install 'nfkit[capture]')") from e
    return av


def _open(av, path: Path):
    """Opens ``path`` -> (container, video stream); NfkitError when it is not a readable video."""
    if not path.is_file():
        raise NfkitError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise NfkitError(f"{path}: file is empty (0 bytes); expected a video (mp4, mov, webm, ...)")
    try:
        container = av.open(str(path))
    except Exception as e:  # av raises InvalidDataError, OSError, ValueError, ... for non-videos
        raise NfkitError(f"{path}: not a readable video ({_reason(e)}); expected mp4, mov, webm, ...") from e
    if not container.streams.video:
        container.close()
        raise NfkitError(f"{path}: has no video stream (expected a video file: mp4, mov, webm, ...)")
    return container, container.streams.video[0]


def _reason(e: Exception) -> str:
    """One line for an exception; PyAV's ``strerror`` when it has one (its str() repeats the path)."""
    if isinstance(getattr(e, "strerror", None), str) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def count_frames(path) -> int:
    """Number of frames of the first video stream: the header's count, else a count of demuxed packets."""
    av = _import_av()
    path = Path(os.fspath(path))
    container, stream = _open(av, path)
    try:
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        n = 0
        try:
            for packet in container.demux(stream):
                n += packet.size > 0
        except Exception:  # a truncated file: count what could be demuxed
            pass
        return n
    finally:
        container.close()


def _rotate(arr: np.ndarray, rotation) -> np.ndarray:
    """Applies a display-matrix rotation in degrees (PyAV's ``frame.rotation``, counterclockwise)."""
    k = round((rotation or 0) / 90.0) % 4
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr


def select_frames(path, n_frames: int = 40, max_side: int | None = 640) -> FrameSelection:
    """Decodes a video once and keeps the sharpest frame of each of ``n_frames`` windows (see module doc).

    path: a video file.  n_frames: how many frames to choose (at most the number of frames in the video).
    max_side: larger side of the returned frames (and of the image sharpness is measured on); None: keep.
    Raises :class:`NfkitError` naming the file when it is missing, empty, not a video or has no decodable
    frame.  A decoding error after some frames keeps the frames decoded before it.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise NfkitError(f"n_frames must be a positive integer, got {n_frames!r}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 8):
        raise NfkitError(f"max_side must be an integer >= 8 or None, got {max_side!r}")
    av = _import_av()
    path = Path(os.fspath(path)).expanduser()
    total = count_frames(path)
    if total == 0:
        raise NfkitError(f"{path}: the video has no frames (zero-length or truncated file); record a longer clip")
    k = min(n_frames, total)
    best: list = [None] * k  # per window: (score, index, rgb)
    scores: list[float] = []
    container, stream = _open(av, path)
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    try:
        for i, frame in enumerate(_decode(container, stream, path)):
            w, h = output_size(frame.width, frame.height, max_side)
            grey = frame.to_ndarray(format="gray", width=w, height=h, interpolation="AREA")
            rotation = getattr(frame, "rotation", 0)
            s = laplacian_variance(grey)
            scores.append(s)
            win = min(k - 1, i * k // total)
            if best[win] is None or s > best[win][0]:
                rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")
                best[win] = (s, i, _rotate(rgb, rotation))
    finally:
        container.close()
    chosen = [b for b in best if b is not None]
    if not chosen:
        raise NfkitError(f"{path}: no frame could be decoded (corrupt or unsupported video); re-encode it as H.264 mp4")
    return FrameSelection(frames=[c[2] for c in chosen], indices=[c[1] for c in chosen],
                          scores=[c[0] for c in chosen], n_total=len(scores),
                          all_scores=np.asarray(scores, dtype=np.float64), fps=fps)


def _decode(container, stream, path: Path):
    """Yields decoded frames; stops quietly at a decoding error after the first frame."""
    n = 0
    it = container.decode(stream)
    while True:
        try:
            frame = next(it)
        except StopIteration:
            return
        except Exception as e:  # av.error.* for corrupt data
            if n == 0:
                raise NfkitError(f"{path}: cannot decode the video ({_reason(e)}); re-encode it as H.264 mp4") from e
            return
        n += 1
        yield frame


def is_video_file(path) -> bool:
    """True when ``path`` is a file with a video extension, or (any other extension) PyAV finds a video
    stream with more than one frame in it.  Never raises."""
    p = Path(os.fspath(path))
    if not p.is_file():
        return False
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    if p.suffix.lower() in (".json", ".txt", ".png", ".jpg", ".jpeg", ".bin", ".ply"):
        return False
    try:
        av = _import_av()
        container = av.open(str(p))
    except Exception:
        return False
    try:
        s = container.streams.video
        return bool(s) and (s[0].frames or 0) != 1 and s[0].codec_context.name not in ("png", "mjpeg", "bmp")
    finally:
        container.close()
