"""SDF fields in the shared renderer: NeuS / VolSDF weights on an analytic sphere, the hash-grid SDF's
finite-difference gradient against autograd through the torch reference, field files, refusals of
density-only code paths, and occupancy / inference rendering of SDF fields."""
import dataclasses

import pytest
import torch

from nfkit import fields
from nfkit.errors import NfkitError
from nfkit.fields.base import Field, FieldOutput
from nfkit.fields.sdf import SurfaceDensity
from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size, render_rays
from nfkit.renderers.sdf import sdf_weights

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])
R = 0.5
TINY = {"n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 64, "hidden": 64, "geo_features": 4,
        "color_hidden": 16, "color_layers": 1}


class SphereSDF(Field):
    """Analytic SDF of a sphere of radius R at the origin, constant colour, one extra channel ``c`` = 2."""

    family = "test-sphere-sdf"
    kind = "sdf"

    @dataclasses.dataclass
    class Config:
        renderer: str = "neus"

    def __init__(self, config, aabb):
        super().__init__(config, aabb)
        self.surface_model = SurfaceDensity(config.renderer, init_variance=0.6, init_beta=0.01)

    def surface(self):
        return self.surface_model

    def sdf(self, x):
        return x.norm(dim=-1) - R

    def sdf_and_gradient(self, x, create_graph=False):
        return self.sdf(x), torch.nn.functional.normalize(x, dim=-1)

    def forward(self, x, d):
        s, g = self.sdf_and_gradient(x)
        rgb = torch.tensor([0.2, 0.4, 0.6]).expand(x.shape[0], 3)
        return FieldOutput(None, rgb, sdf=s, gradient=g, channels={"c": torch.full((x.shape[0], 1), 2.0)})


def one_ray_samples(offset: float, n: int = 400):
    """A ray along +z from z = -2 at lateral offset ``offset``; n uniform sections over t in [0.5, 3.5]."""
    o = torch.tensor([[offset, 0.0, -2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]])
    edges = torch.linspace(0.5, 3.5, n + 1)
    t0, t1 = edges[:-1], edges[1:]
    x = o + d * ((t0 + t1) / 2)[:, None]
    return x, d.expand(n, 3), t0, t1, torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize("renderer", ["neus", "volsdf"])
@torch.no_grad()
def test_weights_of_an_analytic_sphere_peak_at_the_surface(renderer):
    f = SphereSDF(SphereSDF.Config(renderer), AABB)
    for offset, t_hit in ((0.0, 2.0 - R), (0.3, 2.0 - (R * R - 0.09) ** 0.5)):
        x, d, t0, t1, ri = one_ray_samples(offset)
        s, g = f.sdf_and_gradient(x)
        w, _ = sdf_weights(f.surface(), s, g, d, t0, t1, ri, 1, cos_anneal_ratio=1.0)
        assert float(w.sum()) <= 1 + 1e-5 and float(w.sum()) > 0.95
        t_peak = float((t0 + t1)[w.argmax()] / 2)
        assert abs(t_peak - t_hit) < 3 * float(t1[0] - t0[0]) + (0.02 if renderer == "volsdf" else 0.0)
        assert float((w * (t0 + t1) / 2).sum() / w.sum()) == pytest.approx(t_hit, abs=0.03)
    x, d, t0, t1, ri = one_ray_samples(0.7)  # misses the sphere (NeuS: each alpha carries its 1e-5 floor)
    s, g = f.sdf_and_gradient(x)
    w, _ = sdf_weights(f.surface(), s, g, d, t0, t1, ri, 1)
    assert float(w.sum()) < 1e-2


