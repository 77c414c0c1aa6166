"""Shared machinery of the coordinate-network families (mlp, cam, rbf, triplane): one core, thin heads per signal.

A family supplies a **core**: an ``nn.Module`` mapping coordinates ``u`` [N, D] in ``[0, 1]^D`` (D = 2 or 3) and an
optional modulation coordinate ``m`` [N, k] (CAM only; ``None`` elsewhere) to features [N, core.out_dim].
:class:`CoordField` adds the head for the field's ``signal`` (a config option, so it round-trips through field files):

* ``"radiance"`` (kind ``"density"``): x [N, 3] world (the scene's normalised coordinates; the AABB maps to
  [0, 1]^3), d [N, 3] unit. Head: Linear(core -> 1 + K); sigma = exp(raw_0 - 1) (argument clamped), zero outside
  the AABB; the K colour features go to a view-dependent colour head: ``color_head="mlp"`` (K = ``geo_features``;
  MLP over [SH(d), features], as NeRF's separate view branch) or ``"sh"`` (K = 3 * sh_degree^2 SH coefficients per
  channel, rgb = sigmoid(sum_k SH_k(d) * coeff_k), as GNF's radiance head).
* ``"image"`` (kind ``"image"``): x [N, 2] pixel coordinates in [0, 1]^2 (``((u + 0.5) / W, (v + 0.5) / H)``, x right,
  y down); rgb = sigmoid(Linear(core)). ``density`` is 1 (an opaque plane).
* ``"sdf"`` (kind ``"sdf"``): x [N, 3] world (shape normalised into its AABB); ``sdf(x)`` (and ``density(x)``, which
  the coordinate fits keep using) returns the signed distance (negative inside) in world units, unclamped outside
  the AABB (coordinates clamp to its faces); ``sdf_and_gradient`` by autograd; the SDF renderer draws it grey with
  a fixed NeuS sharpness (:meth:`CoordField.surface`).
* ``"occupancy"`` (kind ``"occupancy"``): like ``"sdf"`` but ``density(x)`` returns the occupancy logit (positive
  inside, probability = sigmoid).

Learning rates: :meth:`CoordField.param_groups` splits grid-like parameters (names listed in ``grid_param_names``)
from the network, scaled by ``grid_lr_scale`` / ``net_lr_scale`` relative to the trainer's rate.

Precision (``precision``): ``"bfloat16"`` runs the core, the head and the plain colour MLP under ``torch.autocast``
in bfloat16 (weights, gradients, optimiser state and everything after the head stay float32; the outputs are cast
back; CAM's view-modulated colour MLP stays float32). ``"auto"``, the default for every signal, does so on a CPU
that multiplies bfloat16 natively (AVX512-BF16 or AMX, :func:`nfkit.fields.precision.fast_bfloat16`) and keeps
float32 elsewhere: emulated bfloat16 is slower, and GPUs have not been measured. rbf is float32 only. On the CPU
the batch is zero-padded to one of 8 sizes per octave (:func:`nfkit.fields.precision.bucket_rows`): oneDNN builds a
bfloat16 kernel per matrix shape, ~1 ms each, and ray batches change size every step. On the reference machine
(AVX512-BF16, 2 threads) a forward + backward of the default radiance mlp at 2^16 points takes 29 ms against 86 ms;
``nfkit fit`` reaches 27.81 against 26.58 dB on lego/100 in 180 s with the mlp, and in 40 s at 130k parameters the
mlp fits the astronaut image to 32.18 against 26.29 dB and the armadillo SDF to IoU 0.982 against 0.945 (every
figure, and the families that gain least, in ``bench/NOTES.md``, "bfloat16 networks").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from nfkit.errors import NfkitError
from nfkit.fields.base import (LOG_SIGMA_OUTSIDE, Capabilities, Field, FieldOutput, VolumeFeature, require_kind,
                               trunc_exp_activation)
from nfkit.fields.encodings import sh_encode
from nfkit.fields.hashgrid import mlp  # one tiny-MLP builder for every family
from nfkit.fields.precision import PRECISIONS, in_bfloat16, uses_bfloat16

SIGNALS = {"radiance": 3, "image": 2, "sdf": 3, "occupancy": 3}
KINDS = {"radiance": "density", "image": "image", "sdf": "sdf", "occupancy": "occupancy"}


@dataclass
class CoordConfig:
    """Options every coordinate-network family shares (its own ``Config`` subclasses this)."""

    signal: str = "radiance"  # radiance | image | sdf | occupancy
    color_head: str = "mlp"  # radiance only: mlp | sh
    geo_features: int = 15  # radiance, color_head=mlp: features handed to the colour MLP
    color_hidden: int = 64
    color_layers: int = 2
    sh_degree: int = 4  # SH bands (degree**2 functions), for the colour MLP input or the SH colour head
    net_lr_scale: float = 1.0  # network parameters train at trainer lr * this
    grid_lr_scale: float = 1.0  # grid-like parameters (see grid_param_names) at trainer lr * this
    # float32 | bfloat16 | auto (bfloat16 on a CPU that multiplies it natively, else float32; see the module docstring)
    precision: str = "auto"


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding. u [N, D] in [0, 1] -> [N, D * (1 + 2 * n_freqs)]: p = 2u - 1 and
    sin(2^k pi p), cos(2^k pi p) for k = 0 .. n_freqs - 1 (all sines first, then all cosines)."""

    def __init__(self, dim: int, n_freqs: int):
        super().__init__()
        self.dim, self.n_freqs = dim, n_freqs
        self.register_buffer("freqs", (2.0 ** torch.arange(n_freqs)) * math.pi, persistent=False)

    @property
    def out_dim(self) -> int:
        return self.dim * (1 + 2 * self.n_freqs)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        p = 2 * u - 1
        if not self.n_freqs:
            return p
        a = (p[:, :, None] * self.freqs).flatten(1)  # [N, D * n_freqs]
        return torch.cat([p, torch.sin(a), torch.cos(a)], -1)


