"""Signed-distance fields rendered by volume rendering (NeuS / VolSDF): family ``"neus"``, kind ``"sdf"``.

Geometry: p = (x - centre) / h, the point in the AABB's isotropic frame (h = the largest half extent, so p spans
[-1, 1] along the longest axis) -> backbone -> geometry MLP -> [f_p, 15 features]; the signed distance in world
units is ``sdf(x) = h * f_p`` (negative inside).

* ``backbone="hashgrid"`` (default): [p, hash encoding of the AABB-normalised x] (instant-nsr-pl's ``include_xyz``)
  -> ``n_layers`` x (weight-normed Linear(hidden) -> softplus(beta=100)) -> weight-normed Linear(1 + 15);
* ``backbone="mlp"``: NeRF frequency encoding of p (``n_freqs`` octaves, p first) -> the same MLP (NeuS/IDR).

Geometric initialisation (IDR, NeuS, instant-nsr-pl's ``sphere_init``): the first layer sees only p (its weights
on the encoding are zero), hidden weights N(0, 2 / out), the output weights N(sqrt(pi) / sqrt(in), 1e-4) and
bias -``init_radius``: at initialisation ``f_p ~ |p| - init_radius``, a sphere of radius ``init_radius`` (0.5) of
the AABB's half size. Weight norm on every geometry layer (applied after the initialisation).

Colour (NeuS / VolSDF): MLP(ReLU) over [p, n = grad f / |grad f|, SH_4(d), 15 geometry features] -> sigmoid.

Surface-to-density model (:class:`SurfaceDensity`, submodule ``surface_model``, saved with the field):
``renderer="neus"``: the learned inverse standard deviation ``inv_s = exp(10 * variance)`` (variance starts at
0.3, NeuS); ``renderer="volsdf"``: the learned ``beta`` (starts at 0.1; used as |beta| + 1e-4, VolSDF), density
``(1 / beta) * Psi_beta(-sdf)`` with Psi_beta the Laplace CDF. :mod:`nfkit.renderers.sdf` turns them into alphas.

Input gradient (normals, NeuS's cosine, the eikonal loss): the hash grid's C++ kernel has no gradient w.r.t. x, and
an ``x`` that requires grad sends :func:`~nfkit.fields.encodings.hash_encode` down the slow torch reference. The
hash-grid backbone therefore takes **central finite differences** (instant-nsr-pl, NeuS2): the geometry at x and
x +- eps e_k in one batch of 7N points through the fast kernel, grad = (f(x + eps e_k) - f(x - eps e_k)) / 2 eps,
differentiable w.r.t. the parameters through the kernel's backward (``fd_eps``, world units; 0 = one cell of the
finest level). The MLP backbone uses analytic autograd (``create_graph`` when training).
Measured on this machine (N = 2^14 points, default hash grid, geometry forward + the gradient + a backward of
sdf.sum() + the eikonal term, 1 thread on 2 shared cores): finite differences through
the C++ kernel 244-306 ms; autograd (create_graph) through the torch reference encoding 1,715-2,734 ms (~7x);
the plain sdf forward + backward through the kernel 30 ms. Hence finite differences for the hash grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from nfkit.errors import NfkitError
from nfkit.fields.base import Capabilities, Field, FieldOutput, register_field
from nfkit.fields.coordnet import FrequencyEncoding, check_choice
from nfkit.fields.encodings import HashEncoding, HashGridConfig, sh_encode
from nfkit.fields.hashgrid import mlp

# Per backbone. net_lr_scale: the MLP SDF diverged at the hash grid's 1e-2 (analytic sphere, 30 s: gradient cosine
# to the true normal 0.08) and trained at 2e-3 (0.97; 5e-4, NeuS's rate, was slower in the same time).
BACKBONE_DEFAULTS = {"hashgrid": {"hidden": 64, "n_layers": 1, "net_lr_scale": 1.0},
                     "mlp": {"hidden": 128, "n_layers": 4, "net_lr_scale": 0.2}}
RENDERERS = ("neus", "volsdf")


class SurfaceDensity(nn.Module):
    """The learned sharpness of the surface. ``renderer`` "neus": parameter ``variance``, ``inv_s() =
    exp(10 variance)``; "volsdf": parameter ``beta``, ``beta_value() = |beta| + beta_min``. ``fixed``: a plain
    buffer instead of a parameter (coordinate SDF fits, which do not learn one)."""

    def __init__(self, renderer: str = "neus", init_variance: float = 0.3, init_beta: float = 0.1,
                 beta_min: float = 1e-4, fixed: bool = False):
        super().__init__()
        check_choice("renderer", renderer, RENDERERS)
        self.renderer, self.beta_min = renderer, beta_min
        name, value = ("variance", init_variance) if renderer == "neus" else ("beta", init_beta)
        t = torch.tensor(float(value))
        if fixed:
            self.register_buffer(name, t)
        else:
            self.register_parameter(name, nn.Parameter(t))

    def inv_s(self) -> torch.Tensor:
        """NeuS: the inverse standard deviation s of the logistic CDF (scalar tensor)."""
        if self.renderer == "neus":
            return torch.exp(self.variance * 10.0).clamp(1e-6, 1e6)
        return 1.0 / self.beta_value()

    def beta_value(self) -> torch.Tensor:
        """VolSDF: beta of the Laplace CDF (scalar tensor); NeuS: 1 / inv_s."""
        if self.renderer == "volsdf":
            return self.beta.abs() + self.beta_min
        return 1.0 / self.inv_s()

    def volsdf_density(self, sdf: torch.Tensor) -> torch.Tensor:
        """VolSDF density (1 / beta) Psi_beta(-sdf): sdf [N] -> [N] >= 0."""
        beta = self.beta_value()
        s = -sdf
        psi = torch.where(s <= 0, 0.5 * torch.exp(s.clamp(max=0) / beta), 1 - 0.5 * torch.exp(-s.clamp(min=0) / beta))
        return psi / beta


def _geometric_mlp(n_in: int, hidden: int, n_layers: int, n_out: int, radius: float, n_xyz: int = 3) -> nn.ModuleList:
    """Weight-normed linears with the geometric (sphere) initialisation (see the module docstring)."""
    dims = [n_in] + [hidden] * n_layers + [n_out]
    layers = nn.ModuleList()
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            if i == len(dims) - 2:
                lin.weight.normal_(math.sqrt(math.pi) / math.sqrt(a), 1e-4)
                lin.bias.fill_(-radius)
            else:
                lin.bias.zero_()
                lin.weight.normal_(0.0, math.sqrt(2.0) / math.sqrt(b))
                if i == 0:
                    lin.weight[:, n_xyz:] = 0.0
        layers.append(weight_norm(lin))
    return layers


@register_field
class NeuSField(Field):
    """Hash-grid (or MLP) SDF with a normal-aware colour head (see the module docstring)."""

    family = "neus"
    kind = "sdf"
    capabilities = Capabilities()

    @dataclass
    class Config:
        backbone: str = "hashgrid"  # hashgrid | mlp
        renderer: str = "neus"  # neus | volsdf
        n_levels: int = 16
        n_features_per_level: int = 2
        log2_hashmap_size: int = 19
        base_resolution: int = 16
        max_resolution: int = 2048
        n_freqs: int = 6  # mlp backbone: frequency encoding octaves of p
        hidden: int | None = None  # None: 64 (hashgrid), 128 (mlp)
        n_layers: int | None = None  # geometry hidden layers; None: 1 (hashgrid), 4 (mlp)
        geo_features: int = 15
        color_hidden: int = 64
        color_layers: int = 2
        sh_degree: int = 4
        init_radius: float = 0.5  # initial sphere, in units of the AABB's largest half extent
        init_variance: float = 0.3  # neus: inv_s = exp(10 * variance)
        init_beta: float = 0.1  # volsdf
        fd_eps: float = 0.0  # hashgrid: finite-difference step in world units (0: one cell of the finest level)
        surface_lr_scale: float = 0.1  # surface_model trains at lr * this
        net_lr_scale: float | None = None  # the networks (and the mlp backbone) at lr * this; None: per backbone
        backend: str = "auto"  # hash encoding: auto | cpp | torch | tcnn

    def __init__(self, config: "NeuSField.Config", aabb):
        check_choice("backbone", config.backbone, tuple(BACKBONE_DEFAULTS))
        check_choice("renderer", config.renderer, RENDERERS)
        fill = {k: v for k, v in BACKBONE_DEFAULTS[config.backbone].items() if getattr(config, k) is None}
        config = replace(config, **fill)
        super().__init__(config, aabb)
        c = config
        if c.backbone == "hashgrid":
            pls = (c.max_resolution / c.base_resolution) ** (1.0 / max(1, c.n_levels - 1))
            self.encoding = HashEncoding(HashGridConfig(c.n_levels, c.n_features_per_level, c.log2_hashmap_size,
                                                        c.base_resolution, pls), c.backend)
            n_in = 3 + self.encoding.out_dim
        else:
            self.encoding = FrequencyEncoding(3, c.n_freqs)  # p in, [p, sin, cos] out (p first)
            n_in = self.encoding.out_dim
        self.geo_net = _geometric_mlp(n_in, c.hidden, c.n_layers, 1 + c.geo_features, c.init_radius)
        self.color_net = mlp(3 + 3 + c.sh_degree**2 + c.geo_features, c.color_hidden, c.color_layers, 3)
        self.surface_model = SurfaceDensity(c.renderer, c.init_variance, c.init_beta)

    @property
    def centre(self) -> torch.Tensor:
        """The AABB's centre [3] (computed when asked: field files build the model on the meta device)."""
        return (self.aabb[0] + self.aabb[1]) / 2

    @property
    def half(self) -> torch.Tensor:
        """The AABB's largest half extent (scalar tensor): p = (x - centre) / half, sdf = half * f_p."""
        return (self.aabb[1] - self.aabb[0]).max() / 2

    # ----- geometry ------------------------------------------------------------------------------------------
    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3] world -> [N, 1 + K]: f_p (sdf / half) and the geometry features."""
        p = (x - self.centre) / self.half
        if self.config.backbone == "hashgrid":
            h = torch.cat([p, self.encoding(self.normalize(x).clamp(0, 1).contiguous())], -1)
        else:
            h = self.encoding((p + 1) / 2)  # FrequencyEncoding maps u in [0, 1] to p = 2u - 1 first
        for lin in self.geo_net[:-1]:
            h = F.softplus(lin(h), beta=100)
        return self.geo_net[-1](h)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance [N] in world units (negative inside) at x [N, 3]."""
        return self._raw(x)[:, 0] * self.half

    def fd_step(self) -> float:
        """The hash-grid finite-difference step (world units)."""
        c = self.config
        return c.fd_eps if c.fd_eps > 0 else 2 * float(self.half) / c.max_resolution

    def geometry_and_gradient(self, x: torch.Tensor, create_graph: bool = False):
        """(sdf [N], grad [N, 3], features [N, K]); the gradient by finite differences (hash grid) or autograd
        (mlp), with graph when ``create_graph`` (else detached, as are sdf and features)."""
        if self.config.backbone == "hashgrid":
            eps = self.fd_step()
            offs = torch.cat([torch.eye(3, device=x.device), -torch.eye(3, device=x.device)]) * eps  # [6, 3]
            xs = torch.cat([x[None], x[None] + offs[:, None]]).reshape(-1, 3)  # centre first, then +e_k, -e_k
            with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
                raw = self._raw(xs.detach())
            n = x.shape[0]
            f = raw[:, 0].reshape(7, n) * self.half
            grad = ((f[1:4] - f[4:7]) / (2 * eps)).T
            return f[0], grad, raw[:n, 1:]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            raw = self._raw(xg)
            s = raw[:, 0] * self.half
            (grad,) = torch.autograd.grad(s.sum(), xg, create_graph=create_graph)
        if not create_graph:
            return s.detach(), grad.detach(), raw[:, 1:].detach()
        return s, grad, raw[:, 1:]

    def sdf_and_gradient(self, x: torch.Tensor, create_graph: bool = False):
        """(sdf [N], grad [N, 3]) at x [N, 3] (see :meth:`geometry_and_gradient`)."""
        s, g, _ = self.geometry_and_gradient(x, create_graph)
        return s, g

    def surface(self) -> SurfaceDensity:
        return self.surface_model

    def density(self, x: torch.Tensor) -> torch.Tensor:
        raise NfkitError("a neus field is an SDF field: it has sdf(x), not density(x)")

    # ----- colour --------------------------------------------------------------------------------------------
    def color_at(self, x: torch.Tensor, normals: torch.Tensor, d: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """rgb [N, 3] from points x, unit normals, unit view directions d [N, 3] and geometry features [N, K]."""
        p = (x - self.centre) / self.half
        h = torch.cat([p, normals, sh_encode(d, self.config.sh_degree), feats], -1)
        return torch.sigmoid(self.color_net(h))

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> FieldOutput:
        """x, d [N, 3] -> FieldOutput(None, rgb, features, sdf, gradient); with graph when grad mode is on."""
        s, g, feats = self.geometry_and_gradient(x, create_graph=torch.is_grad_enabled())
        rgb = self.color_at(x, F.normalize(g, dim=-1), d, feats)
        return FieldOutput(None, rgb, feats, sdf=s, gradient=g)

    def param_groups(self, lr: float) -> list[dict]:
        """Adam groups: the hash table at lr (no weight decay), the networks at lr * net_lr_scale, the surface
        model at lr * surface_lr_scale."""
        surf = list(self.surface_model.parameters())
        enc = list(self.encoding.parameters())
        ids = {id(p) for p in surf + enc}
        net = [p for p in self.parameters() if id(p) not in ids]
        c = self.config
        groups = [{"params": enc, "lr": lr, "weight_decay": 0.0},
                  {"params": net, "lr": lr * c.net_lr_scale, "weight_decay": 1e-6},
                  {"params": surf, "lr": lr * c.surface_lr_scale, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]