@pytest.mark.parametrize("renderer", ["neus", "volsdf"])
def test_render_rays_of_an_sdf_field(renderer, monkeypatch):
    """The dispatching renderer: depth of the first crossing, normals towards the camera, channels composited,
    per-sample gradients for the eikonal loss, and inference giving the same picture."""
    from nfkit.renderers.render import render_rays_inference

    f = SphereSDF(SphereSDF.Config(renderer), AABB)
    grid = OccupancyGrid(AABB, 16)
    opts = RenderOptions(step_size=default_step_size(AABB, 512))
    o = torch.tensor([[0.0, 0.0, -2.0], [0.2, 0.1, -2.0], [0.9, 0.9, -2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]]).expand(3, 3)
    out = render_rays(f, grid, o, d, opts, torch.ones(3))
    assert out["opacity"][:2].min() > 0.95 and out["opacity"][2] < 1e-2
    hit = 2.0 - (R * R - (o[:2, :2] ** 2).sum(-1)).sqrt()
    torch.testing.assert_close(out["depth"][:2] / out["opacity"][:2], hit, atol=0.03, rtol=0)
    assert (out["normals"][:2, 2] < -0.8).all()  # facing the camera at z = -2
    torch.testing.assert_close(out["channels"]["c"][:, 0], 2.0 * out["opacity"])
    assert out["sample_gradients"].shape == (out["n_samples"], 3)
    torch.testing.assert_close(out["rgb"][2], torch.ones(3), atol=1e-2, rtol=0)
    monkeypatch.setattr("nfkit.renderers.sdf.EVAL_CHUNK", 7)  # inference evaluates in chunks: the same picture
    inf = render_rays_inference(f, grid, o, d, opts, torch.ones(3))
    torch.testing.assert_close(inf["rgb"], out["rgb"])
    torch.testing.assert_close(inf["normals"], out["normals"])
    raw = render_rays(f, grid, o, d, opts, torch.ones(3), prune=False)  # every sample, alpha floor included
    assert raw["n_samples"] > out["n_samples"]
    torch.testing.assert_close(raw["rgb"], out["rgb"], atol=1e-2, rtol=0)
    assert "sample_gradients" not in inf


@pytest.mark.parametrize("backbone", ["hashgrid", "mlp"])
def test_neus_field_initialises_to_a_sphere_and_trains_through_its_gradient(backbone):
    torch.manual_seed(0)
    f = fields.build_field("neus", {"backbone": backbone, **({} if backbone == "mlp" else TINY),
                                    **({"hidden": 64, "n_layers": 2} if backbone == "mlp" else {})}, AABB)
    assert f.kind == "sdf" and f.config.hidden is not None
    x = torch.randn(512, 3) * 0.5
    s, g = f.sdf_and_gradient(x)
    err = (s - (x.norm(dim=-1) - 0.5)).abs()  # radius 0.5 of the AABB's half size 1
    assert float(err.median()) < 0.15
    assert float(torch.nn.functional.cosine_similarity(g, x).median()) > 0.9
    out = f(x, torch.nn.functional.normalize(torch.randn(512, 3), dim=-1))
    assert out.density is None and out.gradient.requires_grad and out.rgb.shape == (512, 3)
    ((out.gradient.norm(dim=-1) - 1) ** 2).mean().backward()  # an eikonal loss reaches the geometry parameters
    first = f.geo_net[0].parametrizations.weight.original1
    assert first.grad is not None and float(first.grad.abs().sum()) > 0


def test_finite_difference_gradient_matches_autograd_through_the_reference():
    torch.manual_seed(0)
    f = fields.build_field("neus", {**TINY, "fd_eps": 1e-3}, AABB)
    with torch.no_grad():
        f.encoding.params.normal_(0.0, 0.3)  # a varied SDF, far from the initial sphere
    x = torch.rand(2000, 3) * 1.6 - 0.8
    _, g_fd = f.sdf_and_gradient(x)
    xg = x.clone().requires_grad_(True)  # an input that needs grad: the torch reference encoding
    (g_ref,) = torch.autograd.grad(f.sdf(xg).sum(), xg)
    rel = (g_fd - g_ref).norm(dim=-1) / g_ref.norm(dim=-1).clamp_min(1e-6)
    assert float(rel.median()) < 2e-2 and float(rel.quantile(0.8)) < 5e-2
    assert float((g_ref - torch.nn.functional.normalize(x, dim=-1)).norm(dim=-1).median()) > 0.1  # not the sphere's


