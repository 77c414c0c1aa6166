"""Surface queries on SDF fields: sphere tracing with a differentiable hit depth, Newton projection onto f = 0.

Conventions: ``sdf_fn(x [N, 3]) -> [N]`` is a signed distance (positive outside) in normalised scene coordinates,
``rays_o, rays_d: [R, 3]`` in the same coordinates (``rays_d`` need not be unit length; depths are in units of
``|rays_d|``). ``sdf_and_grad_fn(x [N, 3]) -> (f [N], grad [N, 3])`` returns ∇f, with graph when the caller wants
gradients through it (an SDF field's ``lambda x: field.sdf_and_gradient(x, create_graph=True)``).

Sphere tracing runs without grad; the returned depth of a hit is then made differentiable by one implicit-function
step at the converged depth t*: ``t = t* - (f(o + t* d) - f.detach()) / (∇f·d).detach()``. Its value is t*, and its
derivatives are those of the root of f(o + t d) = 0: dt/dθ = -(∂f/∂θ)/(∇f·d), dt/do = -∇f/(∇f·d),
dt/dd = -t ∇f/(∇f·d), so gradients reach the field's parameters and the rays.

Two tracers give the same depths: :func:`sphere_trace_reference` evaluates every ray at every step (masks only) and
:func:`sphere_trace` evaluates only the rays still marching (the one to use). Both step with over-relaxation
(Keinert et al. 2014, "Enhanced Sphere Tracing"): a step of ``omega·|f|``, replaced by the safe step ``|f|`` (and
``omega = 1`` from then on for that ray) when the two unbounding spheres do not overlap or the step crossed the
surface. Steps are signed by the side the ray started on, so a ray that overshoots a not-quite-SDF steps back.

On SDF fields (``field.kind == "sdf"``): :func:`sphere_trace_field` and :func:`newton_project_field` take ∇f from
``field.sdf_and_gradient`` (finite differences on the hash grid, autograd on the MLP) and refuse other kinds with a
one-line :class:`~nfkit.errors.NfkitError`.
"""
from __future__ import annotations

from typing import Callable

import torch

from nfkit.fields.base import require_kind

SdfFn = Callable[[torch.Tensor], torch.Tensor]
SdfGradFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

DEFAULT_MAX_STEPS = 128
DEFAULT_EPS = 1e-5
DEFAULT_RELAXATION = 1.6
_MIN_DENOM = 1e-6


def _as_ray_tensor(v, like: torch.Tensor) -> torch.Tensor:
    """near/far as [R] tensors of the rays' dtype and device (floats broadcast)."""
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(like.shape[0]).clone()


def _step_rays(sdf_fn: SdfFn, o, d, t, f, sign0, omega, eps):
    """One over-relaxed step for a batch of rays (all [B] / [B, 3], no grad). Returns the new (t, f, omega).

    Candidate ``t + sign0·omega·f``; rejected (safe step ``t + sign0·f``, omega -> 1) where omega > 1 and the
    unbounding spheres at t and the candidate do not overlap, or the candidate lies on the other side of f = 0.
    """
    step = sign0 * f * omega
    t_c = t + step
    f_c = sdf_fn(o + t_c[:, None] * d)
    relaxed = omega > 1
    fail = relaxed & ((f.abs() + f_c.abs() < step.abs()) | (torch.sign(f_c) != sign0))
    if bool(fail.any()):
        idx = fail.nonzero().squeeze(1)
        t_s = t[idx] + sign0[idx] * f[idx]
        f_s = sdf_fn(o[idx] + t_s[:, None] * d[idx])
        t_c, f_c, omega = t_c.clone(), f_c.clone(), omega.clone()
        t_c[idx], f_c[idx], omega[idx] = t_s, f_s, 1.0
    return t_c, f_c, omega


