"""The ABC wireframe protocol (NEAT's ``eval-abc.py``): one-to-one Hungarian matching of predicted to ground-truth
junctions (Euclidean distance) and of predicted to ground-truth lines (mean endpoint distance, endpoint order
ignored); a match counts at threshold tau when its distance is below tau; precision = matches / predicted,
recall = matches / ground truth, F1 their harmonic mean; tau in {1, 2, 5} % of the object's largest side (the
ground-truth junctions' bounding box).

Ground-truth files (``lines.json``): ``{"junctions": [[x, y, z], ...], "lines": [[i, j], ...]}``. NEAT's ABC
objects store them in the CAD model's own units while the cameras see the model normalised into a unit cube
centred at the origin (``X = (X_cad - bbox centre) / largest bbox side``); ``frame="unit-cube"`` applies that
mapping, ``"world"`` none, ``"auto"`` the unit cube when the junctions' bounding box is larger than the smallest
camera distance from the origin (the object cannot be that big and stay in every view).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nfkit.errors import NfkitError

from .matching import match_points, match_segments

THRESHOLDS = (0.01, 0.02, 0.05)
GT_FRAMES = ("auto", "world", "unit-cube")


def read_gt(path, frame: str = "auto", camera_centres: np.ndarray | None = None):
    """lines.json -> (junctions [J, 3], edges [E, 2]) in the cameras' (input) world, see the module docstring."""
    try:
        d = json.loads(Path(path).read_text())
        j = np.asarray(d["junctions"], np.float64).reshape(-1, 3)
        e = np.asarray(d["lines"], np.int64).reshape(-1, 2)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise NfkitError(f"{path}: not a wireframe lines.json ({str(err)[:80]})") from None
    if frame not in GT_FRAMES:
        raise NfkitError(f"--gt-frame {frame}: expected one of {', '.join(GT_FRAMES)}")
    if len(e) and (e.min() < 0 or e.max() >= len(j)):
        raise NfkitError(f"{path}: lines must index its junctions")
    lo, hi = j.min(0), j.max(0)
    side = float((hi - lo).max()) if len(j) else 1.0
    if frame == "auto":
        near = np.inf if camera_centres is None else float(np.linalg.norm(camera_centres, axis=1).min())
        frame = "unit-cube" if side > near else "world"
    if frame == "unit-cube":
        j = (j - (lo + hi) / 2) / side
    return j, e


def prf(tp: int, n_pred: int, n_gt: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gt if n_gt else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def evaluate_wireframe(pred_j: np.ndarray, pred_e: np.ndarray, gt_j: np.ndarray, gt_e: np.ndarray,
                       thresholds=THRESHOLDS) -> dict:
    """Predicted junctions [P, 3] and edges [Q, 2] against the ground truth (same coordinates) -> {"scale",
    "n_pred_junctions", "n_pred_lines", "junctions": {"1%": {precision, recall, f1}, ...}, "lines": {...}}."""
    pred_j = np.asarray(pred_j, np.float64).reshape(-1, 3)
    pred_e = np.asarray(pred_e, np.int64).reshape(-1, 2)
    scale = float((gt_j.max(0) - gt_j.min(0)).max())
    _, _, dj = match_points(pred_j, gt_j)
    ps, gs = pred_j[pred_e].reshape(-1, 2, 3), gt_j[gt_e].reshape(-1, 2, 3)
    _, _, dl = match_segments(ps, gs)
    out = {"scale": scale, "n_pred_junctions": len(pred_j), "n_pred_lines": len(pred_e),
           "n_gt_junctions": len(gt_j), "n_gt_lines": len(gt_e), "junctions": {}, "lines": {}}
    for t in thresholds:
        key = f"{round(100 * t)}%"
        out["junctions"][key] = prf(int((dj < t * scale).sum()), len(pred_j), len(gt_j))
        out["lines"][key] = prf(int((dl < t * scale).sum()), len(pred_e), len(gt_e))
    return out


# ----- real photos: held-out views ---------------------------------------------------------------------------------
def _explains(src: np.ndarray, dst: np.ndarray, dist_px: float, angle_deg: float) -> np.ndarray:
    """2-D segments src [A, 4], dst [B, 4] -> [A] bool: some dst segment lies along src: both src endpoints within
    ``dist_px`` of the dst segment's line, directions within ``angle_deg``, extents overlapping along dst."""
    if len(src) == 0 or len(dst) == 0:
        return np.zeros(len(src), bool)
    a, b = dst[:, :2], dst[:, 2:]
    ln = np.linalg.norm(b - a, axis=-1)
    u = (b - a) / np.maximum(ln, 1e-12)[:, None]
    n = np.stack([-u[:, 1], u[:, 0]], -1)
    p, q = src[:, None, :2], src[:, None, 2:]
    dist = np.maximum(np.abs(((p - a) * n).sum(-1)), np.abs(((q - a) * n).sum(-1)))
    s = src[:, 2:] - src[:, :2]
    s = s / np.maximum(np.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
    ang = np.abs(s @ u.T) >= np.cos(np.radians(angle_deg))
    t0, t1 = ((p - a) * u).sum(-1), ((q - a) * u).sum(-1)
    overlap = (np.maximum(t0, t1) > 0) & (np.minimum(t0, t1) < ln[None])
    return (ang & overlap & (dist <= dist_px)).any(1)


def reprojection_scores(seg3: np.ndarray, cams, lines, dist_px: float = 3.0, angle_deg: float = 5.0,
                        min_len_px: float = 40.0) -> dict:
    """3-D segments [S, 2, 3] (the cameras' normalised coordinates) against detected 2-D segments of held-out
    views (``lines``: one ViewLines per camera of ``cams``, same resolution) -> {"reprojected_matched": share of
    the reprojected segments (in front of the camera, inside the image) with a detected segment within
    ``dist_px`` and ``angle_deg``, "detected_explained": share of the detected segments >= ``min_len_px`` that a
    reprojected segment explains under the same test, per-view counts}."""
    from .classic import _cams_np, project

    cam = _cams_np(cams)
    m_rep = n_rep = m_det = n_det = 0
    for i, ln in enumerate(lines):
        if len(seg3):
            px, z = project(cam, i, seg3.reshape(-1, 3))
            px, z = px.reshape(-1, 4), z.reshape(-1, 2)
            inside = (z > 0).all(1) & (px[:, 0::2] >= 0).all(1) & (px[:, 0::2] <= cams.width).all(1) & \
                (px[:, 1::2] >= 0).all(1) & (px[:, 1::2] <= cams.height).all(1)
            rep = px[inside]
        else:
            rep = np.zeros((0, 4))
        det = ln.segments.astype(np.float64)
        long = det[np.linalg.norm(det[:, :2] - det[:, 2:], axis=1) >= min_len_px]
        m_rep += int(_explains(rep, det, dist_px, angle_deg).sum())
        n_rep += len(rep)
        m_det += int(_explains(long, rep, dist_px, angle_deg).sum())
        n_det += len(long)
    return {"reprojected_matched": round(m_rep / n_rep, 4) if n_rep else 0.0, "n_reprojected": n_rep,
            "detected_explained": round(m_det / n_det, 4) if n_det else 0.0, "n_detected_long": n_det}
