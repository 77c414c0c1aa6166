"""nfkit export: marching cubes on an analytic SDF sphere and a density sphere (radius within one voxel), coloured
points from rendered depth, files that open in trimesh, coordinates mapped back through the field file's
normalisation, and the CLI (export, info) on a field file of a test-only family."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from nfkit import export, fields
from nfkit.apps.cli import main as cli_main
from nfkit.fields import base
from nfkit.fields.base import Field, FieldOutput
from nfkit.renderers import OccupancyGrid, RenderOptions

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])
R = 0.6


class Sphere(Field):
    """Analytic sphere of radius ``radius`` at the origin: an SDF (kind "sdf") or a density field (kind
    "density": sigma = 400 inside, 0 outside, smoothed over ~0.01; red)."""

    family = "test-sphere"

    @dataclasses.dataclass
    class Config:
        radius: float = R
        as_sdf: bool = True

    def __init__(self, config, aabb):
        super().__init__(config, aabb)
        self.kind = "sdf" if config.as_sdf else "density"
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def density(self, x):
        r = x.norm(dim=-1) - self.config.radius
        if self.config.as_sdf:
            return r
        return 400 * torch.sigmoid(-r / 0.003) * self.inside(self.normalize(x))

    def sdf(self, x):
        return self.density(x)

    def forward(self, x, d):
        rgb = torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3)
        return FieldOutput(self.density(x), rgb)


@pytest.fixture
def sphere_family():
    base.register_field(Sphere)
    yield Sphere
    base._REGISTRY.pop(Sphere.family, None)


def radii(vertices, centre=(0, 0, 0)):
    return np.linalg.norm(np.asarray(vertices) - np.asarray(centre), axis=-1)


@pytest.mark.parametrize("res", [32, 65])
def test_sdf_sphere_radius_within_one_voxel(tmp_path, res):
    f = Sphere(Sphere.Config(), AABB)
    m = export.extract_mesh(f, res)
    voxel = 2.0 / (res - 1)
    r = radii(m["vertices"])
    assert np.abs(r - R).max() < voxel
    assert abs(r.mean() - R) < 0.1 * voxel
    # outward normals and a closed surface of the right volume
    assert np.mean(np.sum(m["normals"] * m["vertices"], -1) > 0) > 0.99
    out = export.write_mesh(m, tmp_path / "sphere.ply")
    mesh = trimesh.load(tmp_path / "sphere.ply")
    assert len(mesh.vertices) == out["vertices"] and mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * R**3, rel=0.05)


def test_mesh_maps_back_to_input_coordinates(tmp_path):
    """normalised = 2 * (input - c): the exported sphere has radius R / 2 around c, in every format."""
    c = np.array([10.0, -3.0, 0.5])
    t = np.eye(4) * 2.0
    t[3, 3] = 1.0
    t[:3, 3] = -2.0 * c
    norm = {"transform": t.tolist(), "scale": 2.0}
    m = export.extract_mesh(Sphere(Sphere.Config(), AABB), 48)
    voxel = 2.0 / 47
    for suffix in (".ply", ".obj", ".glb"):
        path = tmp_path / f"s{suffix}"
        export.write_mesh(m, path, norm)
        mesh = trimesh.load(path, force="mesh")
        r = radii(mesh.vertices, c)
        assert np.abs(r - R / 2).max() < voxel / 2, suffix
    assert not list(tmp_path.glob(".*tmp*"))  # temporary names are renamed away


def test_density_sphere_level_from_opacity_and_colours(tmp_path):
    f = Sphere(Sphere.Config(as_sdf=False), AABB)
    res = 64
    m = export.extract_mesh(f, res, opacity=0.5, step=2 * 3**0.5 / 256)
    assert np.abs(radii(m["vertices"]) - R).max() < 2.0 / (res - 1)
    assert m["colors"] is not None and (m["colors"][:, 0] == 255).all() and (m["colors"][:, 1:] == 0).all()
    with pytest.raises(Exception, match="no surface"):
        export.extract_mesh(f, 32, opacity=1 - 1e-12, step=1e-9)  # a level above every density


def test_points_from_rendered_depth(tmp_path):
    from nfkit.renderers.camera_range import camera_prior, virtual_cameras

    f = Sphere(Sphere.Config(as_sdf=False), AABB)
    grid = OccupancyGrid(AABB, 16)  # all cells occupied
    cams = virtual_cameras(camera_prior(AABB), 6, 32, torch.Generator().manual_seed(0))
    pts = export.extract_points(f, grid, RenderOptions(step_size=2 * 3**0.5 / 256), cams)
    assert len(pts["points"]) > 500
    assert np.abs(radii(pts["points"]) - R).max() < 0.03
    assert (pts["colors"][:, 0] > 240).all() and (pts["colors"][:, 1] < 15).all()
    # a far outlier is dropped by the statistical filter, the sphere is kept
    noisy = {"points": np.concatenate([pts["points"], [[0.95, 0.95, 0.95]]]),
             "colors": np.concatenate([pts["colors"], [[0, 0, 0]]]).astype(np.uint8)}
    out = export.write_points(noisy, tmp_path / "p.ply")
    cloud = trimesh.load(tmp_path / "p.ply")
    assert len(cloud.vertices) == out["points"] and len(pts["points"]) * 0.9 <= out["points"] <= len(pts["points"])
    assert np.abs(radii(cloud.vertices) - R).max() < 0.03
    assert np.asarray(cloud.colors).shape[1] == 4


def test_export_and_info_cli(tmp_path, sphere_family, capsys):
    path = tmp_path / "sphere.safetensors"
    norm = {"transform": (np.eye(4) * [2, 2, 2, 1]).tolist(), "scale": 2.0}
    fields.save(fields.build_field("test-sphere", {"as_sdf": False}, AABB), path, normalization=norm)
    rc = cli_main(["export", str(path), "--mesh", str(tmp_path / "m.obj"), "--resolution", "40",
                   "--points", str(tmp_path / "p.ply"), "--views", "4", "--view-size", "24"])
    assert rc == 0, capsys.readouterr().err
    mesh = trimesh.load(tmp_path / "m.obj", force="mesh")
    assert np.abs(radii(mesh.vertices) - R / 2).max() < 1.0 / 39  # one voxel (2/39) in input units (/2)
    cloud = trimesh.load(tmp_path / "p.ply")
    assert np.abs(radii(cloud.vertices) - R / 2).max() < 0.02
    capsys.readouterr()
    assert cli_main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "test-sphere" and info["n_params"] == 1 and info["format_version"] == 1
    assert info["aabb"] == AABB.tolist() and info["kind"] == "density" and info["normalization_scale"] == 2.0


def test_export_bad_arguments(tmp_path, sphere_family, capsys):
    path = tmp_path / "sphere.safetensors"
    fields.save(fields.build_field("test-sphere", {}, AABB), path)
    assert cli_main(["export", str(path)]) == 2
    assert cli_main(["export", str(path), "--mesh", str(tmp_path / "m.stl")]) == 2
    assert cli_main(["export", str(tmp_path / "missing.safetensors"), "--mesh", str(tmp_path / "m.ply")]) == 2
    assert cli_main(["export", str(path), "--points", str(tmp_path / "p.ply")]) == 2  # an SDF has no colours
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 4 and all(e.startswith("nfkit: error:") for e in errs)
    assert "missing.safetensors" in errs[2] and "radiance" in errs[3]


def test_points_views_follow_the_stored_camera_range(tmp_path, sphere_family, capsys):
    """Without --data, --points renders from the training cameras' range stored in the file (info.camera_prior,
    written by nfkit fit): cameras 40-70 degrees above the equator see nothing below ~38 degrees south. A file
    without a stored range falls back to the whole sphere, which sees the underside too."""
    from nfkit.renderers.camera_range import CameraPrior, prior_to_dict

    ring = prior_to_dict(CameraPrior((0.0, 0.0, 0.0), (3.0, 3.5), (0.70, 1.22), 30.0, 0.0, (1.0, 1.0, 1.0)))
    lows = {}
    for name, info in (("ring", {"camera_prior": ring}), ("bare", None)):
        path = tmp_path / f"{name}.safetensors"
        fields.save(fields.build_field("test-sphere", {"as_sdf": False}, AABB), path, info=info)
        rc = cli_main(["export", str(path), "--points", str(tmp_path / f"{name}.ply"), "--views", "24",
                       "--view-size", "32", "--no-outlier-filter"])
        assert rc == 0, capsys.readouterr().err
        assert ("(field file)" if info else "(sphere)") in capsys.readouterr().out
        lows[name] = float(np.asarray(trimesh.load(tmp_path / f"{name}.ply").vertices)[:, 2].min())
    assert lows["ring"] > -0.7 * R and lows["bare"] < -0.85 * R, lows


class ViewSphere(Sphere):
    """The density sphere seen along any view, but with an empty direction-free ``density(x)`` stand-in (the
    extreme of a view-dependent field such as CAM's)."""

    capabilities = base.Capabilities(view_dependent_density=True)

    def density(self, x):
        return torch.zeros(x.shape[0])

    def density_seen(self, x, d):
        return Sphere.density(self, x)

    def forward(self, x, d):
        return FieldOutput(self.density_seen(x, d), torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3))


