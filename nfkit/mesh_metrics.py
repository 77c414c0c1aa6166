"""Reconstruction metrics between two triangle meshes: Chamfer-L1, normal consistency, precision/recall/F-score.

Both surfaces are sampled uniformly by area (trimesh); nearest neighbours come from scipy's cKDTree, both ways.
Distances are Euclidean (the "L1" of Chamfer-L1 is the mean of unsquared distances, as in Occupancy Networks);
Chamfer-L1 is the mean of the two directions' mean distances and is reported in % of the *reference* mesh's
bounding-box diagonal. The query points of each direction are matched against a denser sample of the other
surface (``oversample`` times as many points) so that the sampling itself adds little: two independent samples
of one surface score a floor of about ``0.5·sqrt(area / (oversample·n_points))`` (≈ 0.05 % of the diagonal for
a sphere with the defaults).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nfkit.errors import NfkitError

DEFAULT_POINTS = 100_000
DEFAULT_OVERSAMPLE = 10
DEFAULT_THRESHOLD_PCT = 0.5


@dataclass(frozen=True)
class MeshScores:
    """Scores of a predicted mesh against a reference (distances in the reference's units unless ``_pct``)."""
    chamfer_l1_pct: float        # mean of both directions, % of the reference's bounding-box diagonal
    accuracy: float              # mean distance predicted -> reference
    completeness: float          # mean distance reference -> predicted
    normal_consistency: float    # mean |n_pred · n_ref| over nearest-neighbour pairs, both directions averaged
    precision: float             # fraction of predicted points within the threshold of the reference
    recall: float                # fraction of reference points within the threshold of the prediction
    fscore: float
    threshold_pct: float         # the precision/recall threshold, % of the diagonal
    diagonal: float              # the reference's bounding-box diagonal
    n_points: int

    def as_dict(self) -> dict:
        return asdict(self)


def load_mesh(path):
    """A triangle mesh file (.off/.ply/.obj/.stl...) as one trimesh.Trimesh; one-line NfkitError otherwise
    (:func:`nfkit.datasets.shape_files.read_mesh`, the one mesh reader)."""
    from nfkit.datasets.shape_files import read_mesh

    return read_mesh(path)


def sample_surface(mesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points uniformly by area on a trimesh and their face normals: ([n, 3], [n, 3]) float64."""
    import trimesh

    if len(mesh.faces) == 0 or mesh.area <= 0:
        raise NfkitError("mesh metrics: a mesh has no surface area (no faces)")
    points, face_index = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(points, np.float64), np.asarray(mesh.face_normals[face_index], np.float64)


def nearest(query: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance [Q] and index [Q] of each query point's nearest target point (cKDTree)."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(target).query(query, k=1, workers=1)
    return dist, idx


def bbox_diagonal(mesh) -> float:
    lo, hi = np.asarray(mesh.bounds, np.float64)
    return float(np.linalg.norm(hi - lo))


def _direction(q_pts, q_nrm, t_pts, t_nrm):
    """One direction: distances [Q] and |n_q · n_t| [Q] to the nearest target samples."""
    dist, idx = nearest(q_pts, t_pts)
    return dist, np.abs((q_nrm * t_nrm[idx]).sum(-1))


def compare_meshes(pred, ref, n_points: int = DEFAULT_POINTS, threshold_pct: float = DEFAULT_THRESHOLD_PCT,
                   oversample: int = DEFAULT_OVERSAMPLE, seed: int = 0) -> MeshScores:
    """Score mesh ``pred`` against mesh ``ref`` (trimesh objects in the same coordinates); see the module doc.

    n_points query samples per surface, matched against ``oversample·n_points`` samples of the other;
    threshold_pct: precision/recall distance in % of ref's bounding-box diagonal.
    """
    diag = bbox_diagonal(ref)
    if diag <= 0:
        raise NfkitError("mesh metrics: the reference mesh has an empty bounding box")
    dense = max(1, int(oversample)) * n_points
    p_pts, p_nrm = sample_surface(pred, n_points, seed)
    r_pts, r_nrm = sample_surface(ref, n_points, seed + 1)
    p_dense, p_dense_nrm = sample_surface(pred, dense, seed + 2)
    r_dense, r_dense_nrm = sample_surface(ref, dense, seed + 3)
    d_pr, nc_pr = _direction(p_pts, p_nrm, r_dense, r_dense_nrm)
    d_rp, nc_rp = _direction(r_pts, r_nrm, p_dense, p_dense_nrm)
    tau = threshold_pct / 100.0 * diag
    precision, recall = float((d_pr < tau).mean()), float((d_rp < tau).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    acc, comp = float(d_pr.mean()), float(d_rp.mean())
    return MeshScores(
        chamfer_l1_pct=100.0 * 0.5 * (acc + comp) / diag, accuracy=acc, completeness=comp,
        normal_consistency=float(0.5 * (nc_pr.mean() + nc_rp.mean())), precision=precision, recall=recall,
        fscore=fscore, threshold_pct=threshold_pct, diagonal=diag, n_points=n_points)


def compare_mesh_files(pred_path, ref_path, **kwargs) -> MeshScores:
    """:func:`compare_meshes` on two mesh files."""
    return compare_meshes(load_mesh(pred_path), load_mesh(ref_path), **kwargs)


def genus(mesh) -> int:
    """Genus of a closed connected mesh from its Euler characteristic, g = (2 − χ) / 2."""
    return int(round((2 - mesh.euler_number) / 2))
