"""``nfkit triplanes`` inputs (issue 23): the mesh / point-cloud reader (nfkit.datasets.shape_files), UDF targets
against a brute-force distance, bad files as one line with exit 2, and fit / train / classify on point clouds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nfkit.apps.cli import main
from nfkit.errors import NfkitError

trimesh = pytest.importorskip("trimesh")

from nfkit.apps.triplanes.bank import FitConfig  # noqa: E402
from nfkit.apps.triplanes.targets import resolve_target, udf_targets  # noqa: E402
from nfkit.datasets import shape_files as sf  # noqa: E402

TINY = ["--channels", "4", "--resolution", "8", "--hidden", "16", "--steps", "5", "--samples", "512",
        "--points-per-step", "128", "--surface-points", "64", "--cloud-points", "256", "--shard-size", "4"]


def cloud(n: int = 300, seed: int = 0, kind: str = "ball") -> np.ndarray:
    """n points [n, 3] on a unit sphere ('ball') or a box's surface ('box')."""
    rng = np.random.default_rng(seed)
    if kind == "ball":
        v = rng.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    return np.asarray(trimesh.creation.box(extents=(1.0, 0.6, 0.4)).sample(n, seed=seed))


def write_cloud(path, pts: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, pts)
    elif suffix == ".xyz":
        path.write_text("# x y z nx ny nz\n" + "\n".join(" ".join(f"{c:.9g}" for c in (*p, 0, 0, 1)) for p in pts))
    else:
        trimesh.PointCloud(pts).export(str(path))
    return path


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".npy"])
def test_point_cloud_readers_return_the_points(tmp_path, suffix):
    pts = cloud(50)
    path = write_cloud(tmp_path / f"c{suffix}", pts)
    assert sf.file_kind(path) == "points"
    np.testing.assert_allclose(sf.read_points(path), pts, atol=1e-6)
    shape = sf.read_shape(path)
    assert shape.kind == "points" and shape.points.shape == (50, 3)


@pytest.mark.parametrize("suffix", [".off", ".obj", ".ply", ".stl"])
def test_mesh_readers(tmp_path, suffix):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    path = tmp_path / f"box{suffix}"
    box.export(str(path))
    assert sf.file_kind(path) == "mesh"
    shape = sf.read_shape(path)
    assert shape.kind == "mesh" and len(shape.mesh.faces) == 12
    np.testing.assert_allclose(shape.mesh.extents, [1, 2, 3], atol=1e-6)


