"""nfkit/mesh_metrics.py on primitives with known answers."""
import math
from pathlib import Path

import nfkit  # noqa: F401
import numpy as np
import pytest
import trimesh

from nfkit.errors import NfkitError
from nfkit.mesh_metrics import compare_mesh_files, compare_meshes, genus, load_mesh

N = 20_000
MESHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"


def sphere(radius=1.0):
    return trimesh.creation.icosphere(subdivisions=5, radius=radius)


def test_identical_meshes_score_near_zero():
    s = compare_meshes(sphere(), sphere(), n_points=N)
    # the floor of two independent samples: about 0.5 sqrt(area / (10 N)) of a 2 sqrt(3) diagonal
    floor_pct = 100 * 0.5 * math.sqrt(4 * math.pi / (10 * N)) / (2 * math.sqrt(3))
    assert s.chamfer_l1_pct < 2 * floor_pct
    assert s.normal_consistency > 0.999
    assert s.precision == 1.0 and s.recall == 1.0 and s.fscore == 1.0


def test_larger_sphere_gives_the_radius_difference():
    dr = 0.05
    s = compare_meshes(sphere(1.0 + dr), sphere(1.0), n_points=N)
    assert s.accuracy == pytest.approx(dr, rel=0.05) and s.completeness == pytest.approx(dr, rel=0.05)
    assert s.chamfer_l1_pct == pytest.approx(100 * dr / (2 * math.sqrt(3)), rel=0.05)
    assert s.normal_consistency > 0.999   # concentric: the normals agree
    # 0.05 is 1.44 % of the diagonal: a 1 % threshold rejects every point, a 2 % one accepts them all
    assert compare_meshes(sphere(1.05), sphere(1.0), n_points=N, threshold_pct=1.0).fscore == 0.0
    assert compare_meshes(sphere(1.05), sphere(1.0), n_points=N, threshold_pct=2.0).fscore == 1.0


def test_chamfer_is_relative_to_the_reference_diagonal():
    a = compare_meshes(sphere(1.1), sphere(1.0), n_points=N)
    b = compare_meshes(sphere(11.0), sphere(10.0), n_points=N)
    assert a.chamfer_l1_pct == pytest.approx(b.chamfer_l1_pct, rel=0.02)
    assert b.diagonal == pytest.approx(10 * a.diagonal, rel=1e-3)


def test_normal_consistency_drops_for_a_cube_in_a_sphere():
    cube = trimesh.creation.box(extents=(1.6, 1.6, 1.6))
    s = compare_meshes(cube, sphere(1.0), n_points=N)
    assert 0.5 < s.normal_consistency < 0.95
    assert s.chamfer_l1_pct > 1.0


def test_partial_mesh_has_precision_but_not_recall():
    full = sphere(1.0)
    half = full.copy()
    half.update_faces(half.triangles_center[:, 2] > 0)
    s = compare_meshes(half, full, n_points=N, threshold_pct=1.0)
    assert s.precision > 0.99 and 0.4 < s.recall < 0.6
    assert s.completeness > 5 * s.accuracy


def test_files_and_genus(tmp_path):
    torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    assert genus(torus) == 1 and genus(sphere()) == 0
    torus.export(tmp_path / "t.ply")
    s = compare_mesh_files(tmp_path / "t.ply", tmp_path / "t.ply", n_points=5000)
    assert s.normal_consistency > 0.99
    with pytest.raises(NfkitError, match="no such mesh"):
        load_mesh(tmp_path / "missing.ply")
    (tmp_path / "bad.ply").write_text("not a mesh")
    with pytest.raises(NfkitError):
        load_mesh(tmp_path / "bad.ply")


def test_shared_mesh_against_itself():
    if not (MESHES / "fandisk.off").is_file():
        pytest.skip("needs ../shared/data/meshes")
    mesh = load_mesh(MESHES / "fandisk.off")
    assert genus(mesh) == 0
    s = compare_meshes(mesh, mesh, n_points=N)
    floor_pct = 100 * 0.5 * math.sqrt(mesh.area / (10 * N)) / s.diagonal
    assert s.chamfer_l1_pct < 1.5 * floor_pct and s.normal_consistency > 0.99
    shifted = mesh.copy()
    shifted.apply_translation(np.array([0.01, 0, 0]) * s.diagonal)
    assert compare_meshes(shifted, mesh, n_points=N).chamfer_l1_pct > 0.3


