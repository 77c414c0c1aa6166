"""Exporting fields: triangle meshes (marching cubes) and coloured point clouds (rendered depth), in the input
(un-normalised) scene coordinates.

* :func:`extract_mesh`: the field on a ``resolution``^3 lattice spanning its AABB (corners included; voxel =
  extent / (resolution - 1)), scikit-image marching cubes, vertices [V, 3] and faces [F, 3] (outward normals,
  counter-clockwise). Density fields: the level is the density at which one marching step of the renderer
  (``step``, world units) has opacity ``opacity``: ``sigma = -ln(1 - opacity) / step``. SDF fields: ``field.sdf``
  at level 0 (negative inside); occupancy fields: the logit at 0 (positive inside). A field whose density depends
  on the view is contoured at the mean of the densities seen from a few camera centres
  (:func:`~nfkit.renderers.view_density.mean_view_density`). SDF and occupancy meshes are closed (the lattice is
  padded with "outside", so a surface cut by the AABB is capped there: watertight). Vertex colours: ``field(x, d)`` viewed along the
  inward normal (``d = -n``), for radiance and SDF fields.
* :func:`extract_points`: render views (training cameras or virtual ones), keep pixels of opacity > 0.5, point =
  ray origin + (expected depth / opacity) x direction, colour = rendered rgb / opacity; then a statistical outlier
  filter (:func:`nfkit.cleanup.outlier_mask`: open3d when installed, else the same filter with scipy).
* :func:`to_input_coords`: normalised -> input coordinates, inverting the field file's ``normalization.transform``
  (4x4, input -> normalised; see :func:`nfkit.datasets.scene.unnormalize_points`), in float64.
* :func:`write_mesh` / :func:`write_points`: trimesh writers (.ply, .obj, .glb for meshes; .ply for points) to a
  temporary name, then an atomic rename. Meshes are cleaned first (:func:`nfkit.cleanup.clean_mesh`: degenerate
  and duplicated triangles, the largest connected component; open3d when installed, else numpy, the same result)
  and carry vertex normals from their faces.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from nfkit.cleanup import clean_mesh, outlier_mask, resolved_backend
from nfkit.errors import NfkitError
from nfkit.fields.base import kind_of, require_kind

MESH_SUFFIXES = (".ply", ".obj", ".glb")
RENDERABLE = ("density", "sdf")  # kinds the renderer draws (points from rendered depth)


def to_input_coords(points: np.ndarray, normalization: dict | None) -> np.ndarray:
    """points [P, 3] normalised -> [P, 3] float64 input coordinates (``normalization``: the field file's)."""
    t = np.asarray((normalization or {}).get("transform", np.eye(4)), dtype=np.float64).reshape(4, 4)
    inv = np.linalg.inv(t)
    return np.asarray(points, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def to_field_coords(points: np.ndarray, normalization: dict | None) -> np.ndarray:
    """points [P, 3] input coordinates -> [P, 3] float64 normalised (the field's), the inverse of
    :func:`to_input_coords`."""
    t = np.asarray((normalization or {}).get("transform", np.eye(4)), dtype=np.float64).reshape(4, 4)
    return np.asarray(points, dtype=np.float64) @ t[:3, :3].T + t[:3, 3]


@torch.no_grad()
def field_lattice(fn, aabb: torch.Tensor, resolution: int, chunk: int = 1 << 16) -> np.ndarray:
    """fn: x [N, 3] -> [N] on the lattice of ``resolution``^3 points spanning ``aabb`` [2, 3] (corners included).
    Returns [R, R, R] float32, indexed (x, y, z)."""
    r = int(resolution)
    axes = [torch.linspace(float(aabb[0, i]), float(aabb[1, i]), r) for i in range(3)]
    gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([gx, gy, gz], -1).reshape(-1, 3).to(aabb.device)
    vals = torch.cat([fn(p).float().cpu() for p in pts.split(chunk)])
    return vals.reshape(r, r, r).numpy()


def density_level(opacity: float, step: float) -> float:
    """Density whose opacity over one marching step ``step`` is ``opacity``."""
    if not 0 < opacity < 1:
        raise NfkitError(f"--opacity must be in (0, 1), got {opacity}")
    return -math.log(1 - opacity) / step


@torch.no_grad()
def extract_mesh(field, resolution: int = 256, opacity: float = 0.5, step: float | None = None,
                 color: bool = True, centres: torch.Tensor | None = None) -> dict:
    """Marching cubes on ``field`` (see the module docstring). Returns ``vertices`` [V, 3], ``faces`` [F, 3],
    ``normals`` [V, 3] (outward, unit), ``colors`` [V, 3] uint8 or None, ``level``, in normalised coordinates.
    ``centres``: camera centres [C, 3] for a field whose density depends on the view (``mean_view_density``)."""
    from skimage import measure

    from nfkit.renderers.view_density import mean_view_density

    if resolution < 8:
        raise NfkitError(f"--resolution must be at least 8, got {resolution}")
    aabb = field.aabb
    kind = kind_of(field)
    vol = field_lattice(field.sdf if kind == "sdf" else mean_view_density(field, centres), aabb, resolution)
    if kind == "density":
        from nfkit.renderers import default_step_size

        level = density_level(opacity, step or default_step_size(aabb.cpu(), 256))
        sdf_like = -vol + level  # negative inside, as an SDF
    elif kind == "sdf":
        level, sdf_like = 0.0, vol
    elif kind == "occupancy":
        level, sdf_like = 0.0, -vol
    else:
        raise NfkitError(f"a {kind} field has no surface to mesh")
    if not (sdf_like.min() < 0 < sdf_like.max()):
        raise NfkitError(f"the field has no surface at level {level:.4g} inside its bounds "
                         f"(range {float(vol.min()):.4g} .. {float(vol.max()):.4g}); try another --opacity")
    spacing = ((aabb[1] - aabb[0]) / (resolution - 1)).cpu().numpy()
    origin = aabb[0].cpu().numpy()
    if kind != "density":  # surfaces are closed: outside beyond the bounds, so a cut at the AABB is capped
        sdf_like = np.pad(sdf_like, 1, constant_values=max(float(sdf_like.max()), 1e-3))
        origin = origin - spacing
    verts, faces, normals, _ = measure.marching_cubes(sdf_like, 0.0, spacing=tuple(float(s) for s in spacing),
                                                      gradient_direction="descent")
    verts = verts + origin
    # with "descent" on an SDF-like volume skimage winds the faces counter-clockwise seen from outside (positive
    # volume) and its normals point inward (checked on a sphere in tests/test_export.py): flip them
    normals = -normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    colors = None
    if color and kind in RENDERABLE:
        x = torch.as_tensor(verts, dtype=torch.float32, device=aabb.device)
        n = torch.as_tensor(normals, dtype=torch.float32, device=aabb.device)
        rgb = torch.cat([field(xc, -nc).rgb.float().cpu() for xc, nc in zip(x.split(1 << 16), n.split(1 << 16))])
        colors = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return {"vertices": verts.astype(np.float64), "faces": faces.astype(np.int64), "normals": normals,
            "colors": colors, "level": level}


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_mesh(mesh_dict: dict, path, normalization: dict | None = None, keep_largest: bool = True,
               backend: str = "auto") -> dict:
    """Write a mesh from :func:`extract_mesh` in input coordinates, with its vertex colours and vertex normals (the
    area-weighted mean of the faces' normals: on a sharp density field these follow the surface better than the
    lattice gradient of :func:`extract_mesh`, 98 % against 78 % within 26 degrees on a sphere at 32^3), after
    :func:`nfkit.cleanup.clean_mesh` (``backend``: its open3d or numpy path). Returns {"vertices", "faces", "path",
    "cleanup"}."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise NfkitError(f"--mesh {path}: expected a .ply, .obj or .glb file name")
    verts, faces, arrays = clean_mesh(mesh_dict["vertices"], mesh_dict["faces"], {"colors": mesh_dict["colors"]},
                                      keep_largest, backend)
    mesh = trimesh.Trimesh(to_input_coords(verts, normalization), faces, vertex_colors=arrays["colors"],
                           process=False)
    _ = mesh.vertex_normals  # computed now, so the writers include them
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    mesh.export(str(tmp), file_type=path.suffix.lower()[1:])
    os.replace(tmp, path)
    return {"vertices": len(mesh.vertices), "faces": len(mesh.faces), "path": str(path),
            "cleanup": resolved_backend(backend)}


@torch.no_grad()
def extract_points(field, grid, opts, cams, max_points: int = 500_000, min_opacity: float = 0.5,
                   seed: int = 0) -> dict:
    """Coloured points from rendered depth (see the module docstring). cams: :class:`Cameras` to render.
    Returns ``points`` [P, 3] float64 (normalised coordinates), ``colors`` [P, 3] uint8."""
    from nfkit.renderers import image_rays
    from nfkit.renderers.render import render_rays_inference

    require_kind(field, ("density",), "--points (rendered depth of a radiance field)")
    pts, cols = [], []
    for i in range(len(cams)):
        rays_o, rays_d = image_rays(cams, i)
        for o, d in zip(rays_o.split(1 << 14), rays_d.split(1 << 14)):
            out = render_rays_inference(field, grid, o, d, opts, None)
            keep = out["opacity"] > min_opacity
            if keep.any():
                op = out["opacity"][keep]
                pts.append(o[keep] + d[keep] * (out["depth"][keep] / op)[:, None])
                cols.append((out["rgb"][keep] / op[:, None]).clamp(0, 1))
    if not pts:
        raise NfkitError(f"no pixel of the {len(cams)} views has opacity > {min_opacity}: nothing to export")
    p, c = torch.cat(pts).double().cpu().numpy(), torch.cat(cols).cpu().numpy()
    if len(p) > max_points:
        sel = np.random.default_rng(seed).choice(len(p), max_points, replace=False)
        p, c = p[sel], c[sel]
    return {"points": p, "colors": (c * 255 + 0.5).astype(np.uint8)}


def write_points(pts: dict, path, normalization: dict | None = None, filter_outliers: bool = True,
                 backend: str = "auto") -> dict:
    """Write points from :func:`extract_points` as a coloured PLY in input coordinates, after the statistical
    outlier filter (:func:`nfkit.cleanup.outlier_mask`, ``backend``: its open3d or scipy path)."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise NfkitError(f"--points {path}: expected a .ply file name")
    p, c = pts["points"], pts["colors"]
    if filter_outliers:
        keep = outlier_mask(p, backend=backend)
        p, c = p[keep], c[keep]
    cloud = trimesh.PointCloud(to_input_coords(p, normalization),
                               colors=np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    cloud.export(str(tmp), file_type="ply")
    os.replace(tmp, path)
    return {"points": len(p), "path": str(path)}