def test_view_dependent_density_is_meshed_from_the_views():
    f = ViewSphere(Sphere.Config(as_sdf=False), AABB)
    res, step = 48, 2 * 3**0.5 / 256
    with pytest.raises(Exception, match="no surface"):  # the stand-in alone has nothing to mesh
        export.extract_mesh(f, res, opacity=0.5, step=step)
    centres = torch.tensor([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0], [0.0, -3.0, 1.0]])
    m = export.extract_mesh(f, res, opacity=0.5, step=step, centres=centres)
    assert np.abs(radii(m["vertices"]) - R).max() < 2.0 / (res - 1)


def test_export_a_folder_of_fields(tmp_path, sphere_family, capsys):
    """A folder in, a mesh per field out (nfkit.apps.batch): radii kept, a broken file named at the end, a rerun
    does only what is missing."""
    src = tmp_path / "fields"
    src.mkdir()
    for name, r in (("small", 0.3), ("large", 0.6)):
        fields.save(fields.build_field("test-sphere", {"radius": r}, AABB), src / f"{name}.safetensors")
    (src / "broken.safetensors").write_bytes(b"not a field")
    args = ["export", str(src), "--mesh", str(tmp_path / "meshes"), "--resolution", "48"]
    assert cli_main(args) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if e.startswith("nfkit:")]  # not the bar's
    assert len(err) == 1 and "1 of 3 items failed (first: broken:" in err[0]
    for name, r in (("small", 0.3), ("large", 0.6)):
        m = trimesh.load(tmp_path / "meshes" / f"{name}.ply")
        assert abs(np.linalg.norm(m.vertices, axis=1).mean() - r) < 2.0 / 48
    manifest = json.loads((tmp_path / "meshes" / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["missing"] == ["broken"]
    (src / "broken.safetensors").unlink()
    assert cli_main(args) == 0
    assert "0 done, 2 already complete, of 2 items" in capsys.readouterr().out
