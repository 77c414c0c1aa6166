"""Sphere tracing and Newton projection (renderers/surface.py) against analytic spheres and a torus."""
import math

import nfkit  # noqa: F401
import pytest
import torch

from nfkit.errors import NfkitError
from nfkit.renderers.surface import (implicit_depth, newton_project, newton_project_field, newton_project_reference,
                                     sphere_trace, sphere_trace_field, sphere_trace_reference)



@pytest.fixture(autouse=True)
def float64_default():
    """Analytic checks in float64 (tight tolerances); the default dtype is restored for other modules."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def sphere_sdf(radius, centre=(0.1, -0.05, 0.02)):
    c = torch.tensor(centre)
    return lambda x: (x - c).norm(dim=-1) - radius


def torus_sdf(big=0.5, small=0.2):
    def f(x):
        q = torch.stack([x[:, :2].norm(dim=-1) - big, x[:, 2]], -1)
        return q.norm(dim=-1) - small
    return f


def analytic_sphere_depth(o, d, radius, centre=(0.1, -0.05, 0.02)):
    """Nearest intersection t (unit d) and hit mask, by the quadratic."""
    oc = o - torch.tensor(centre)
    b = (oc * d).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + radius**2
    return -b - disc.clamp_min(0).sqrt(), disc > 0


def rays_towards_sphere(n=400, seed=0, dist=2.5, spread=0.5):
    """Origins on a sphere of radius `dist` in many directions, aimed near the centre: hits and misses."""
    g = torch.Generator().manual_seed(seed)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * dist
    target = (torch.rand(n, 3, generator=g) - 0.5) * 2 * spread
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return o, d


def test_sphere_trace_hits_analytic_sphere():
    r = 0.4
    o, d = rays_towards_sphere()
    t_true, hit_true = analytic_sphere_depth(o, d, r)
    # Rays that graze within 1e-3 of the silhouette are ambiguous for any tracer: leave them out.
    oc = o - torch.tensor((0.1, -0.05, 0.02))
    miss_dist = ((oc - (oc * d).sum(-1, keepdim=True) * d).norm(dim=-1) - r).abs()
    clear = miss_dist > 1e-3
    t, hit = sphere_trace(sphere_sdf(r), o, d, 0.0, 5.0)
    assert hit_true[clear].any() and (~hit_true[clear]).any()
    assert torch.equal(hit[clear], hit_true[clear])
    both = clear & hit_true
    assert (t[both] - t_true[both]).abs().max() < 1e-4
    assert (t[~hit] == 5.0).all()


@pytest.mark.parametrize("relaxation", [1.0, 1.6, 1.9])
def test_sphere_trace_relaxation_agrees(relaxation):
    r = 0.4
    o, d = rays_towards_sphere(seed=1)
    t_true, hit_true = analytic_sphere_depth(o, d, r)
    t, hit = sphere_trace(sphere_sdf(r), o, d, 0.0, 5.0, relaxation=relaxation, differentiable=False)
    sel = hit & hit_true
    assert sel.sum() > 100
    x = o + t[:, None] * d
    assert sphere_sdf(r)(x[hit]).abs().max() < 1e-5      # every hit lies on the surface
    # depth error is |f| / cos(incidence): compare depths away from grazing incidence
    normal = torch.nn.functional.normalize(x - torch.tensor((0.1, -0.05, 0.02)), dim=-1)
    head_on = sel & ((normal * d).sum(-1) < -0.1)
    assert (t[head_on] - t_true[head_on]).abs().max() < 1e-4


def test_sphere_trace_torus_first_hit_not_skipped():
    """Over-relaxation must not step through the torus's thin tube: depths match a fine ray march's first root."""
    g = torch.Generator().manual_seed(3)
    o = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1) * 2.0
    d = torch.nn.functional.normalize(torch.rand(300, 3, generator=g) * 0.8 - 0.4 - o, dim=-1)
    f = torus_sdf()
    t, hit = sphere_trace(f, o, d, 0.0, 4.0, relaxation=1.9, max_steps=400, differentiable=False)
    ts = torch.linspace(0, 4.0, 8001)
    vals = f((o[:, None] + ts[None, :, None] * d[:, None]).reshape(-1, 3)).reshape(300, -1)
    inside = vals < 0
    first = torch.where(inside.any(1), inside.float().argmax(1), torch.full((300,), -1))
    marched_hit = first >= 0
    assert marched_hit.sum() > 50
    sel = hit & marched_hit
    assert sel.sum() >= marched_hit.sum() - 3   # a few grazing rays may differ
    assert (t[sel] - ts[first[sel]]).abs().max() < 4.0 / 8000 + 1e-4


def test_sphere_trace_starting_inside_exits_through_surface():
    r = 0.4
    o = torch.tensor([[0.1, -0.05, 0.02]]).repeat(3, 1)
    d = torch.eye(3)
    t, hit = sphere_trace(sphere_sdf(r), o, d, 0.0, 2.0)
    assert hit.all() and (t - r).abs().max() < 1e-4


def test_fast_path_matches_reference():
    o, d = rays_towards_sphere(n=300, seed=2)
    for fn in (sphere_sdf(0.4), torus_sdf()):
        t_a, h_a = sphere_trace(fn, o, d, 0.1, 4.0, differentiable=False)
        t_b, h_b = sphere_trace_reference(fn, o, d, 0.1, 4.0, differentiable=False)
        assert torch.equal(h_a, h_b)
        assert torch.allclose(t_a, t_b, atol=1e-12)


def test_depth_gradient_wrt_radius_matches_finite_differences():
    o, d = rays_towards_sphere(n=64, seed=4, spread=0.3)
    r = torch.tensor(0.45, requires_grad=True)
    t, hit = sphere_trace(sphere_sdf(r), o, d, 0.0, 5.0, eps=1e-10)
    assert hit.sum() > 20
    grad = torch.autograd.grad(t[hit].sum(), r)[0]
    h = 1e-5
    t_p, hit_p = sphere_trace(sphere_sdf(0.45 + h), o, d, 0.0, 5.0, eps=1e-10, differentiable=False)
    t_m, hit_m = sphere_trace(sphere_sdf(0.45 - h), o, d, 0.0, 5.0, eps=1e-10, differentiable=False)
    assert torch.equal(hit_p, hit) and torch.equal(hit_m, hit)
    fd = ((t_p - t_m)[hit] / (2 * h)).sum()
    assert abs(grad.item() - fd.item()) < 1e-4 * max(1.0, abs(fd.item()))
    assert grad.item() < 0   # a bigger sphere is hit earlier


def test_depth_gradient_wrt_ray_origin_and_direction_matches_finite_differences():
    f = torus_sdf()
    o = torch.tensor([[1.5, 0.3, 0.9], [-1.2, -1.1, 0.6], [0.2, 1.8, -0.4]])
    d = torch.nn.functional.normalize(torch.tensor([[-0.9, 0.0, -0.5], [0.7, 0.6, -0.3], [0.0, -1.0, 0.2]]), dim=-1)
    o_g, d_g = o.clone().requires_grad_(True), d.clone().requires_grad_(True)
    t, hit = sphere_trace(f, o_g, d_g, 0.0, 5.0, eps=1e-11, max_steps=400)
    assert hit.all()
    go, gd = torch.autograd.grad(t.sum(), (o_g, d_g))
    h = 1e-6
    for which, analytic in ((0, go), (1, gd)):
        for k in range(3):
            e = torch.zeros(3)
            e[k] = h
            args_p = (o + e, d) if which == 0 else (o, d + e)
            args_m = (o - e, d) if which == 0 else (o, d - e)
            t_p, _ = sphere_trace(f, *args_p, 0.0, 5.0, eps=1e-11, max_steps=400, differentiable=False)
            t_m, _ = sphere_trace(f, *args_m, 0.0, 5.0, eps=1e-11, max_steps=400, differentiable=False)
            assert torch.allclose(analytic[:, k], (t_p - t_m) / (2 * h), atol=1e-4)


def test_depth_gradient_reaches_module_parameters():
    """Gradients flow into an nn.Module's parameters (as for a field) and agree with the reference tracer."""
    class Sphere(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.r = torch.nn.Parameter(torch.tensor(0.4))
            self.c = torch.nn.Parameter(torch.tensor([0.05, 0.0, -0.02]))

        def forward(self, x):
            return (x - self.c).norm(dim=-1) - self.r

    m = Sphere()
    o, d = rays_towards_sphere(n=50, seed=5, spread=0.2)
    t, hit = sphere_trace(m, o, d, 0.0, 5.0)
    grads = torch.autograd.grad(t[hit].sum(), list(m.parameters()))
    t2, hit2 = sphere_trace_reference(m, o, d, 0.0, 5.0)
    grads2 = torch.autograd.grad(t2[hit2].sum(), list(m.parameters()))
    for a, b in zip(grads, grads2):
        assert a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-10)


