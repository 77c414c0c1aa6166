"""Data with ground truth: multi-view RGB + mask + depth of a mesh, rendered by ray casting with known cameras.

* Mesh: read and normalised by :func:`nfkit.datasets.shapes.load_mesh` with ``half_extent`` 1 (the bounding box
  centred at the origin, its longest side spanning [-1, 1], so it fits the cube [-1, 1]^3); the similarity
  ``x_n = s * (x - c)`` from the mesh file's coordinates is ``SceneData.transform``, so geometry fitted on these
  views can be scored in the mesh's own coordinates (:func:`nfkit.datasets.unnormalize_points`).
* Cameras: ``n_views`` on a sphere of radius :data:`CAMERA_DISTANCE` around the origin (Fibonacci directions,
  turned by a random rotation drawn from ``seed``), each looking at the origin with world +Z up (nerfstudio /
  OpenGL convention), square ``size`` x ``size`` pinhole images whose field of view holds the mesh's bounding
  sphere with a 5 % margin.  The same frame as :func:`nfkit.datasets.normalize.normalize_poses` would choose, so
  the folder written by :func:`write_mesh_views` loads back (``nfkit fit DIR``) to the same normalised scene.
* Shading: Lambertian, flat (face normals), two directional lights fixed in the world (key and fill) plus
  ambient, so a surface point has the same colour in every view (multi-view photometric matching is well posed);
  albedo: a smooth procedural colour pattern of the normalised surface position (:func:`albedo`).
* Per pixel (centre ray, ``spp`` = 1): alpha = mask = the ray hits the mesh; depth = z-depth (distance along the
  camera's viewing axis -Z) of the hit in normalised units, 0 where nothing is hit.  ``spp`` = k > 1 casts a k x k
  grid of rays per pixel: RGB and alpha (coverage) are averaged, mask and depth stay those of the centre ray.

Ray casting: :func:`nfkit.datasets.raycast.cast_rays` (open3d when it imports, else Embree through trimesh, else
trimesh's numpy intersector).  Needs ``trimesh[easy]`` and scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nfkit.atomic import write_json_atomic
from nfkit.cameras import Cameras, pixel_rays
from nfkit.errors import NfkitError
from nfkit.poses import fibonacci_directions, look_at

from .nerfstudio import HOLDOUT_EVERY
from .normalize import TARGET_DISTANCE, points_aabb
from .raycast import cast_rays
from .scene import SceneData
from .shapes import normalise_mesh

HALF_EXTENT = 1.0  # the normalised mesh's longest side spans [-1, 1]
CAMERA_DISTANCE = TARGET_DISTANCE  # 4: the distance the nerfstudio reader normalises cameras to
FOV_MARGIN = 1.05
KEY_LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
KEY, FILL, AMBIENT = 0.6, 0.25, 0.25  # light weights; the fill light shines from -KEY_LIGHT
# albedo: per channel 0.15 + 0.7 * (0.5 + 0.5 sin(2 pi k . x + phase)), ~3 periods across the normalised mesh
_WAVES = np.array([[1.3, 0.7, 0.4], [-0.5, 1.2, 0.9], [0.8, -0.6, 1.4]])
_PHASES = np.array([0.0, 2.1, 4.2])


@dataclass
class MeshViews:
    """Rendered views of a mesh with their ground truth.

    scene: every view as a :class:`SceneData`: RGBA images [N, H, W, 4] (straight alpha), cameras in normalised
        coordinates, ``transform`` = the mesh file's coordinates -> normalised, ``aabb`` around the mesh.
    depth: [N, H, W] float32 z-depth in normalised units (0 where the centre ray misses).
    mask: [N, H, W] bool, the centre ray hits the mesh.
    mesh: the normalised ``trimesh.Trimesh`` (normalised coordinates).
    source: the mesh file (or "<trimesh>" for a mesh given in memory).
    """

    scene: SceneData
    depth: torch.Tensor
    mask: torch.Tensor
    mesh: object
    source: str

    def split(self, split: str) -> SceneData:
        """The views of ``split`` by the nerfstudio reader's rule (every 8th view is "test" / "val"; "all")."""
        n = len(self.scene)
        if split == "all":
            idx = list(range(n))
        elif split in ("train", "val", "test"):
            held = split != "train"
            idx = [i for i in range(n) if (i % HOLDOUT_EVERY == 0) == held]
        else:
            raise NfkitError(f"split {split!r}: expected one of train, val, test, all")
        return subset(self.scene, idx)