def opencv_camera(eye, target, f=120.0, size=96):
    """P = K [R | t] of an OpenCV camera at ``eye`` looking at ``target`` (pixel centres at integers)."""
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0]) if abs(z[2]) < 0.99 else np.cross(z, [0, 1.0, 0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])
    k = np.array([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]])
    return k @ np.concatenate([r, -r @ eye[:, None]], 1)


def sphere_silhouette(p, centre, radius, size=96):
    """Analytic mask: the pixel's ray (through its centre) meets the sphere."""
    m = p[:, :3]
    eye = -np.linalg.solve(m, p[:, 3])
    v, u = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    d = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3).astype(float) @ np.linalg.inv(m).T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    oc = eye - centre
    b = d @ oc
    return (b * b - oc @ oc + radius**2 > 0).reshape(size, size)


def test_visual_hull_of_a_sphere():
    from nfkit.visual_hull import axes_meeting_point, carve, hull_box, visual_hull

    centre, radius = np.array([0.1, -0.2, 0.05]), 0.5
    eyes = [centre + 3 * np.array([math.cos(a) * math.cos(e), math.sin(a) * math.cos(e), math.sin(e)])
            for e in (-0.6, 0.0, 0.7) for a in np.linspace(0, 2 * math.pi, 6, endpoint=False) + e]
    ps = np.stack([opencv_camera(eye, centre) for eye in eyes])
    masks = np.stack([sphere_silhouette(p, centre, radius) for p in ps])
    lo, hi = centre - 0.8, centre + 0.8
    hull = visual_hull(masks, ps, lo, hi, resolution=64)
    assert hull.is_watertight and hull.volume > 0
    true = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    true.apply_translation(centre)
    # 18 views: the hull hugs the sphere (within ~2 voxels) and contains it up to the grid
    s = compare_meshes(hull, true, n_points=5000)
    assert s.chamfer_l1_pct < 1.0 and s.normal_consistency > 0.97
    assert true.volume * 0.95 < hull.volume < true.volume * 1.15
    # without prior bounds: the cameras' axes meet at the centre, the box holds the sphere with a small margin
    assert np.allclose(axes_meeting_point(ps), centre, atol=1e-9)
    b_lo, b_hi = hull_box(masks, ps)
    assert np.all(b_lo < centre - radius) and np.all(b_hi > centre + radius)
    assert np.all(b_hi - b_lo < 2 * radius * 1.3)
    # one view carves only a cone: much more volume than eighteen
    one = carve(masks[:1], ps[:1], lo, hi, resolution=64)
    assert one.sum() > 1.5 * carve(masks, ps, lo, hi, resolution=64).sum()


def test_visual_hull_of_temple_ring_matches_its_stated_box():
    """Real calibrated photos: the hull of the 16 thresholded silhouettes fills the box the dataset's README states
    (checks the K [R | t] pixel convention on real data)."""
    import imageio.v3 as iio

    from nfkit.visual_hull import hull_box, visual_hull

    root = MESHES.parent / "temple_ring"
    if not (root / "templeSR_par.txt").is_file():
        pytest.skip("needs ../shared/data/temple_ring")
    rows = [ln.split() for ln in (root / "templeSR_par.txt").read_text().splitlines()[1:] if ln.strip()]
    vals = np.array([[float(v) for v in r[1:]] for r in rows])
    k, rot, t = vals[:, :9].reshape(-1, 3, 3), vals[:, 9:18].reshape(-1, 3, 3), vals[:, 18:21, None]
    ps = k @ np.concatenate([rot, t], 2)
    masks = np.stack([iio.imread(root / r[0])[..., :3].max(-1) > 0.18 * 255 for r in rows])
    lo, hi = hull_box(masks, ps)
    hull = visual_hull(masks, ps, lo, hi, resolution=64)
    stated_lo, stated_hi = np.array([-0.073568, 0.021728, -0.012445]), np.array([0.028855, 0.181892, 0.062736])
    voxel = float(((hi - lo) / 64).max())
    assert hull.is_watertight
    assert np.all(hull.bounds[0] <= stated_lo + 2 * voxel) and np.all(hull.bounds[1] >= stated_hi - 2 * voxel)
    # the ring sees the base at a grazing angle: the hull may hang a little below it, no further than 1.5 cm
    assert np.all(hull.bounds[0] > stated_lo - 0.015) and np.all(hull.bounds[1] < stated_hi + 0.015)
