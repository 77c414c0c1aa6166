"""2-D line segments per view: HAWP JSON files, the LSD detector (OpenCV), and the geometry NEAT needs on them.

Conventions: pixel coordinates are nfkit's (column x, row y, pixel centres at +0.5; see :mod:`nfkit.cameras`),
in the resolution of the loaded images. HAWP and LSD report OpenCV coordinates (pixel centres at integers), so
readers add 0.5. A view's lines: ``segments`` [M, 4] float32 (x1, y1, x2, y2), ``scores`` [M], ``junctions``
[J, 2] float32.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nfkit.errors import NfkitError

HAWP_MIN_SCORE = 0.05  # NEAT's loader keeps segments with edges-weights above this
LSD_MIN_LENGTH = 0.02  # LSD segments shorter than this fraction of the image diagonal are dropped
JUNCTION_RADIUS_PX = 3.0  # LSD endpoints closer than this (pixels at the working resolution) form one junction


@dataclass
class ViewLines:
    """One view's 2-D wireframe (see the module docstring)."""

    segments: np.ndarray  # [M, 4]
    scores: np.ndarray  # [M]
    junctions: np.ndarray  # [J, 2]

    def __len__(self) -> int:
        return len(self.segments)

    def scaled(self, factor: float) -> "ViewLines":
        """Coordinates for images resized by ``factor`` (pixel-centre convention kept: c' = c * factor)."""
        return ViewLines((self.segments * factor).astype(np.float32), self.scores,
                         (self.junctions * factor).astype(np.float32))


def empty_lines() -> ViewLines:
    return ViewLines(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.float32))


