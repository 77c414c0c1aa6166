"""Multi-view geometry helpers (numpy + torch).

Poses are world->camera ``(R [3, 3], t [3])``, OpenCV axes (x right, y down, z forward); pixels with centres at
+0.5 (COLMAP); ``K`` [3, 3] pinhole.
"""
from __future__ import annotations

import numpy as np
import torch


def project(K: np.ndarray, R: np.ndarray, t: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points X [N, 3] -> (pixels [N, 2], depth [N])."""
    xc = X @ R.T + t
    z = xc[:, 2]
    uv = (xc @ K.T)[:, :2] / np.where(np.abs(z) < 1e-12, 1e-12, z)[:, None]
    return uv, z


def triangulate_dlt(K: np.ndarray, pose_a, pose_b, uv_a: np.ndarray, uv_b: np.ndarray) -> np.ndarray:
    """Linear (DLT) two-view triangulation of matched pixels uv_a, uv_b [M, 2] -> X [M, 3]."""
    Pa = K @ np.hstack([pose_a[0], pose_a[1][:, None]])
    Pb = K @ np.hstack([pose_b[0], pose_b[1][:, None]])
    A = np.stack([uv_a[:, :1] * Pa[2] - Pa[0], uv_a[:, 1:] * Pa[2] - Pa[1],
                  uv_b[:, :1] * Pb[2] - Pb[0], uv_b[:, 1:] * Pb[2] - Pb[1]], axis=1)  # [M, 4, 4]
    _, _, vt = np.linalg.svd(A)
    Xh = vt[:, -1]
    w = np.where(np.abs(Xh[:, 3:]) < 1e-12, 1e-12, Xh[:, 3:])
    return Xh[:, :3] / w


def camera_centre(pose) -> np.ndarray:
    return -pose[0].T @ pose[1]


def rays(K: np.ndarray, pose, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rays of pixels uv [N, 2] -> (origins [N, 3], unit directions [N, 3])."""
    R, t = pose
    xn = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(K).T
    d = xn @ R  # R^T xn, row-wise
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(camera_centre(pose), d.shape).copy()
    return o, d


def triangulation_angle_deg(c_a: np.ndarray, c_b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Angle (deg) between the rays from centres c_a, c_b [3] to points X [N, 3]."""
    da = X - c_a
    db = X - c_b
    cos = (da * db).sum(1) / np.maximum(np.linalg.norm(da, axis=1) * np.linalg.norm(db, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def project_torch(K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Batched projection: K [3, 3] (or [N, 3, 3]), R [N, 3, 3], t [N, 3], X [N, 3] -> pixels [N, 2]."""
    xc = (R @ X[..., None])[..., 0] + t
    z = xc[:, 2:].clamp_min(1e-6)
    xn = xc[:, :2] / z
    if K.dim() == 2:
        return xn * torch.stack([K[0, 0], K[1, 1]]) + torch.stack([K[0, 2], K[1, 2]])
    return xn * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1) + torch.stack([K[:, 0, 2], K[:, 1, 2]], -1)