def subset(scene: SceneData, idx) -> SceneData:
    """The views ``idx`` (list of ints) of ``scene``."""
    i = torch.as_tensor(idx, dtype=torch.long)
    return SceneData(images=scene.images[i], cameras=scene.cameras[i], names=[scene.names[k] for k in idx],
                     aabb=scene.aabb, transform=scene.transform, scale=scene.scale, source=scene.source)


def albedo(x: np.ndarray) -> np.ndarray:
    """Procedural surface colour: points [P, 3] (normalised coordinates) -> RGB [P, 3] in [0.15, 0.85]."""
    return 0.15 + 0.7 * (0.5 + 0.5 * np.sin(2 * math.pi * x @ _WAVES.T + _PHASES))


def shade(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambertian colour of surface points [P, 3] with unit normals [P, 3] (facing the viewer) -> RGB [P, 3]."""
    ndl = normals @ KEY_LIGHT
    light = AMBIENT + KEY * np.clip(ndl, 0.0, None) + FILL * np.clip(-ndl, 0.0, None)
    return np.clip(albedo(points) * light[:, None], 0.0, 1.0)


def sphere_cameras(n_views: int, size: int, mesh_radius: float, seed: int = 0,
                   distance: float = CAMERA_DISTANCE) -> Cameras:
    """``n_views`` square pinhole cameras at ``distance`` from the origin looking at it (see the module docstring);
    ``mesh_radius``: the radius of a sphere around the origin holding the mesh (it fills the field of view)."""
    from scipy.spatial.transform import Rotation

    if not 0 < mesh_radius < distance:
        raise NfkitError(f"mesh radius {mesh_radius} must be positive and below the camera distance {distance}")
    dirs = fibonacci_directions(n_views) @ Rotation.random(random_state=seed).as_matrix().T
    c2w = look_at(distance * dirs, np.zeros(3), (0.0, 0.0, 1.0))
    half = min(math.asin(mesh_radius / distance) * FOV_MARGIN, math.radians(80))
    f = torch.full((n_views,), 0.5 * size / math.tan(half))
    c = torch.full((n_views,), 0.5 * size)
    return Cameras(torch.as_tensor(c2w, dtype=torch.float32), f, f.clone(), c, c.clone(), size, size)


def render_view(mesh, cams: Cameras, i: int, spp: int = 1, backend: str = "auto"):
    """View ``i`` of ``cams`` -> (rgba [H, W, 4] float32, depth [H, W] float32, mask [H, W] bool)."""
    h, w = cams.height, cams.width
    offs = (np.arange(spp) + 0.5) / spp - 0.5 if spp > 1 else np.zeros(1)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    rgb_sum, hits = np.zeros((h * w, 3)), np.zeros(h * w)
    for dy in offs:
        for dx in offs:
            idx = torch.full((h * w,), i, dtype=torch.long)
            o, d = pixel_rays(cams, idx, u.reshape(-1) + dx, v.reshape(-1) + dy)
            o, d = o.double().numpy(), d.double().numpy()
            t, face = cast_rays(mesh, o, d, backend)
            hit = face >= 0
            pts = o[hit] + t[hit, None] * d[hit]
            n = np.asarray(mesh.face_normals)[face[hit]]
            n = np.where((np.einsum("ij,ij->i", n, d[hit]) > 0)[:, None], -n, n)
            rgb_sum[hit] += shade(pts, n)
            hits += hit
            if dx == offs[len(offs) // 2] and dy == offs[len(offs) // 2]:
                centre_t, centre_hit, centre_d = t, hit, d
    alpha = hits / len(offs) ** 2
    rgb = np.where(hits[:, None] > 0, rgb_sum / np.maximum(hits, 1)[:, None], 0.0)
    axis = -cams.c2w[i, :3, 2].double().numpy()
    depth = np.where(centre_hit, centre_t * (centre_d @ axis), 0.0)
    rgba = np.concatenate([rgb, alpha[:, None]], -1).reshape(h, w, 4)
    return (torch.from_numpy(rgba).float(), torch.from_numpy(depth.reshape(h, w)).float(),
            torch.from_numpy(centre_hit.reshape(h, w)))


def mesh_views(mesh, n_views: int = 40, size: int = 128, seed: int = 0, spp: int = 1,
               backend: str = "auto") -> MeshViews:
    """Renders ``n_views`` views of ``mesh`` (a file path, or a ``trimesh.Trimesh`` in its own coordinates)."""
    from .shapes import load_mesh

    for name, v, lo in (("n_views", n_views, 1), ("size", size, 2), ("spp", spp, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise NfkitError(f"{name} must be an integer >= {lo}, got {v!r}")
    if isinstance(mesh, (str, Path)):
        source = str(mesh)
        norm, transform, scale = load_mesh(mesh, half_extent=HALF_EXTENT)
    else:
        source = "<trimesh>"
        norm, transform, scale = _normalise(mesh)
    radius = float(np.linalg.norm(np.asarray(norm.vertices), axis=1).max())
    cams = sphere_cameras(n_views, size, radius, seed)
    views = [render_view(norm, cams, i, spp, backend) for i in range(n_views)]
    rgba, depth, mask = (torch.stack(x) for x in zip(*views))
    transform = torch.as_tensor(transform, dtype=torch.float64)
    centre = -transform[:3, 3].numpy() / scale
    bounds = np.asarray(norm.bounds) / scale + centre  # the mesh's box in file coordinates
    aabb = torch.tensor(points_aabb(bounds, scale, centre), dtype=torch.float32)
    scene = SceneData(images=rgba, cameras=cams, names=[f"images/view_{i:03d}.png" for i in range(n_views)],
                      aabb=aabb, transform=transform, scale=float(scale), source=source)
    return MeshViews(scene, depth, mask, norm, source)


def _normalise(mesh):
    """An in-memory mesh -> (normalised copy, transform [4, 4], scale), the rule of ``shapes.load_mesh``."""
    if len(getattr(mesh, "faces", ())) == 0 or float(mesh.extents.max()) <= 0:
        raise NfkitError("mesh has no triangles or no extent")
    return normalise_mesh(mesh, HALF_EXTENT)


def write_mesh_views(views: MeshViews, out_dir) -> Path:
    """Writes ``out_dir/transforms.json`` (nerfstudio format, cameras in the mesh file's coordinates),
    ``images/view_XXX.png`` (RGBA, 8 bit, alpha = coverage = the mask at ``spp`` 1) and ``depth/view_XXX.npy``
    (float32 z-depth in the mesh file's units, 0 where nothing is hit; frame key ``depth_file_path``).

    The json also holds ``nfkit_points_bounds`` (the mesh's box, so the reader's AABB is the one of
    :func:`mesh_views`) and ``nfkit_mesh``: the mesh file and the 4x4 ``transform`` file -> normalised.
    Returns the json's path.
    """
    import imageio.v3 as iio

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    scene, s = views.scene, views.scene.scale
    inv = torch.linalg.inv(scene.transform).numpy()
    cams = scene.cameras
    frames = []
    for i, name in enumerate(scene.names):
        img = (scene.images[i].numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        iio.imwrite(out / name, img)
        depth_name = f"depth/{Path(name).stem}.npy"
        np.save(out / depth_name, (views.depth[i].numpy() / s).astype(np.float32))
        c2w = cams.c2w[i].double().numpy().copy()
        c2w[:3, 3] = inv[:3, :3] @ c2w[:3, 3] + inv[:3, 3]
        frames.append({"file_path": name, "depth_file_path": depth_name, "transform_matrix": c2w.tolist()})
    centre = inv[:3, 3]
    bounds = np.asarray(views.mesh.bounds) / s + centre
    meta = {"camera_model": "PINHOLE", "fl_x": float(cams.fx[0]), "fl_y": float(cams.fy[0]),
            "cx": float(cams.cx[0]), "cy": float(cams.cy[0]), "w": cams.width, "h": cams.height,
            "nfkit_points_bounds": bounds.tolist(),
            "nfkit_mesh": {"file": views.source, "transform": scene.transform.tolist(), "scale": s},
            "frames": frames}
    return write_json_atomic(out / "transforms.json", meta)


def render_mesh_dataset(mesh_path, out_dir, n_views: int = 40, size: int = 128, seed: int = 0) -> Path:
    """Renders ``n_views`` views of the mesh file at ``size`` x ``size`` and writes them as a dataset folder
    (:func:`write_mesh_views`) that ``nfkit fit OUT_DIR`` reads.  Returns the transforms.json path."""
    return write_mesh_views(mesh_views(mesh_path, n_views, size, seed), out_dir)