@torch.no_grad()
def _trace_reference(sdf_fn: SdfFn, o, d, near, far, max_steps: int, eps: float, relaxation: float):
    """Every ray at every step; finished rays keep their state. Returns (t [R], converged [R] bool)."""
    t = near.clone()
    f = sdf_fn(o + t[:, None] * d)
    sign0 = torch.where(f < 0, -1.0, 1.0).to(f.dtype)
    omega = torch.full_like(t, relaxation)
    done = (f.abs() < eps) | (t > far)
    for _ in range(max_steps):
        if bool(done.all()):
            break
        t_n, f_n, omega_n = _step_rays(sdf_fn, o, d, t, f, sign0, omega, eps)
        t, f, omega = torch.where(done, t, t_n), torch.where(done, f, f_n), torch.where(done, omega, omega_n)
        done = done | (f.abs() < eps) | (t > far)
    return t, (f.abs() < eps) & (t <= far) & (t >= near)


@torch.no_grad()
def _trace_live(sdf_fn: SdfFn, o, d, near, far, max_steps: int, eps: float, relaxation: float):
    """As :func:`_trace_reference`, evaluating only the rays still marching. Returns (t [R], converged [R])."""
    t = near.clone()
    f = sdf_fn(o + t[:, None] * d)
    sign0 = torch.where(f < 0, -1.0, 1.0).to(f.dtype)
    omega = torch.full_like(t, relaxation)
    live = ((f.abs() >= eps) & (t <= far)).nonzero().squeeze(1)
    for _ in range(max_steps):
        if live.numel() == 0:
            break
        t_n, f_n, omega_n = _step_rays(sdf_fn, o[live], d[live], t[live], f[live], sign0[live], omega[live], eps)
        t[live], f[live], omega[live] = t_n, f_n, omega_n
        live = live[(f_n.abs() >= eps) & (t_n <= far[live])]
    return t, (f.abs() < eps) & (t <= far) & (t >= near)


def _autograd_grad(sdf_fn: SdfFn, x: torch.Tensor) -> torch.Tensor:
    """∇f at x (detached) by autograd through sdf_fn."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(sdf_fn(xg).sum(), xg)
    return g.detach()


def implicit_depth(sdf_fn: SdfFn, rays_o, rays_d, t_star, grad_fn: SdfFn | None = None) -> torch.Tensor:
    """Differentiable depth of the surface at the converged (detached) depths ``t_star`` [R] of rays [R, 3].

    Value ``t_star``; derivative that of the root of f(o + t d) = 0 (one implicit-function step, see module doc).
    ``grad_fn(x [N, 3]) -> [N, 3]`` gives ∇f for the denominator (default: autograd through ``sdf_fn``).
    """
    t_star = t_star.detach()
    x = rays_o + t_star[:, None] * rays_d
    f = sdf_fn(x)
    g = grad_fn(x.detach()).detach() if grad_fn is not None else _autograd_grad(sdf_fn, x)
    denom = (g * rays_d.detach()).sum(-1)
    denom = torch.where(denom.abs() < _MIN_DENOM, torch.where(denom < 0, -_MIN_DENOM, _MIN_DENOM), denom)
    return t_star - (f - f.detach()) / denom


def _finish(sdf_fn, rays_o, rays_d, t, hit, far, differentiable: bool, grad_fn):
    """Misses get depth ``far`` (no grad); hits the implicit-function depth when differentiable."""
    t = torch.where(hit, t, far)
    if not (differentiable and torch.is_grad_enabled()) or not bool(hit.any()):
        return t, hit
    idx = hit.nonzero().squeeze(1)
    t_hit = implicit_depth(sdf_fn, rays_o[idx], rays_d[idx], t[idx], grad_fn)
    return t.index_put((idx,), t_hit), hit


def sphere_trace(sdf_fn: SdfFn, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far,
                 max_steps: int = DEFAULT_MAX_STEPS, eps: float = DEFAULT_EPS, relaxation: float = DEFAULT_RELAXATION,
                 differentiable: bool = True, grad_fn: SdfFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """First zero of ``sdf_fn`` along each ray in [near, far]: ``(t [R], hit [R] bool)``.

    rays_o, rays_d: [R, 3] normalised scene coordinates; near, far: floats or [R]. A hit is a ray whose |f| fell
    below ``eps`` within ``max_steps`` and [near, far]; misses report depth ``far``. With ``differentiable`` the hit
    depths carry gradients to ``sdf_fn``'s parameters, ``rays_o`` and ``rays_d`` (implicit-function step);
    ``relaxation`` > 1 over-relaxes steps (1 = plain sphere tracing). Evaluates only the rays still marching.
    """
    near_t, far_t = _as_ray_tensor(near, rays_o), _as_ray_tensor(far, rays_o)
    t, hit = _trace_live(sdf_fn, rays_o.detach(), rays_d.detach(), near_t, far_t, max_steps, eps, relaxation)
    return _finish(sdf_fn, rays_o, rays_d, t, hit, far_t, differentiable, grad_fn)


def sphere_trace_reference(sdf_fn: SdfFn, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far,
                           max_steps: int = DEFAULT_MAX_STEPS, eps: float = DEFAULT_EPS,
                           relaxation: float = DEFAULT_RELAXATION, differentiable: bool = True,
                           grad_fn: SdfFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure reference of :func:`sphere_trace`: the same steps, every ray evaluated at every iteration."""
    near_t, far_t = _as_ray_tensor(near, rays_o), _as_ray_tensor(far, rays_o)
    t, hit = _trace_reference(sdf_fn, rays_o.detach(), rays_d.detach(), near_t, far_t, max_steps, eps, relaxation)
    return _finish(sdf_fn, rays_o, rays_d, t, hit, far_t, differentiable, grad_fn)


