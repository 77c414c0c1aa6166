"""Visual hull: the voxels of a box that project inside every silhouette, contoured by marching cubes.

Conventions: ``projections`` [V, 3, 4] map homogeneous world points to **OpenCV pixel coordinates** of the
silhouette images (``x ~ P X``, origin top-left, x to the right, y down, the centre of pixel (row i, column j) at
(j, i)), e.g. Middlebury's ``K [R | t]``; ``masks`` [V, H, W] bool, True on the object. A voxel that falls
behind a camera or outside an image is carved (the box should lie in every view). Marching cubes is
scikit-image's, on the occupancy blurred by a Gaussian of ``smooth`` voxels (0.75 by default: without it the
voxel staircase leaves normal consistency at 0.90 on a sphere, with it 0.99, the volume within 1 %); the mesh
(trimesh) is in world coordinates and closed (the grid is padded with empty voxels).
"""
from __future__ import annotations

import numpy as np

from nfkit.errors import NfkitError

DEFAULT_RESOLUTION = 128
DEFAULT_SMOOTH = 0.75  # voxels
_CHUNK = 1 << 18


def _check(masks: np.ndarray, projections: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    if masks.ndim != 3 or projections.shape != (masks.shape[0], 3, 4):
        raise NfkitError(f"visual hull: expected masks [V, H, W] and projections [V, 3, 4], got "
                         f"{tuple(masks.shape)} and {tuple(projections.shape)}")
    if lo.shape != (3,) or hi.shape != (3,) or not np.all(hi > lo):
        raise NfkitError("visual hull: expected a box (lo [3], hi [3]) with hi > lo on every axis")


def voxel_centres(lo, hi, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel centres of a ``resolution``^3 grid over the box: ([R, R, R, 3] float64, voxel size [3])."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    size = (hi - lo) / resolution
    axes = [lo[k] + (np.arange(resolution) + 0.5) * size[k] for k in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1), size


def inside_all(points: np.ndarray, masks: np.ndarray, projections: np.ndarray) -> np.ndarray:
    """[N] bool: each point [N, 3] projects in front of every camera and onto a True pixel of every mask."""
    n_views, h, w = masks.shape
    keep = np.ones(len(points), bool)
    homo = np.concatenate([points, np.ones((len(points), 1))], 1)
    for v in range(n_views):
        idx = keep.nonzero()[0]
        if idx.size == 0:
            break
        p = homo[idx] @ projections[v].T
        z = p[:, 2]
        front = z > 1e-12
        u = np.floor(p[:, 0] / np.where(front, z, 1.0) + 0.5).astype(np.int64)
        r = np.floor(p[:, 1] / np.where(front, z, 1.0) + 0.5).astype(np.int64)
        ok = front & (u >= 0) & (u < w) & (r >= 0) & (r < h)
        ok[ok] = masks[v, r[ok], u[ok]]
        keep[idx] = ok
    return keep


def carve(masks, projections, lo, hi, resolution: int = DEFAULT_RESOLUTION) -> np.ndarray:
    """Occupancy [R, R, R] bool of the visual hull on a grid over the box [lo, hi] (axis order x, y, z)."""
    masks = np.asarray(masks).astype(bool)
    projections = np.asarray(projections, np.float64)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    _check(masks, projections, lo, hi)
    centres, _ = voxel_centres(lo, hi, resolution)
    flat = centres.reshape(-1, 3)
    occ = np.zeros(len(flat), bool)
    for s in range(0, len(flat), _CHUNK):
        occ[s:s + _CHUNK] = inside_all(flat[s:s + _CHUNK], masks, projections)
    return occ.reshape(resolution, resolution, resolution)


def occupancy_to_mesh(occ: np.ndarray, lo, hi, smooth: float = DEFAULT_SMOOTH):
    """Marching cubes (level 0.5) of a voxel occupancy over the box, blurred by a Gaussian of ``smooth`` voxels
    (0: none) -> closed trimesh.Trimesh in world units."""
    import trimesh
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    if not occ.any():
        raise NfkitError("visual hull: no voxel lies inside every silhouette (cameras, masks or box disagree)")
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    size = (hi - lo) / np.asarray(occ.shape)
    padded = np.pad(occ.astype(np.float32), 1)
    if smooth > 0:
        padded = gaussian_filter(padded, smooth)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=tuple(size))
    # padded index i has its centre at lo + (i - 1 + 0.5) * size
    verts = verts + lo - 0.5 * size
    mesh = trimesh.Trimesh(verts, faces, process=True)
    if mesh.volume < 0:  # outward normals whatever skimage's winding
        mesh.invert()
    return mesh


def visual_hull(masks, projections, lo, hi, resolution: int = DEFAULT_RESOLUTION, smooth: float = DEFAULT_SMOOTH):
    """The visual hull of silhouettes ``masks`` [V, H, W] seen by ``projections`` [V, 3, 4] (module doc) inside
    the box [lo, hi], as a closed trimesh.Trimesh in world coordinates."""
    return occupancy_to_mesh(carve(masks, projections, lo, hi, resolution), lo, hi, smooth)


def axes_meeting_point(projections) -> np.ndarray:
    """[3] the point nearest (least squares) to every camera's optical axis, for ``projections`` [V, 3, 4]."""
    projections = np.asarray(projections, np.float64)
    m, p4 = projections[:, :, :3], projections[:, :, 3]
    centres = -np.linalg.solve(m, p4[..., None])[..., 0]
    axes = m[:, 2] / np.linalg.norm(m[:, 2], axis=-1, keepdims=True)  # the depth row of K R: the viewing axis
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for c, d in zip(centres, axes):
        proj = np.eye(3) - np.outer(d, d)
        a += proj
        b += proj @ c
    return np.linalg.lstsq(a, b, rcond=None)[0]


def hull_box(masks, projections, coarse: int = 48, pad_voxels: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """A box around the visual hull without prior bounds: carve a cube around :func:`axes_meeting_point` (half
    the mean camera distance on a side) at ``coarse``^3, then the coarse hull's bounds padded by ``pad_voxels``."""
    projections = np.asarray(projections, np.float64)
    centre = axes_meeting_point(projections)
    cams = -np.linalg.solve(projections[:, :, :3], projections[:, :, 3:])[..., 0]
    half = 0.5 * float(np.linalg.norm(cams - centre, axis=-1).mean())
    lo, hi = centre - half, centre + half
    occ = carve(masks, projections, lo, hi, coarse)
    if not occ.any():
        raise NfkitError("visual hull: no voxel lies inside every silhouette (cameras, masks or box disagree)")
    idx = np.argwhere(occ)
    size = (hi - lo) / coarse
    return lo + (idx.min(0) - pad_voxels) * size, lo + (idx.max(0) + 1 + pad_voxels) * size
