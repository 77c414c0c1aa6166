"""The typed Field contract: every registered family declares its kind and capabilities as data, the fast path
exists exactly when declared, one-line refusals by kind, and extra channels composited with the colour's weights."""
import dataclasses

import pytest
import torch

from nfkit import fields
from nfkit.errors import NfkitError
from nfkit.fields.base import RENDERABLE_KINDS, Capabilities, Field, FieldOutput
from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size, render_image, render_rays, require_kind
from nfkit.renderers.render import render_rays_inference

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])
SMALL = {"hashgrid": {"n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 64},
         "hashgrid-coord": {"n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 64},
         "neus": {"n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 64},
         "rbf": {"resolutions": [8], "channels": [2], "n_units": 8}, "triplane": {"resolution": 16}}
SIGNALS = {"hashgrid": [None], "neus": [None]}  # the coordinate families take every signal


def build(family, signal=None):
    cfg = dict(SMALL.get(family, {}))
    if signal is not None:
        cfg["signal"] = signal
    return fields.build_field(family, cfg, AABB)


def cases():
    for fam in fields.families():
        for sig in SIGNALS.get(fam, ["radiance", "image", "sdf", "occupancy"]):
            yield fam, sig


@pytest.mark.parametrize("family,signal", list(cases()))
def test_every_family_declares_kind_and_capabilities(family, signal):
    f = build(family, signal)
    caps = f.capabilities
    assert isinstance(caps, Capabilities) and isinstance(caps.channels, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.geometry_split = not caps.geometry_split
    assert f.kind in RENDERABLE_KINDS + ("image", "occupancy")
    assert f.has_background is False
    if f.kind == "image":
        return
    x, d = torch.rand(8, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)
    if caps.geometry_split:  # declared fast path: geometry + colour give forward's colour
        sigma, feats = f.geometry(x)
        torch.testing.assert_close(f.color(feats, d), f(x, d).rgb)
    else:
        with pytest.raises(NfkitError):
            f.geometry(x)
    if f.kind == "sdf":
        s, g = f.sdf_and_gradient(x)
        assert s.shape == (8,) and g.shape == (8, 3)
        assert f.surface().renderer in ("neus", "volsdf")
    else:
        with pytest.raises(NfkitError):
            f.sdf(x)


def test_view_dependent_density_is_declared_from_the_config():
    assert build("cam", "radiance").capabilities.view_dependent_density
    assert not fields.build_field("cam", {"mod_layers": "color"}, AABB).capabilities.view_dependent_density
    assert not build("mlp", "radiance").capabilities.view_dependent_density


def test_require_kind_is_one_line():
    f = build("neus")
    require_kind(f, ("sdf",), "x")
    with pytest.raises(NfkitError, match=r"^the thing needs a density field, got a sdf field \(neus\)$"):
        require_kind(f, ("density",), "the thing")
    with pytest.raises(NfkitError):
        render_rays(build("mlp", "image"), OccupancyGrid(AABB, 8), torch.zeros(1, 3), torch.ones(1, 3), RenderOptions())


class ChannelBall(Field):
    """A density ball (sigma 30, radius 0.6) with one extra channel ``c`` = K and a 2-wide ``v`` = (1, x)."""

    family = "test-channel-ball"
    capabilities = Capabilities(channels=("c", "v"))
    K = 3.0

    @dataclasses.dataclass
    class Config:
        pass

    def density(self, x):
        return 30.0 * (x.norm(dim=-1) < 0.6).float()

    def forward(self, x, d):
        n = x.shape[0]
        ch = {"c": torch.full((n, 1), self.K), "v": torch.stack([torch.ones(n), x[:, 0]], -1)}
        return FieldOutput(self.density(x), torch.full((n, 3), 0.5), channels=ch)


def test_channels_are_composited_with_the_colour_weights():
    f = ChannelBall(ChannelBall.Config(), AABB)
    grid = OccupancyGrid(AABB, 8)
    opts = RenderOptions(step_size=default_step_size(AABB, 128))
    o = torch.tensor([[0.0, 0.0, -2.0], [0.3, 0.0, -2.0], [0.55, 0.2, -2.0], [0.9, 0.9, -2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)
    for out, tol in ((render_rays(f, grid, o, d, opts), 1e-5), (render_rays_inference(f, grid, o, d, opts), 2e-3)):
        # inference skips samples of weight < weight_eps (1e-4): their share is missing, as from its rgb
        assert out["opacity"][0] > 0.9 and out["opacity"][2] < out["opacity"][0] and out["opacity"][3] == 0
        torch.testing.assert_close(out["channels"]["c"][:, 0], ChannelBall.K * out["opacity"], atol=tol, rtol=0)
        torch.testing.assert_close(out["channels"]["v"][:, 0], out["opacity"], atol=tol, rtol=0)
        torch.testing.assert_close(out["channels"]["v"][:, 1], o[:, 0] * out["opacity"], atol=tol, rtol=0)
    from nfkit.renderers import camera_from_pose

    c2w = torch.eye(4)
    c2w[2, 3] = 2.5
    img = render_image(f, grid, camera_from_pose(c2w, 8, 8, 40.0), 0, opts)
    assert img["channels"]["c"].shape == (8, 8, 1)
    torch.testing.assert_close(img["channels"]["c"][..., 0], ChannelBall.K * img["opacity"], atol=2e-3, rtol=0)


def test_a_coordinate_sdf_fit_renders_through_the_sdf_renderer():
    """Coordinate SDF fits (kind "sdf", no learned sharpness) draw grey with a fixed NeuS surface model, their
    gradient by autograd (forward gives none)."""
    f = build("mlp", "sdf")
    grid = OccupancyGrid(AABB, 8)
    opts = RenderOptions(step_size=default_step_size(AABB, 64))
    o = torch.tensor([[0.0, 0.0, -2.0], [0.5, 0.0, -2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]]).expand(2, 3)
    out = render_rays(f, grid, o, d, opts, torch.ones(3))
    assert out["normals"].shape == (2, 3) and out["sample_gradients"].requires_grad
    assert "surface_model" not in dict(f.named_modules())  # not a submodule: field files are unchanged
    inf = render_rays_inference(f, grid, o, d, opts, torch.ones(3))
    assert torch.isfinite(inf["rgb"]).all() and inf["rgb"].shape == (2, 3)