BAD = {
    "empty.xyz": b"",
    "words.xyz": b"one two three\n",
    "short.xyz": b"1 2\n",
    "nan.xyz": b"1 2 3\nnan 0 0\n",
    "onepoint.xyz": b"1 2 3\n1 2 3\n",
    "text.npy": b"not an npy file",
    "garbage.ply": b"\x00\x01 not a ply",
    "notes.obj": b"these are my notes\n",
    "notes.off": b"these are my notes, not a mesh\n",
    "flat.npy": None,  # a 1-D array
    "pickled.npy": None,  # an object array (would need pickle)
    "notes.txt": b"1 2 3\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_shape_files_are_one_line_errors(tmp_path, name):
    path = tmp_path / name
    if name == "flat.npy":
        np.save(path, np.arange(6.0))
    elif name == "pickled.npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(BAD[name])
    with pytest.raises(NfkitError) as e:
        sf.read_shape(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg


def test_ply_without_faces_is_a_cloud_and_mesh_ply_a_mesh(tmp_path):
    p = write_cloud(tmp_path / "c.ply", cloud(20))
    m = tmp_path / "m.ply"
    trimesh.creation.icosphere(1).export(str(m))
    assert (sf.file_kind(p), sf.file_kind(m)) == ("points", "mesh")
    cfg = FitConfig(target="auto")
    assert resolve_target(cfg, [m]).target == "occupancy"
    assert resolve_target(cfg, [m, p]).target == "udf"
    assert resolve_target(FitConfig(target="occupancy"), [p]).target == "occupancy"  # explicit: kept


def test_udf_target_matches_brute_force():
    pts = sf.normalise_points(cloud(400, kind="box") * [1.0, 3.0, 0.5])[0]
    assert np.isclose(np.ptp(pts, 0).max(), 1.8)
    t = udf_targets(pts, 2000, n_surface=100, clip=0.1, seed=3)
    assert t.points.shape == (2000, 3) and t.occupancy.shape == (2000,) and t.surface.shape == (100, 3)
    d = np.sqrt(((t.points[:, None, :].astype(np.float64) - pts[None]) ** 2).sum(-1)).min(1)  # brute force
    np.testing.assert_allclose(t.occupancy, 1 - np.minimum(d, 0.1) / 0.1, atol=1e-5)
    near = t.occupancy[:1200]
    assert (near > 0).mean() > 0.8 and (t.occupancy[1200:] == 0).mean() > 0.5  # near samples see the surface
    assert np.isin(t.surface.view([("", t.surface.dtype)] * 3), pts.astype(np.float32).view(
        [("", np.float32)] * 3)).all()  # PointNet's input: points of the cloud


def one_line_exit_2(rc, capsys, needle):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("nfkit: error:") and needle in lines[0], err


def test_bad_cloud_is_one_line_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    one_line_exit_2(main(["triplanes", "classify", str(tmp_path / "m.safetensors"), str(empty), "--quiet"]), capsys,
                    "empty.xyz")
    write_cloud(tmp_path / "shapes" / "ball" / "a.xyz", cloud(30))
    (tmp_path / "shapes" / "ball" / "b.npy").write_text("not numbers")
    one_line_exit_2(main(["triplanes", "fit", str(tmp_path / "shapes"), "--out", str(tmp_path / "bank"), "--quiet",
                          *TINY]), capsys, "b.npy")


def test_point_cloud_folder_fit_train_classify(tmp_path, capsys):
    root, bank, model = tmp_path / "clouds", tmp_path / "bank", tmp_path / "m.safetensors"
    for i, suffix in enumerate((".ply", ".xyz", ".npy")):
        for kind in ("ball", "box"):
            write_cloud(root / kind / "train" / f"{kind}_{i}{suffix}", cloud(200 + 50 * i, seed=i, kind=kind))
    assert main(["triplanes", "fit", str(root), "--out", str(bank), "--quiet", *TINY]) == 0
    from nfkit.apps.triplanes.shards import load_bank

    b = load_bank(bank)
    assert b.config.target == "udf" and b.tensors["planes"].shape == (6, 3, 4, 8, 8)
    assert b.tensors["points"].shape == (6, 64, 3) and float(b.tensors["points"].abs().max()) <= 0.9 + 1e-5
    assert main(["triplanes", "train", str(bank), "--model", "transformer", "--epochs", "1", "--crop", "6",
                 "--d-model", "16", "--out", str(model), "--quiet"]) == 0
    query = write_cloud(tmp_path / "query.ply", cloud(500, seed=9))
    mesh = tmp_path / "ball.off"  # a mesh is classified through its surface samples on a UDF model
    trimesh.creation.icosphere(2).export(str(mesh))
    capsys.readouterr()
    assert main(["triplanes", "classify", str(model), str(query), str(mesh), "--top", "2", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith(str(query)) and out[0].count("(") == 2


def test_point_cloud_on_an_occupancy_bank_is_one_line(tmp_path, capsys):
    root = tmp_path / "shapes"
    for i in range(2):
        (root / "ball" / "train").mkdir(parents=True, exist_ok=True)
        trimesh.creation.icosphere(1, radius=0.5 + 0.2 * i).export(str(root / "ball" / "train" / f"b{i}.off"))
    write_cloud(root / "ball" / "train" / "c.xyz", cloud(50))
    rc = main(["triplanes", "fit", str(root), "--out", str(tmp_path / "bank"), "--target", "occupancy", "--quiet",
               *TINY])
    one_line_exit_2(rc, capsys, "c.xyz")


def test_default_init_is_per_shape():
    from nfkit.apps.triplanes.bank import initial_params

    cfg = FitConfig(channels=2, resolution=4, hidden=4)
    assert cfg.init == "per-shape" and cfg.decoder == "per-shape"
    p, _, _ = initial_params(cfg, [cfg.init_seed(i) for i in range(3)])
    assert not torch.allclose(p["planes"][0], p["planes"][1]) and not torch.allclose(p["w0"][1], p["w0"][2])
    shared = FitConfig(channels=2, resolution=4, hidden=4, init="shared")
    q, _, _ = initial_params(shared, [shared.init_seed(i) for i in range(3)])
    assert torch.equal(q["planes"][0], q["planes"][2]) and torch.equal(q["w0"][0], q["w0"][1])
