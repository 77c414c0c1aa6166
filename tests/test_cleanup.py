"""Mesh and point-cloud clean-up (nfkit.cleanup): the numpy/scipy reference on hand-made cases, the open3d fast path
against it, and exported files read back by open3d."""
import numpy as np
import pytest
import torch

from nfkit import cleanup, export
from nfkit.errors import NfkitError

HAS_O3D = cleanup.open3d_module() is not None
needs_o3d = pytest.mark.skipif(not HAS_O3D, reason="open3d is not installed or does not import "
                               "(pip install nfkit[open3d]; on Debian also apt-get install libusb-1.0-0)")

# a tetrahedron (faces 0-3), a lone triangle far away (4), a degenerate face (5), the tetrahedron's first face again,
# rotated (6: the same winding, so a duplicate), an unused vertex (9)
VERTS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                  [5, 5, 5], [6, 5, 5], [5, 6, 5], [9, 9, 9], [7, 7, 7], [8, 8, 8]], dtype=np.float64)
FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3], [4, 5, 6], [7, 7, 8], [2, 1, 0]])


def test_clean_mesh_reference_by_hand():
    colors = np.arange(30, dtype=np.uint8).reshape(10, 3)
    v, f, a = cleanup.clean_mesh(VERTS, FACES, {"colors": colors, "normals": None}, backend="numpy")
    np.testing.assert_array_equal(v, VERTS[:4])
    np.testing.assert_array_equal(f, FACES[:4])
    np.testing.assert_array_equal(a["colors"], colors[:4])
    assert a["normals"] is None
    v, f, _ = cleanup.clean_mesh(VERTS, FACES, keep_largest=False, backend="numpy")
    np.testing.assert_array_equal(f, [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(v, VERTS[:7])


def test_components_join_through_edges_not_vertices():
    """Two triangles that share only a vertex are two components; the bigger one (two faces sharing an edge) wins."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [1, -1, 0]], dtype=np.float64)
    faces = np.array([[0, 3, 4], [0, 1, 2], [1, 0, 5]])  # face 0 touches the others at vertex 0 only
    _, f, _ = cleanup.clean_mesh(verts, faces, backend="numpy")
    assert len(f) == 2


@needs_o3d
def test_open3d_clean_mesh_matches_the_reference():
    m = export.extract_mesh(_TwoSpheres(), 40)
    v, f = m["vertices"], m["faces"]
    # duplicates (rotated), reversed faces (kept: the other side) and degenerate faces
    f = np.concatenate([f, f[:5][:, [1, 2, 0]], f[5:8, ::-1], [[0, 0, 1], [3, 4, 3]]])
    arrays = {"colors": m["colors"], "normals": m["normals"]}
    for keep_largest in (True, False):
        ref = cleanup.clean_mesh(v, f, arrays, keep_largest, backend="numpy")
        fast = cleanup.clean_mesh(v, f, arrays, keep_largest, backend="open3d")
        np.testing.assert_array_equal(fast[0], ref[0])
        np.testing.assert_array_equal(fast[1], ref[1])
        np.testing.assert_array_equal(fast[2]["normals"], ref[2]["normals"])
    big = cleanup.clean_mesh(v, f, arrays, True, backend="numpy")[0]
    assert np.abs(np.linalg.norm(big - [-0.4, 0, 0], axis=1) - 0.5).max() < 2 / 39  # the larger sphere is kept
    assert len(cleanup.clean_mesh(v, f, None, False, backend="numpy")[1]) == len(m["faces"]) + 3
    hand = [cleanup.clean_mesh(VERTS, FACES, backend=b) for b in ("numpy", "open3d")]
    np.testing.assert_array_equal(hand[0][1], hand[1][1])


@needs_o3d
def test_open3d_outlier_filter_matches_the_reference():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(2000, 3)) * [1.0, 0.5, 0.2], rng.uniform(-8, 8, size=(40, 3))])
    pts = np.concatenate([pts, pts[:3]])  # exact duplicates: their neighbours include a distance of 0
    for k, ratio in ((20, 2.0), (8, 1.0)):
        ref = cleanup.outlier_mask(pts, k, ratio, backend="numpy")
        fast = cleanup.outlier_mask(pts, k, ratio, backend="open3d")
        np.testing.assert_array_equal(fast, ref)
        assert ref[:2000].mean() > 0.9 and ref[2000:2040].mean() < 0.5


def test_outlier_reference_by_hand():
    """Scores are mean distances to the k nearest points, the point itself included; kept below mean + r * std."""
    pts = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [20, 0, 0]])
    # k = 2: scores 0.5, 0.5, 0.5, 0.5, 8.5 -> mean 2.1, sample std 3.58: threshold at r = 1 is 5.68
    np.testing.assert_array_equal(cleanup.outlier_mask(pts, 2, 1.0, backend="numpy"), [1, 1, 1, 1, 0])
    assert cleanup.outlier_mask(pts, 2, 3.0, backend="numpy").all()
    assert cleanup.outlier_mask(pts[:2], 2, 1.0, backend="numpy").all()  # no more than k points: kept whole


def test_backend_choice_is_checked(monkeypatch):
    with pytest.raises(NfkitError, match="backend"):
        cleanup.clean_mesh(VERTS, FACES, backend="meshlab")
    monkeypatch.setattr(cleanup, "open3d_module", lambda: None)
    with pytest.raises(NfkitError, match="open3d"):
        cleanup.outlier_mask(np.zeros((50, 3)), backend="open3d")
    assert cleanup.clean_mesh(VERTS, FACES)[1].shape == (4, 3)  # auto falls back to the reference


@needs_o3d
@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_exported_mesh_opens_in_open3d(tmp_path, suffix):
    import open3d as o3d

    pytest.importorskip("trimesh")
    m = export.extract_mesh(_TwoSpheres(), 32)
    c = np.array([10.0, -3.0, 0.5])
    t = np.eye(4) * 2.0
    t[3, 3] = 1.0
    t[:3, 3] = -2.0 * c  # normalised = 2 (input - c)
    out = export.write_mesh(m, tmp_path / f"m{suffix}", {"transform": t.tolist(), "scale": 2.0})
    assert out["cleanup"] == "open3d"
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / f"m{suffix}"))
    v = np.asarray(mesh.vertices)
    assert len(mesh.triangles) == out["faces"] and len(v) > 100
    # the larger sphere, radius 0.5 around (-0.4, 0, 0) normalised -> 0.25 around c + (-0.2, 0, 0)
    r = np.linalg.norm(v - (c + [-0.2, 0, 0]), axis=1)
    assert np.abs(r - 0.25).max() < 1 / 31
    assert mesh.has_vertex_colors() and np.allclose(np.asarray(mesh.vertex_colors)[:, 1:], 0, atol=0.01)
    if suffix != ".obj":  # trimesh writes no normals to OBJ files without a texture
        assert mesh.has_vertex_normals()
        n = np.asarray(mesh.vertex_normals)
        radial = (v - (c + [-0.2, 0, 0])) / r[:, None]
        assert np.mean(np.sum(n * radial, 1) > 0.9) > 0.95  # outward, in input coordinates


@needs_o3d
def test_exported_points_open_in_open3d(tmp_path):
    import open3d as o3d

    pytest.importorskip("trimesh")
    rng = np.random.default_rng(1)
    p = rng.normal(size=(500, 3))
    p = 0.4 * p / np.linalg.norm(p, axis=1, keepdims=True)
    pts = {"points": np.concatenate([p, [[0.9, 0.9, 0.9]]]),
           "colors": np.tile(np.array([[0, 200, 50]], np.uint8), (501, 1))}
    out = export.write_points(pts, tmp_path / "p.ply")
    cloud = o3d.io.read_point_cloud(str(tmp_path / "p.ply"))
    assert len(cloud.points) == out["points"] == 500  # the far point is dropped
    np.testing.assert_allclose(np.asarray(cloud.colors)[0], [0, 200 / 255, 50 / 255], atol=1e-6)


class _TwoSpheres(torch.nn.Module):
    """SDF of two separate spheres: radius 0.5 at (-0.4, 0, 0) and 0.3 at (0.6, 0, 0); red when coloured."""

    kind = "density"
    view_dependent_density = False

    def __init__(self):
        super().__init__()
        self.aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])

    def density(self, x):
        a = (x - torch.tensor([-0.4, 0.0, 0.0])).norm(dim=-1) - 0.5
        b = (x - torch.tensor([0.6, 0.0, 0.0])).norm(dim=-1) - 0.3
        return 400 * torch.sigmoid(-torch.minimum(a, b) / 0.003)

    def forward(self, x, d):
        from nfkit.fields.base import FieldOutput

        return FieldOutput(self.density(x), torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3))
