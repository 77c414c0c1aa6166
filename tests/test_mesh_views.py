"""nfkit.datasets.mesh_views: rendered views of a mesh with ground-truth mask and depth, and the dataset folder
they write (read back by ``load_dataset``).  Analytic checks on a trimesh sphere (always available); one test on
a mesh from ../shared/data/meshes skips without that folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")

from nfkit.cameras import image_rays  # noqa: E402
from nfkit.datasets import load_dataset, unnormalize_points  # noqa: E402
from nfkit.datasets.mesh_views import mesh_views, render_mesh_dataset, write_mesh_views  # noqa: E402
from nfkit.datasets.raycast import available_backends, cast_rays  # noqa: E402

SHARED_DATA = Path(os.environ.get("NFKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CENTRE, RADIUS = np.array([1.0, 2.0, 3.0]), 0.5


def sphere():
    m = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    m.apply_translation(CENTRE)
    return m


def analytic_depth(cams, i):
    """Centre-ray z-depth [H, W] of the normalised sphere (centre 0, radius 1), 0 on a miss."""
    o, d = (x.double().numpy() for x in image_rays(cams, i))
    b = np.einsum("ij,ij->i", o, d)
    disc = b * b - (np.einsum("ij,ij->i", o, o) - 1.0)
    t = -b - np.sqrt(np.clip(disc, 0, None))
    axis = -cams.c2w[i, :3, 2].double().numpy()
    z = np.where(disc > 0, t * (d @ axis), 0.0)
    return z.reshape(cams.height, cams.width), (disc > 0).reshape(cams.height, cams.width)


def test_sphere_depth_mask_and_transform_match_the_analytic_sphere():
    v = mesh_views(sphere(), n_views=6, size=40, seed=3)
    s = v.scene
    assert s.images.shape == (6, 40, 40, 4) and v.depth.shape == v.mask.shape == (6, 40, 40)
    # normalisation: longest side spans [-1, 1], recorded as the mesh-file -> normalised similarity
    assert np.allclose(v.mesh.bounds, [[-1] * 3, [1] * 3], atol=1e-6)
    back = unnormalize_points(torch.as_tensor(v.mesh.vertices), s)
    assert np.allclose(back.numpy(), sphere().vertices, atol=1e-9)
    assert torch.equal(s.images[..., 3] > 0.5, v.mask)  # spp 1: alpha is the mask
    for i in range(6):
        z, hit = analytic_depth(s.cameras, i)
        agree = (hit == v.mask[i].numpy()).mean()
        assert agree > 0.98, agree  # only silhouette pixels of the polygonal sphere may differ
        both = hit & v.mask[i].numpy()
        assert np.abs(z[both] - v.depth[i].numpy()[both]).max() < 5e-3  # icosphere chord error ~1e-3
        assert (v.depth[i].numpy()[~v.mask[i].numpy()] == 0).all()
    # the object fills the view but stays inside it
    assert not v.mask[:, 0].any() and not v.mask[:, -1].any() and not v.mask[:, :, 0].any()


def test_same_surface_point_has_the_same_colour_in_every_view():
    """Shading depends on the surface point only: hits of view 0 re-cast from view 1 get the colour of view 0."""
    from nfkit.datasets.mesh_views import render_view

    v = mesh_views(sphere(), n_views=4, size=32)
    cams = v.scene.cameras
    o, d = (x.double().numpy() for x in image_rays(cams, 0))
    m = v.mask[0].reshape(-1).numpy()
    pts = o[m] + (v.depth[0].reshape(-1).numpy()[m] / (d[m] @ -cams.c2w[0, :3, 2].double().numpy()))[:, None] * d[m]
    eye = cams.c2w[1, :3, 3].double().numpy()
    dirs = pts - eye
    dist = np.linalg.norm(dirs, axis=1)
    t, face = cast_rays(v.mesh, np.repeat(eye[None], len(pts), 0), dirs / dist[:, None])
    visible = np.abs(t - dist) < 1e-4  # seen from camera 1 as well
    assert visible.sum() > 50
    from nfkit.datasets.mesh_views import shade

    n = np.asarray(v.mesh.face_normals)[face[visible]]
    c1 = shade(pts[visible], n)
    c0 = v.scene.images[0].reshape(-1, 4)[torch.from_numpy(m)][torch.from_numpy(visible), :3].double().numpy()
    assert np.abs(c1 - c0).max() < 1e-5
    assert render_view(v.mesh, cams, 1)[0].shape == (32, 32, 4)


def test_folder_round_trip_through_load_dataset(tmp_path):
    v = mesh_views(sphere(), n_views=9, size=24, seed=1)
    js = write_mesh_views(v, tmp_path / "scene")
    meta = json.loads(js.read_text())
    assert len(meta["frames"]) == 9 and np.allclose(meta["nfkit_mesh"]["transform"], v.scene.transform.numpy())
    d = load_dataset(tmp_path / "scene", "all")
    assert torch.allclose(d.cameras.c2w, v.scene.cameras.c2w, atol=1e-5)
    assert torch.allclose(d.cameras.fx, v.scene.cameras.fx) and d.cameras.width == 24
    assert (d.images - v.scene.images).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.allclose(d.transform, v.scene.transform, atol=1e-9) and torch.allclose(d.aabb, v.scene.aabb, atol=1e-5)
    depth0 = np.load(tmp_path / "scene" / meta["frames"][0]["depth_file_path"])
    assert np.allclose(depth0 * v.scene.scale, v.depth[0].numpy(), atol=1e-5)  # file units = the mesh's units
    test = load_dataset(tmp_path / "scene", "test")
    assert test.names == v.split("test").names == ["images/view_000.png", "images/view_008.png"]
    assert len(v.split("train")) == 7


@pytest.mark.parametrize("backend", [b for b in ("open3d", "embree") if b in available_backends()])
def test_fast_backends_agree_with_the_numpy_reference(backend):
    m = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(0)
    o = rng.normal(size=(300, 3)) * 3
    d = -o + rng.normal(size=(300, 3)) * 0.8
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t_ref, f_ref = cast_rays(m, o, d, "trimesh")
    t, f = cast_rays(m, o, d, backend)
    assert (f >= 0).sum() > 100 and np.array_equal(f >= 0, f_ref >= 0)
    hit = f >= 0
    assert np.allclose(t[hit], t_ref[hit], atol=1e-4)


def test_real_mesh_views_lie_on_the_surface(tmp_path):
    path = SHARED_DATA / "meshes" / "blobby.off"
    if not path.is_file():
        pytest.skip(f"needs ../shared/data/meshes ({path}; set NFKIT_SHARED_DATA)")
    js = render_mesh_dataset(path, tmp_path / "blobby", n_views=8, size=48)
    d = load_dataset(js.parent, "all")
    assert len(d) == 8 and d.images.shape[-1] == 4
    v = mesh_views(path, n_views=8, size=48)
    assert all(bool(v.mask[i].any()) for i in range(8))
    # back-project the depth maps and measure the distance to the true mesh, in the mesh file's own units
    cams, pts = v.scene.cameras, []
    for i in range(8):
        o, dd = (x.double() for x in image_rays(cams, i))
        m = v.mask[i].reshape(-1)
        t = v.depth[i].reshape(-1)[m].double() / (dd[m] @ -cams.c2w[i, :3, 2].double())
        pts.append(o[m] + t[:, None] * dd[m])
    pts = unnormalize_points(torch.cat(pts), v.scene).numpy()
    true = trimesh.load(str(path), process=False, force="mesh")
    _, dist, _ = trimesh.proximity.closest_point(true, pts[::7])
    assert dist.max() < 1e-4 * float(np.linalg.norm(true.extents))


def test_sphere_cameras_are_rigid_spread_and_look_at_the_centre():
    from nfkit.datasets.mesh_views import sphere_cameras
    from nfkit.poses import fibonacci_directions, is_rigid

    d = fibonacci_directions(200)
    assert np.allclose(np.linalg.norm(d, axis=1), 1) and np.abs(d.mean(0)).max() < 0.02
    nearest = np.sort(d @ d.T, axis=1)[:, -2]  # no two directions bunch up
    assert nearest.max() < np.cos(0.15)
    cams = sphere_cameras(12, 32, mesh_radius=1.2, seed=5)
    c2w = cams.c2w.double().numpy()
    assert is_rigid(c2w).all()
    eye = c2w[:, :3, 3]
    assert np.allclose(np.linalg.norm(eye, axis=1), 4.0, atol=1e-5)
    assert np.allclose(-c2w[:, :3, 2], -eye / 4.0, atol=1e-5)  # -Z points at the origin
    other = sphere_cameras(12, 32, mesh_radius=1.2, seed=6).c2w
    assert not torch.allclose(cams.c2w, other)  # the seed turns the lattice