class FourierEncoding(nn.Module):
    """Random Fourier features (FFN, Tancik et al.). u [N, D] in [0, 1] -> [N, 2 * m]: sin/cos(2 pi u B),
    B [D, m] ~ N(0, sigma^2) drawn from a fixed seed and stored as a buffer (it round-trips through field files)."""

    def __init__(self, dim: int, m: int, sigma: float, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(dim, m, generator=g) * sigma)

    @property
    def out_dim(self) -> int:
        return 2 * self.B.shape[1]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = 2 * math.pi * (u @ self.B)
        return torch.cat([torch.sin(a), torch.cos(a)], -1)


def make_encoding(dim: int, kind: str, n_freqs: int, fourier_features: int, fourier_sigma: float) -> nn.Module:
    """``kind``: "frequency" (NeRF) | "fourier" (random Gaussian features) | "none" (p = 2u - 1)."""
    if kind == "frequency":
        return FrequencyEncoding(dim, n_freqs)
    if kind == "fourier":
        return FourierEncoding(dim, fourier_features, fourier_sigma)
    if kind == "none":
        return FrequencyEncoding(dim, 0)
    raise NfkitError(f"encoding: expected frequency, fourier or none, got {kind!r}")


def sample_planes(planes: torch.Tensor, u: torch.Tensor, axes, align_corners: bool = False) -> torch.Tensor:
    """Bilinear samples of P planes. planes [P, C, R, R]; u [N, D] in [0, 1]; axes: P pairs (i, j) of columns of u
    (i along the plane's width, j along its height). Returns [P, N, C]; border padding."""
    g = torch.stack([u[:, [i, j]] for i, j in axes]) * 2 - 1  # [P, N, 2]
    out = F.grid_sample(planes, g[:, :, None, :], mode="bilinear", padding_mode="border",
                        align_corners=align_corners)  # [P, C, N, 1]
    return out[..., 0].transpose(1, 2)


def check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise NfkitError(f"field option {name}: expected one of {', '.join(choices)}, got {value!r}")