def test_implicit_depth_with_explicit_gradient_fn():
    r = torch.tensor(0.4, requires_grad=True)
    fn = sphere_sdf(r)
    o, d = rays_towards_sphere(n=40, seed=6, spread=0.1)
    t_true, hit = analytic_sphere_depth(o, d, 0.4)
    c = torch.tensor((0.1, -0.05, 0.02))
    t = implicit_depth(fn, o[hit], d[hit], t_true[hit], grad_fn=lambda x: torch.nn.functional.normalize(x - c, dim=-1))
    (g,) = torch.autograd.grad(t.sum(), r)
    # d t / d r for the quadratic root: -r / sqrt(disc)
    oc = o[hit] - c
    b = (oc * d[hit]).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + 0.16
    assert torch.allclose(g, (-0.4 / disc.sqrt()).sum(), rtol=1e-8)


def sdf_and_grad(fn):
    def both(x):
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            f = fn(xg)
            (g,) = torch.autograd.grad(f.sum(), xg, create_graph=True)
        return f, g
    return both


def test_newton_projection_sphere_exact_in_one_step():
    r = 0.4
    fn = sphere_sdf(r)
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(7))
    p = newton_project(sdf_and_grad(fn), x)
    assert fn(p).abs().max() < 1e-12
    # the closest point: the projection moves along the radial line
    c = torch.tensor((0.1, -0.05, 0.02))
    cos = (torch.nn.functional.normalize(p - c, dim=-1) * torch.nn.functional.normalize(x - c, dim=-1)).sum(-1)
    assert (cos > 1 - 1e-12).all()