@pytest.mark.parametrize("cfg", [dict(TINY), {"backbone": "mlp", "renderer": "volsdf", "hidden": 32, "n_layers": 2}])
def test_neus_field_file_round_trip_is_bit_exact(tmp_path, cfg):
    torch.manual_seed(0)
    f = fields.build_field("neus", cfg, AABB)
    with torch.no_grad():
        for p in f.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = fields.save(f, tmp_path / "neus.safetensors")
    g = fields.load(path)
    assert g.config == f.config and g.kind == "sdf" and fields.read_header(path)["kind"] == "sdf"
    x, d = torch.rand(300, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    with torch.no_grad():
        a, b = f.eval()(x, d), g(x, d)
    assert torch.equal(a.sdf, b.sdf) and torch.equal(a.gradient, b.gradient) and torch.equal(a.rgb, b.rgb)
    assert torch.equal(f.surface().inv_s(), g.surface().inv_s())
    assert any(k.startswith("surface_model.") for k in g.state_dict())


def test_density_only_paths_refuse_an_sdf_field_in_one_line():
    from nfkit.renderers import DensityCache

    f = fields.build_field("neus", TINY, AABB)
    for call in (lambda: f.volume(torch.rand(4, 3)), lambda: DensityCache.build(f, OccupancyGrid(AABB, 8), res=8),
                 lambda: f.density(torch.rand(4, 3))):
        with pytest.raises(NfkitError) as e:
            call()
        assert "\n" not in str(e.value) and "sdf" in str(e.value)


def test_occupancy_from_an_sdf_keeps_the_surface_and_empties_far_space():
    from nfkit.renderers import occupancy_density_fn

    f = SphereSDF(SphereSDF.Config(), AABB)
    grid = OccupancyGrid(AABB, 32)
    opts = RenderOptions(step_size=default_step_size(AABB, 256))
    grid.update(0, occupancy_density_fn(f, resolution=32), opts.step_size)
    centres = grid.cell_points(torch.arange(32**3), jitter=False)
    dist = (centres.norm(dim=-1) - R).abs()
    assert grid.binary[dist < 0.5 * 2 / 32].all()  # every cell the surface passes through
    assert not grid.binary[dist > 0.3].any()


def test_render_image_of_a_neus_field_has_a_normals_map():
    from nfkit.renderers import camera_from_pose, render_image
    from nfkit.renderers.camera_range import look_at

    f = fields.build_field("neus", TINY, AABB).eval()
    grid = OccupancyGrid(AABB, 16)
    opts = RenderOptions(step_size=default_step_size(AABB, 128))
    c2w = look_at(torch.tensor([[0.0, -2.5, 0.0]], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                  (0.0, 0.0, 1.0))[0].float()
    img = render_image(f, grid, camera_from_pose(c2w, 16, 16, 50.0), 0, opts, torch.ones(3))
    assert img["normals"].shape == (16, 16, 3) and img["rgb"].shape == (16, 16, 3)
    centre = img["normals"][8, 8] / img["opacity"][8, 8]
    assert img["opacity"][8, 8] > 0.9 and centre[1] < -0.8  # the initial sphere faces the camera at y = -2.5


def test_view_render_draws_an_sdf_field_in_every_mode_and_cropped():
    from nfkit.apps import view_render as vr

    f = fields.build_field("neus", TINY, AABB).eval()
    grid = OccupancyGrid(AABB, 16)
    opts = RenderOptions(step_size=default_step_size(AABB, 128))
    c2w = vr.look_at((0.0, -2.5, 0.0), (0.0, 0.0, 0.0))
    imgs = {m: vr.render_view(f, grid, opts, c2w, 12, 12, 50.0, mode=m) for m in vr.MODES}
    assert all(im.shape == (12, 12, 3) for im in imgs.values())
    # normals mode: the sphere's centre faces the camera (-y): green channel 0.5 + 0.5 n_y well below 128
    assert imgs["normals"][6, 6, 1] < 64 and imgs["opacity"][6, 6, 0] > 230
    cropped = vr.render_view(f, grid, opts, c2w, 12, 12, 50.0, mode="opacity", crop=((-1, -1, -1), (1, 1, -0.9)))
    assert cropped[6, 6, 0] < 30  # the box holds no surface


def test_export_contours_a_neus_field_at_its_zero_level():
    pytest.importorskip("skimage")
    from nfkit import export

    torch.manual_seed(0)
    f = fields.build_field("neus", {"backbone": "mlp", "hidden": 64, "n_layers": 2}, AABB).eval()
    m = export.extract_mesh(f, 24)
    with torch.no_grad():
        s = f.sdf(torch.as_tensor(m["vertices"], dtype=torch.float32))
    assert m["level"] == 0.0 and m["colors"].shape == (len(m["vertices"]), 3)
    assert float(s.abs().max()) < 2.0 / 23  # on the zero level set, within a voxel
    r = torch.as_tensor(m["vertices"]).norm(dim=-1)
    assert 0.3 < float(r.mean()) < 0.7  # the initial sphere, radius ~0.5


def test_channels_composite_when_no_ray_has_a_sample():
    from nfkit.renderers.sdf import composite_channels

    w, ri = torch.zeros(0), torch.zeros(0, dtype=torch.long)
    out = composite_channels(w, {"lines": torch.zeros(0, 6), "one": torch.zeros(0)}, ri, 4)
    assert out["lines"].shape == (4, 6) and out["one"].shape == (4, 1) and not out["lines"].any()
