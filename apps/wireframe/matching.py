"""Bipartite matching (scipy's Hungarian ``linear_sum_assignment``) for Global Junction Perceiving and evaluation.

All functions take and return numpy arrays; costs are non-negative, matches one-to-one.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def hungarian(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cost [A, B] -> (rows [K], cols [K], their costs [K]) of the minimum-cost one-to-one matching,
    K = min(A, B) (empty when either side is empty)."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    r, c = linear_sum_assignment(cost)
    return r, c, cost[r, c]


def match_points(pred: np.ndarray, ref: np.ndarray):
    """Points [A, D] and [B, D] -> (rows, cols, Euclidean distances) of the one-to-one matching minimising the sum
    of distances."""
    if len(pred) == 0 or len(ref) == 0:
        return hungarian(np.zeros((len(pred), len(ref))))
    return hungarian(np.linalg.norm(pred[:, None] - ref[None], axis=-1))


def segment_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3-D (or 2-D) segments a [A, 2, D], b [B, 2, D] -> [A, B] mean endpoint distance, endpoint order ignored."""
    d_same = 0.5 * (np.linalg.norm(a[:, None, 0] - b[None, :, 0], axis=-1)
                    + np.linalg.norm(a[:, None, 1] - b[None, :, 1], axis=-1))
    d_swap = 0.5 * (np.linalg.norm(a[:, None, 0] - b[None, :, 1], axis=-1)
                    + np.linalg.norm(a[:, None, 1] - b[None, :, 0], axis=-1))
    return np.minimum(d_same, d_swap)


def match_segments(pred: np.ndarray, ref: np.ndarray):
    """Segments [A, 2, D] and [B, 2, D] -> (rows, cols, mean endpoint distances) of the one-to-one matching."""
    if len(pred) == 0 or len(ref) == 0:
        return hungarian(np.zeros((len(pred), len(ref))))
    return hungarian(segment_distance_matrix(pred, ref))