class CoordField(Field):
    """A coordinate-network core plus the head of ``config.signal`` (see the module docstring)."""

    grid_param_names: tuple[str, ...] = ()  # substrings of parameter names that train as grids

    def __init__(self, config, aabb):
        check_choice("signal", config.signal, SIGNALS)
        check_choice("color_head", config.color_head, ("mlp", "sh"))
        check_choice("precision", config.precision, PRECISIONS)
        config = self.resolve_config(config)
        super().__init__(config, aabb)
        c = config
        self.kind = KINDS[c.signal]
        self.dim = SIGNALS[c.signal]
        self.core = self.build_core(self.dim)
        n_core = self.core.out_dim
        self.color_net = None
        if c.signal == "radiance":
            if c.color_head == "mlp":
                self.head = nn.Linear(n_core, 1 + c.geo_features)
                self.color_net = mlp(c.sh_degree**2 + c.geo_features, c.color_hidden, c.color_layers, 3)
            else:
                self.head = nn.Linear(n_core, 1 + 3 * c.sh_degree**2)
        else:
            self.head = nn.Linear(n_core, 3 if c.signal == "image" else 1)

    # ----- what a family provides -------------------------------------------------------------------------
    def resolve_config(self, config):
        """Fill signal-dependent defaults (so the saved config is explicit). Default: unchanged."""
        return config

    def build_core(self, dim: int) -> nn.Module:
        raise NotImplementedError

    def modulation(self, u: torch.Tensor, d: torch.Tensor | None):
        """Modulation coordinate for the core (CAM); None for families without one."""
        return None

    # ----- the protocol -----------------------------------------------------------------------------------
    def raw(self, u: torch.Tensor, d: torch.Tensor | None = None) -> torch.Tensor:
        """Core + head on coordinates u [N, D] in [0, 1]^D -> raw head output [N, out] (float32)."""
        mod = self.modulation(u, d)
        if not self.uses_bfloat16(u.device):
            return self.head(self.core(u, mod))
        return in_bfloat16(lambda v, m: self.head(self.core(v, m)), u, mod)

    def uses_bfloat16(self, device: torch.device) -> bool:
        """Whether the network runs in bfloat16 on ``device`` (:func:`nfkit.fields.precision.uses_bfloat16`)."""
        return uses_bfloat16(self.config.precision, device)

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        """World x [N, D] -> core coordinates in [0, 1]^D (clamped). Image fields take x in [0, 1]^2 as is."""
        if x.shape[-1] != self.dim:
            raise NfkitError(f"{self.family} {self.config.signal} field: expected points [N, {self.dim}], "
                             f"got {tuple(x.shape)}")
        if self.dim == 2:
            return x.clamp(0, 1)
        return self.normalize(x).clamp(0, 1)

    def _geometry(self, x: torch.Tensor, d: torch.Tensor | None = None):
        u = self.normalize(x)
        inside = self.inside(u)
        h = self.raw(u.clamp(0, 1), d)
        return trunc_exp_activation(h[:, 0] - 1.0) * inside, h[:, 1:]

    def _color(self, feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        c = self.config
        sh = sh_encode(d, c.sh_degree).to(feats.dtype)
        if self.color_net is not None:
            h = torch.cat([sh, feats], -1)
            out = in_bfloat16(self.color_net, h) if self.uses_bfloat16(h.device) else self.color_net(h)
            return torch.sigmoid(out)
        coeff = feats.reshape(feats.shape[0], 3, c.sh_degree**2)
        return torch.sigmoid((coeff * sh[:, None, :]).sum(-1))

    def volume(self, x: torch.Tensor, d: torch.Tensor | None = None) -> VolumeFeature:
        """Radiance only: log_sigma = raw_0 - 1 (the argument of exp), geo = the head's colour features (15 for
        ``color_head="mlp"``, 3 * sh_degree^2 SH coefficients for ``"sh"``); d reaches view-modulated cores (CAM)."""
        if self.config.signal != "radiance":
            raise NfkitError(f"{self.family} {self.config.signal} field has no volume features (radiance only)")
        u = self.normalize(x)
        h = self.raw(u.clamp(0, 1), d)
        log_sigma = torch.where(self.inside(u), h[:, 0] - 1.0, torch.full_like(h[:, 0], LOG_SIGMA_OUTSIDE))
        return VolumeFeature(log_sigma, h[:, 1:])

    def volume_color(self, vf: VolumeFeature, d: torch.Tensor) -> torch.Tensor:
        return self._color(vf.geo, d)

    def has_fast_path(self) -> bool:
        """Whether the geometry/colour split applies (radiance, and a geometry that does not depend on the view)."""
        return self.config.signal == "radiance"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(geometry_split=self.has_fast_path())

    def geometry(self, x: torch.Tensor):
        """Fast path (``capabilities.geometry_split``): ``geometry(x)`` -> (sigma [N], features [N, K]);
        ``color(features, d)`` -> rgb [N, 3]."""
        if not self.has_fast_path():
            return super().geometry(x)
        return self._geometry(x)

    def color(self, feats: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if not self.has_fast_path():
            return super().color(feats, d)
        return self._color(feats, d)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """SDF signal: the signed distance [N] (as :meth:`density`, which the coordinate fits keep using)."""
        require_kind(self, ("sdf",), f"{self.family} sdf(x)")
        return self.raw(self.coords(x))[:, 0]

    def surface(self):
        """SDF signal: a fixed NeuS surface model for rendering (these fits learn none): inv_s = 512 / the AABB's
        diagonal, a transition about one default render step wide. Not a submodule (field files are unchanged)."""
        require_kind(self, ("sdf",), f"{self.family} surface()")
        if "_surface" not in self.__dict__:
            from nfkit.fields.sdf import SurfaceDensity

            diag = float((self.aabb[1] - self.aabb[0]).norm())
            surface = SurfaceDensity("neus", math.log(512 / diag) / 10, fixed=True)
            self.__dict__["_surface"] = surface.to(self.aabb.device)
        return self.__dict__["_surface"]

    def sdf_and_gradient(self, x: torch.Tensor, create_graph: bool = False):
        """SDF signal: (sdf [N], grad [N, 3]) by autograd through the core."""
        require_kind(self, ("sdf",), f"{self.family} sdf_and_gradient(x)")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = self.sdf(xg)
            (g,) = torch.autograd.grad(s.sum(), xg, create_graph=create_graph)
        return (s if create_graph else s.detach()), g

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Radiance: sigma [N] >= 0. SDF: signed distance [N]. Occupancy: logit [N]. Image: ones [N]."""
        s = self.config.signal
        if s == "radiance":
            return self._geometry(x)[0]
        if s == "image":
            return torch.ones(x.shape[0], device=x.device)
        return self.raw(self.coords(x))[:, 0]

    def forward(self, x: torch.Tensor, d: torch.Tensor | None = None) -> FieldOutput:
        s = self.config.signal
        if s == "radiance":
            if d is None:
                raise NfkitError(f"{self.family} radiance field: forward(x, d) needs view directions d [N, 3]")
            sigma, feats = self._geometry(x, d)
            return FieldOutput(sigma, self._color(feats, d), feats)
        if s == "image":
            rgb = torch.sigmoid(self.raw(self.coords(x)))
            return FieldOutput(torch.ones_like(rgb[:, 0]), rgb)
        v = self.raw(self.coords(x))[:, 0]  # sdf / occupancy logit; density keeps it for the coordinate fits
        return FieldOutput(v, torch.full((x.shape[0], 3), 0.5, device=x.device), sdf=v if s == "sdf" else None)

    def param_groups(self, lr: float) -> list[dict]:
        """Adam groups: grid-like parameters at lr * grid_lr_scale (no weight decay), the rest at
        lr * net_lr_scale (weight decay 1e-6, as the trainer's default grouping)."""
        grid, net = [], []
        for n, p in self.named_parameters():
            (grid if any(k in n for k in self.grid_param_names) else net).append(p)
        c = self.config
        groups = [{"params": grid, "lr": lr * c.grid_lr_scale, "weight_decay": 0.0},
                  {"params": net, "lr": lr * c.net_lr_scale, "weight_decay": 1e-6}]
        return [g for g in groups if g["params"]]


def with_defaults(config, defaults: dict):
    """``config`` with every field that is None (or an empty tuple/list) replaced from ``defaults``."""
    fill = {k: v for k, v in defaults.items() if getattr(config, k) is None or getattr(config, k) in ((), [])}
    return replace(config, **fill) if fill else config
