"""``precision="bfloat16"``: the coordinate networks' matrix products under autocast, everything else float32."""
from dataclasses import replace

import pytest
import torch

from nfkit import fields
from nfkit.errors import NfkitError
from nfkit.fields.precision import fast_bfloat16

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])
SMALL = {"signal": "radiance", "hidden": 32, "n_layers": 2, "n_freqs": 4}
OPTS = {"mlp": SMALL, "cam": SMALL, "triplane": {"signal": "radiance", "resolution": 16, "channels": 4}}
F32 = {"precision": "float32"}


def pair(family):
    torch.manual_seed(0)
    a = fields.build_field(family, {**OPTS[family], **F32}, AABB)
    torch.manual_seed(0)
    b = fields.build_field(family, {**OPTS[family], "precision": "bfloat16"}, AABB)
    return a, b


def points(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * 1.8 - 0.9, torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)


@pytest.mark.parametrize("family", sorted(OPTS))
def test_bfloat16_matches_float32_to_its_precision(family):
    a, b = pair(family)
    x, d = points()
    oa, ob = a(x, d), b(x, d)
    assert ob.density.dtype == ob.rgb.dtype == torch.float32
    torch.testing.assert_close(ob.rgb, oa.rgb, atol=5e-3, rtol=0)
    torch.testing.assert_close(ob.density.log(), oa.density.log(), atol=5e-2, rtol=0)
    va, vb = a.volume(x, d), b.volume(x, d)
    assert vb.log_sigma.dtype == vb.geo.dtype == torch.float32
    # and it really ran in bfloat16: the outputs are not bit-identical
    assert not torch.equal(ob.rgb, oa.rgb)
    torch.testing.assert_close(vb.geo, va.geo, atol=5e-2, rtol=0)


@pytest.mark.parametrize("family", sorted(OPTS))
def test_bfloat16_trains_float32_weights(family):
    _, b = pair(family)
    x, d = points()
    opt = torch.optim.Adam(b.parameters(), lr=1e-2)
    target = torch.full((x.shape[0], 3), 0.25)
    losses = []
    for _ in range(30):
        loss = ((b(x, d).rgb - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32) for p in b.parameters())
    assert losses[-1] < 0.5 * losses[0]


def test_precision_round_trips_and_bad_values_are_refused(tmp_path):
    _, b = pair("mlp")
    path = fields.save(b, tmp_path / "f.safetensors")
    assert fields.load(path).config.precision == "bfloat16"
    with pytest.raises(NfkitError, match="precision"):
        fields.build_field("mlp", {**SMALL, "precision": "float16"}, AABB)
    a = fields.build_field("mlp", dict(SMALL), AABB)  # the default: auto, for every signal
    assert a.config.precision == "auto" and a.uses_bfloat16(torch.device("cpu")) == fast_bfloat16()
    assert not a.uses_bfloat16(torch.device("meta"))  # GPUs keep float32 under auto
    for signal in ("image", "sdf", "occupancy"):
        assert fields.build_field("cam", {**SMALL, "signal": signal}, AABB).config.precision == "auto"
    assert fields.build_field("rbf", {"signal": "radiance"}, AABB).config.precision == "float32"
    with pytest.raises(NfkitError, match="rbf family computes in float32"):
        fields.build_field("rbf", {"signal": "radiance", "precision": "bfloat16"}, AABB)
    assert isinstance(fast_bfloat16(), bool)


def test_bfloat16_batches_are_padded_to_a_few_sizes():
    from nfkit.fields.precision import bucket_rows

    sizes = {bucket_rows(n) for n in range(2049, 4097)}
    assert len(sizes) == 8 and all(bucket_rows(n) >= n for n in range(1, 5000))
    assert all(bucket_rows(n) <= 1.125 * n for n in range(64, 5000))
    _, b = pair("mlp")
    x, d = points(1000)
    with torch.no_grad():  # padding changes nothing in the rows that are there
        whole = b(x, d)
        part = b(x[:777], d[:777])
    torch.testing.assert_close(part.rgb, whole.rgb[:777], atol=1e-2, rtol=0)
    torch.testing.assert_close(part.density.log(), whole.density[:777].log(), atol=1e-1, rtol=0)


class _Rows(torch.nn.Module):
    """A field that records the batch size of every call to its networks."""

    capabilities = fields.Capabilities(geometry_split=True)

    def __init__(self, f):
        super().__init__()
        self.f, self.rows = f, []

    def geometry(self, x):
        self.rows.append(x.shape[0])
        return self.f.geometry(x)

    def color(self, feats, d):
        self.rows.append(feats.shape[0])
        return self.f.color(feats, d)

    def density(self, x):
        return self.geometry(x)[0]

    def forward(self, x, d):
        return self.f(x, d)


def test_bfloat16_inference_pads_the_batches_it_shades():
    """The exact (uncached) inference renderer under ``RenderOptions.bf16`` hands the hash grid's MLPs only padded
    batch sizes, and renders as float32 does to bfloat16's precision."""
    from nfkit.fields.precision import bucket_rows
    from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size
    from nfkit.renderers.render import render_rays_inference

    torch.manual_seed(0)
    f = fields.build_field("hashgrid", {"n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 64}, AABB).eval()
    with torch.no_grad():
        f.encoding.params.normal_(0.0, 1.0)  # a table far from its tiny initialisation: a varied picture
    grid = OccupancyGrid(AABB, 16)
    o = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1) * 2.5
    d = torch.nn.functional.normalize(torch.rand(200, 3) * 0.6 - 0.3 - o, dim=-1)
    opts = RenderOptions(step_size=default_step_size(AABB, 64))
    rec = _Rows(f)
    with torch.no_grad():
        ref = render_rays_inference(f, grid, o, d, opts, torch.ones(3))
        half = render_rays_inference(rec, grid, o, d, replace(opts, bf16=True), torch.ones(3))
    assert rec.rows and all(n == bucket_rows(n) for n in rec.rows)
    assert len(set(rec.rows)) < len(rec.rows)  # batches of many sizes fell into a few
    assert 0.2 < ref["opacity"].mean() < 0.95  # half-transparent: every shaded sample counts below
    torch.testing.assert_close(half["opacity"], ref["opacity"], atol=2e-2, rtol=0)
    torch.testing.assert_close(half["rgb"], ref["rgb"], atol=2e-2, rtol=0)
