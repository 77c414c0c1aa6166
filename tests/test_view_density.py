"""Fields whose density depends on the view (CAM with the trunk modulated by the view direction): the renderers
composite the density each ray sees, not the direction-free ``density(x)`` stand-in, and the occupancy grid takes
the density seen from the training cameras."""
import torch

from nfkit import fields
from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size
from nfkit.renderers.render import render_rays, render_rays_inference
from nfkit.renderers.view_density import camera_density_fn, density_along, view_dependent

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])
TINY = {"signal": "radiance", "hidden": 16, "n_layers": 2, "n_freqs": 3}


def view_cam(seed=0):
    """A tiny CAM radiance field whose modulation grids differ strongly between view directions."""
    torch.manual_seed(seed)
    f = fields.build_field("cam", dict(TINY), AABB)
    with torch.no_grad():
        f.gamma.copy_(1.0 + 2.0 * torch.randn_like(f.gamma))
        f.beta.copy_(1.5 * torch.randn_like(f.beta) + 1.0)
    return f.eval()


def rays_towards_centre(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 2.5
    d = torch.nn.functional.normalize(torch.rand(n, 3, generator=g) * 0.6 - 0.3 - o, dim=-1)
    return o, d


def test_which_fields_are_view_dependent():
    assert view_dependent(view_cam())
    assert not view_dependent(fields.build_field("cam", {**TINY, "mod_layers": "color"}, AABB))
    assert not view_dependent(fields.build_field("mlp", dict(TINY), AABB))


def test_density_along_is_the_views_density():
    f = view_cam()
    x = torch.rand(64, 3) * 1.6 - 0.8
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    with torch.no_grad():
        along, free, full = density_along(f, x, d), f.density(x), f(x, d).density
    torch.testing.assert_close(along, full)
    assert (along - free).abs().max() > 1e-2  # the stand-in really differs for this field
    m = fields.build_field("mlp", dict(TINY), AABB).eval()
    with torch.no_grad():
        torch.testing.assert_close(density_along(m, x, d), m.density(x))


def test_inference_renderer_matches_the_training_renderer_for_view_dependent_density():
    """Compositing with density(x) instead would differ (checked), so this comparison can fail."""
    f = view_cam()
    grid = OccupancyGrid(AABB, 16)  # every cell occupied
    opts = RenderOptions(step_size=default_step_size(AABB, 64))
    o, d = rays_towards_centre()
    bg = torch.ones(3)
    with torch.no_grad():
        exact = render_rays(f, grid, o, d, opts, bg, prune=False)
        inf = render_rays_inference(f, grid, o, d, opts, bg)
        free = render_rays_inference(_Freeze(f), grid, o, d, opts, bg)
    torch.testing.assert_close(inf["opacity"], exact["opacity"], atol=2e-3, rtol=0)
    torch.testing.assert_close(inf["rgb"], exact["rgb"], atol=2e-3, rtol=0)
    assert (free["opacity"] - exact["opacity"]).abs().max() > 0.05


class _Freeze(torch.nn.Module):
    """The same field seen as view-independent (the renderers' old behaviour: density(x) for compositing)."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def density(self, x):
        return self.f.density(x)

    def forward(self, x, d):
        return self.f(x, d)


def test_occupancy_density_is_seen_from_the_cameras():
    f = view_cam()
    centres = torch.tensor([[0.0, 0.0, 3.0]])  # one camera: every point is seen from it
    fn = camera_density_fn(f, centres)
    x = torch.rand(32, 3) * 1.6 - 0.8
    with torch.no_grad():
        want = f(x, torch.nn.functional.normalize(x - centres, dim=-1)).density
        torch.testing.assert_close(fn(x), want)
    m = fields.build_field("mlp", dict(TINY), AABB)
    assert camera_density_fn(m, centres) == m.density  # view-independent fields keep density(x)
    assert camera_density_fn(f, None) == f.density


def test_mean_view_density_and_the_cache_built_from_it():
    from nfkit.renderers import DensityCache
    from nfkit.renderers.view_density import mean_view_density

    f = view_cam()
    centres = torch.tensor([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    x = torch.rand(16, 3) * 1.6 - 0.8
    with torch.no_grad():
        want = sum(f(x, torch.nn.functional.normalize(x - c, dim=-1)).density for c in centres) / 3
        torch.testing.assert_close(mean_view_density(f, centres)(x), want)
        assert mean_view_density(f, None) == f.density
        grid = OccupancyGrid(AABB, 8)
        cache = DensityCache.build(f, grid, res=8, density_fn=mean_view_density(f, centres))
        lin = torch.linspace(0, 1, 8)
        zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
        pts = AABB[0] + torch.stack([xx, yy, zz], -1).reshape(-1, 3) * (AABB[1] - AABB[0])
        torch.testing.assert_close(cache.values.reshape(-1), mean_view_density(f, centres)(pts), rtol=1e-4, atol=1e-4)


def test_viewer_takes_view_centres_from_the_stored_camera_range():
    from nfkit.renderers.view_density import stored_view_centres

    f = view_cam()
    c = stored_view_centres(f, {}, "field.safetensors", n=5)
    assert c.shape == (5, 3) and (c.norm(dim=-1) > 1.0).all()  # outside the unit AABB, looking in
    assert stored_view_centres(fields.build_field("mlp", dict(TINY), AABB), {}, "f", n=5) is None


def test_convert_estimates_a_missing_grid_from_the_views(tmp_path, monkeypatch):
    """A field file without an occupancy grid: ``nfkit convert`` estimates one from the density the views see, not
    from the stand-in (here emptied, the extreme case)."""
    from nfkit.distill.convert import load_teacher
    from nfkit.fields.cam import CAMField

    path = fields.save(view_cam(), tmp_path / "field.safetensors")
    monkeypatch.setattr(CAMField, "density", lambda self, x: torch.zeros(x.shape[0]))
    for centres in (torch.tensor([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0]]), None):  # training cameras / stored range
        field, grid, _, _ = load_teacher(path, centres=centres)
        assert view_dependent(field) and grid.binary.any() and grid.density.max() > 0


def test_training_never_consults_the_stand_in(tmp_path, monkeypatch):
    """RGB capture (environment map, so the sparsity prior is on) with a view-dependent cam field: the occupancy
    grid, the pruning pass and the sparsity prior all ask for the density the views see."""
    from conftest import write_sphere_capture

    from nfkit.datasets import load_dataset
    from nfkit.fields.cam import CAMField
    from nfkit.trainer import FitConfig, Trainer

    data = load_dataset(write_sphere_capture(tmp_path / "cap", n=4, size=8), "all")
    rgb = type(data)(**{**data.__dict__, "images": data.images[..., :3].contiguous()})
    cfg = FitConfig(out=str(tmp_path / "o"), field="cam", field_options={k: v for k, v in TINY.items()
                                                                         if k != "signal"}, grid_resolution=8)
    tr = Trainer(cfg, rgb, None, progress=False)
    assert view_dependent(tr.field) and tr.sparsity > 0

    def stand_in(self, x):
        raise AssertionError("density(x) stand-in used")

    monkeypatch.setattr(CAMField, "density", stand_in)
    for _ in range(2):
        tr.train_step()