def read_hawp(path: Path, min_score: float = HAWP_MIN_SCORE) -> tuple[ViewLines, tuple[int, int]]:
    """A HAWP JSON file -> (its lines with score > ``min_score`` in nfkit pixel coordinates, (height, width))."""
    try:
        d = json.loads(Path(path).read_text())
        v = np.asarray(d["vertices"], np.float64).reshape(-1, 2) + 0.5
        e = np.asarray(d["edges"], np.int64).reshape(-1, 2)
        w = np.asarray(d.get("edges-weights", np.ones(len(e))), np.float64).reshape(-1)
        hw = (int(d["height"]), int(d["width"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise NfkitError(f"{path}: not a HAWP wireframe JSON ({str(err)[:80]})") from None
    if len(w) != len(e) or (len(e) and (e.min() < 0 or e.max() >= len(v))) or not np.isfinite(v).all():
        raise NfkitError(f"{path}: HAWP edges must index its vertices and have one weight each")
    keep = w > min_score
    e, w = e[keep], w[keep]
    segs = np.concatenate([v[e[:, 0]], v[e[:, 1]]], 1) if len(e) else np.zeros((0, 4))
    used = np.unique(e.reshape(-1))
    return ViewLines(segs.astype(np.float32), w.astype(np.float32), v[used].astype(np.float32)), hw


def hawp_lines(folder: Path, names: list[str], image_hw: tuple[int, int]) -> list[ViewLines]:
    """One HAWP file per view (``folder/<image stem>.json``), scaled to the loaded images' size ``image_hw``."""
    out = []
    for name in names:
        path = Path(folder) / (Path(name).stem + ".json")
        if not path.is_file():
            raise NfkitError(f"{path}: no HAWP file for image {name}")
        lines, (h, w) = read_hawp(path)
        out.append(lines.scaled(image_hw[1] / w))
    return out


def cluster_points(points: np.ndarray, radius: float) -> np.ndarray:
    """Radius clustering (single linkage: connected components of the ``radius`` graph; scipy cKDTree).
    points [P, D] -> labels [P] in 0..C-1."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if len(points) == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(points), len(points)))
    return connected_components(g, directed=False)[1].astype(np.int64)


def cluster_means(points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (cluster means [C, D], cluster sizes [C])."""
    n = int(labels.max()) + 1 if len(labels) else 0
    sums = np.zeros((n, points.shape[1]))
    np.add.at(sums, labels, points)
    counts = np.bincount(labels, minlength=n)
    return sums / np.maximum(counts, 1)[:, None], counts


def junctions_from_segments(segments: np.ndarray, radius: float = JUNCTION_RADIUS_PX):
    """Junctions of a set of segments without a graph (LSD): endpoints clustered within ``radius`` px, each
    endpoint snapped to its cluster's mean. segments [M, 4] -> (snapped segments [M, 4], junctions [J, 2])."""
    if len(segments) == 0:
        return segments, np.zeros((0, 2), np.float32)
    ends = segments.reshape(-1, 2).astype(np.float64)
    labels = cluster_points(ends, radius)
    means, _ = cluster_means(ends, labels)
    snapped = means[labels].reshape(-1, 4)
    ok = np.linalg.norm(snapped[:, :2] - snapped[:, 2:], axis=1) > 1e-3  # a segment collapsed onto one junction
    return snapped[ok].astype(np.float32), means.astype(np.float32)


def lsd_lines(image: np.ndarray, min_length: float = LSD_MIN_LENGTH, radius: float = JUNCTION_RADIUS_PX) -> ViewLines:
    """OpenCV's LSD on one image ([H, W, 3|4] float in [0, 1]); score = length / image diagonal (LSD's NFA is not
    exposed in every OpenCV build); junctions by endpoint clustering (:func:`junctions_from_segments`)."""
    try:
        import cv2
    except ImportError:
        raise NfkitError("the LSD line detector needs OpenCV (pip install opencv-python-headless), or give HAWP "
                         "files with --lines") from None
    if not hasattr(cv2, "createLineSegmentDetector"):
        raise NfkitError(f"this OpenCV ({cv2.__version__}) has no LSD (createLineSegmentDetector); give HAWP files "
                         "with --lines")
    gray = (np.clip(image[..., :3].mean(-1), 0, 1) * 255).astype(np.uint8)
    h, w = gray.shape
    lines = cv2.createLineSegmentDetector().detect(gray)[0]
    if lines is None:
        return empty_lines()
    segs = lines.reshape(-1, 4).astype(np.float64) + 0.5
    diag = float(np.hypot(h, w))
    length = np.linalg.norm(segs[:, :2] - segs[:, 2:], axis=1)
    segs = segs[length >= min_length * diag]
    segs, junctions = junctions_from_segments(segs, radius)
    length = np.linalg.norm(segs[:, :2] - segs[:, 2:], axis=1)
    scores = np.clip(length / (0.25 * diag), 0.1, 1.0)
    return ViewLines(segs.astype(np.float32), scores.astype(np.float32), junctions)


# ----- point-to-segment distances ------------------------------------------------------------------------------
def point_segment_distance(p: torch.Tensor, segs: torch.Tensor):
    """p [P, 2], segs [M, 4] -> (distance [P, M] to the closed segment, t [P, M] the foot's parameter along
    a -> b, unclamped: inside the segment when 0 < t < 1). Vectorised over both."""
    a, b = segs[:, :2], segs[:, 2:]
    ab = b - a  # [M, 2]
    ap = p[:, None, :] - a[None]  # [P, M, 2]
    t = (ap * ab[None]).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)[None]
    foot = a[None] + t.clamp(0, 1)[..., None] * ab[None]
    return (p[:, None, :] - foot).norm(dim=-1), t


def point_segment_distance_reference(p: np.ndarray, segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same as :func:`point_segment_distance` by loops over points and segments (for tests)."""
    d = np.zeros((len(p), len(segs)))
    t = np.zeros((len(p), len(segs)))
    for i, q in enumerate(p):
        for j, s in enumerate(segs):
            a, b = np.asarray(s[:2], float), np.asarray(s[2:], float)
            ab = b - a
            tt = float(np.dot(q - a, ab) / max(np.dot(ab, ab), 1e-12))
            foot = a + min(1.0, max(0.0, tt)) * ab
            d[i, j], t[i, j] = np.linalg.norm(q - foot), tt
    return d, t


def support_pixels(lines: ViewLines, height: int, width: int, radius: float, chunk: int = 1 << 15):
    """Pixels within ``radius`` of a segment whose foot point falls inside it (NEAT's support set).

    Returns (flat pixel indices [S] long, row-major, nearest qualifying segment per pixel [S] long)."""
    if len(lines) == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    segs = torch.as_tensor(lines.segments, dtype=torch.float32)
    lo = segs.reshape(-1, 2).amin(0) - radius - 1
    hi = segs.reshape(-1, 2).amax(0) + radius + 1
    v, u = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    flat = torch.arange(height * width)
    centres = torch.stack([u.reshape(-1) + 0.5, v.reshape(-1) + 0.5], -1).float()
    box = ((centres >= lo) & (centres <= hi)).all(-1)
    flat, centres = flat[box], centres[box]
    idx, lab = [], []
    for c, f in zip(centres.split(chunk), flat.split(chunk)):
        d, t = point_segment_distance(c, segs)
        d = torch.where((t > 0) & (t < 1), d, torch.full_like(d, float("inf")))
        dmin, j = d.min(1)
        ok = dmin <= radius
        idx.append(f[ok])
        lab.append(j[ok])
    return torch.cat(idx), torch.cat(lab)