def test_newton_projection_torus_converges_in_few_steps():
    fn = torus_sdf()
    g = torch.Generator().manual_seed(8)
    ang = torch.rand(400, generator=g) * 2 * math.pi
    # points near the tube (within 0.15 of the surface), away from the torus's core circle and axis
    x = torch.stack([0.5 * ang.cos(), 0.5 * ang.sin(), torch.zeros(400)], -1)
    radial = 0.2 + 0.15 * (torch.rand(400, 1, generator=g) - 0.5)
    x = x + torch.nn.functional.normalize(torch.randn(400, 3, generator=g), dim=-1) * radial
    assert fn(x).abs().max() > 0.05
    one = newton_project(sdf_and_grad(fn), x, steps=1)
    three = newton_project(sdf_and_grad(fn), x, steps=3)
    assert fn(three).abs().max() < 1e-6
    assert fn(three).abs().mean() <= fn(one).abs().mean()


def test_newton_projection_matches_reference_and_is_differentiable():
    r = torch.tensor(0.4, requires_grad=True)
    fn = lambda x: torus_sdf()(x) * (1 + 0.3 * x[:, 0]) - 0.05 * r   # not a true SDF: several steps needed
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(9)) * 0.5
    a = newton_project(sdf_and_grad(fn), x, steps=2)
    b = newton_project_reference(fn, x, steps=2)
    assert torch.allclose(a, b, atol=1e-12)
    ga = torch.autograd.grad(a.sum(), r)[0]
    gb = torch.autograd.grad(newton_project_reference(fn, x, steps=2).sum(), r)[0]
    assert ga.abs() > 0 and torch.allclose(ga, gb, atol=1e-10)


@pytest.mark.parametrize("backbone", ["mlp", "hashgrid"])
def test_on_a_neus_field(backbone):
    """A fresh neus field (geometric initialisation: about a sphere): hits lie on its zero level set, the live-ray
    tracer agrees with the reference, depth gradients reach its parameters, projections land on f = 0."""
    from nfkit.fields import build_field

    torch.set_default_dtype(torch.float32)  # the hash-grid kernel is float32
    torch.manual_seed(0)
    cfg = {"backbone": backbone, "n_levels": 4, "log2_hashmap_size": 12, "max_resolution": 64, "hidden": 32,
           "geo_features": 4, "color_hidden": 16, "color_layers": 1}
    field = build_field("neus", cfg, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    o, d = rays_towards_sphere(n=64, seed=10, dist=2.0, spread=0.3)
    t, hit = sphere_trace_field(field, o, d, 0.0, 4.0, eps=1e-5, max_steps=300)
    assert hit.sum() > 32
    with torch.no_grad():
        assert field.sdf(o[hit] + t[hit, None] * d[hit]).abs().max() < 1e-5
        t_ref, hit_ref = sphere_trace_reference(field.sdf, o, d, 0.0, 4.0, eps=1e-5, max_steps=300,
                                                differentiable=False)
    assert torch.equal(hit, hit_ref) and torch.allclose(t.detach(), t_ref, atol=1e-5)
    grads = torch.autograd.grad(t[hit].sum(), [p for p in field.parameters() if p.requires_grad], allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(11)) * 0.3
    p = newton_project_field(field, x, steps=4, create_graph=False)
    with torch.no_grad():
        assert field.sdf(p).abs().max() < 1e-3 * field.sdf(x).abs().max()


def test_density_field_is_refused_in_one_line():
    from nfkit.fields import build_field

    torch.set_default_dtype(torch.float32)
    field = build_field("hashgrid", {"n_levels": 2, "log2_hashmap_size": 10}, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    o, d = rays_towards_sphere(n=4)
    for call in (lambda: sphere_trace_field(field, o, d, 0.0, 4.0), lambda: newton_project_field(field, o)):
        with pytest.raises(NfkitError, match="needs a sdf field") as e:
            call()
        assert "\n" not in str(e.value)


def test_no_grad_mode_skips_the_implicit_step():
    calls = []

    def fn(x):
        calls.append(x.shape[0])
        return sphere_sdf(0.4)(x)

    o, d = rays_towards_sphere(n=50, seed=12)
    with torch.no_grad():
        t, hit = sphere_trace(fn, o, d, 0.0, 5.0)
    n_no_grad = len(calls)
    calls.clear()
    t2, hit2 = sphere_trace(fn, o, d, 0.0, 5.0)
    assert len(calls) == n_no_grad + 2   # the implicit step: f at the hits and its gradient
    assert torch.equal(hit, hit2) and torch.equal(t, t2.detach())