def newton_project(sdf_and_grad_fn: SdfGradFn, x: torch.Tensor, steps: int = 1,
                   min_grad_sq: float = 1e-12) -> torch.Tensor:
    """Project points x [N, 3] onto f = 0 by ``steps`` Newton steps ``x <- x - f(x) ∇f / ‖∇f‖²`` -> [N, 3].

    Differentiable in x and the field's parameters when ``sdf_and_grad_fn`` returns ∇f with graph. Exact in one
    step for a true SDF of a sphere or plane; points where ‖∇f‖² < ``min_grad_sq`` stay where they are.
    """
    for _ in range(steps):
        f, g = sdf_and_grad_fn(x)
        g_sq = (g * g).sum(-1)
        scale = torch.where(g_sq > min_grad_sq, f / g_sq.clamp_min(min_grad_sq), torch.zeros_like(f))
        x = x - scale[:, None] * g
    return x


def newton_project_reference(sdf_fn: SdfFn, x: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """Pure reference of :func:`newton_project` from ``sdf_fn`` alone (∇f by autograd, with graph)."""
    for _ in range(steps):
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            f = sdf_fn(xg)
            (g,) = torch.autograd.grad(f.sum(), xg, create_graph=True)
        x = xg - (f / (g * g).sum(-1))[:, None] * g
    return x


def sphere_trace_field(field, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far,
                       **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sphere_trace` of an SDF field (normalised scene coordinates); ∇f for the hit depth's denominator
    from ``field.sdf_and_gradient``. Keyword arguments as :func:`sphere_trace` (not ``grad_fn``)."""
    require_kind(field, ("sdf",), "sphere tracing")
    return sphere_trace(field.sdf, rays_o, rays_d, near, far,
                        grad_fn=lambda x: field.sdf_and_gradient(x, create_graph=False)[1], **kwargs)


def newton_project_field(field, x: torch.Tensor, steps: int = 1, create_graph: bool = True) -> torch.Tensor:
    """:func:`newton_project` onto an SDF field's zero level set; differentiable in the field's parameters (and x)
    when ``create_graph``."""
    require_kind(field, ("sdf",), "Newton projection")
    return newton_project(lambda p: field.sdf_and_gradient(p, create_graph=create_graph), x, steps)
