"""A bank of B tri-plane fields with per-shape decoders, fitted in one batched computation.

Shape b's field (after Cardace et al., ICLR 2024): planes [3, C, R, R] over (x, y), (x, z), (y, z), sampled
bilinearly (``grid_sample``, border padding) at p in [-1, 1]^3 and summed -> [C], concatenated with p (and an
optional NeRF frequency encoding of p) -> its own small MLP (``n_layers`` x ``hidden``, ReLU or SIREN sine) -> one
occupancy logit. All B fields are evaluated together: the planes as one [B*3, C, R, R] ``grid_sample`` and the
decoders as batched matmuls (``torch.baddbmm`` over [B, N, d] x [B, d, h]); the loss is the sum over shapes of each
shape's mean BCE, so every shape's gradient (and Adam's elementwise update) is that of its own single fit.

Per-shape randomness: shape b's initial planes and decoder come from ``torch.Generator`` seeded with
``init_seeds[b]`` and its minibatch order from ``order_seeds[b]``; fitting B shapes together therefore gives the
same fields as B single fits with the same seeds (up to float summation order). ``init="per-shape"`` (default,
upstream's setting) seeds shape i with ``seed * 1_000_003 + i``, so the tri-plane channel order differs between
shapes (what the channel-token transformer is built to ignore); ``init="shared"`` starts every shape of a bank from
one initialisation (seed ``seed``), as weight-space methods assume (an ablation: a transformer trained on such a
bank does not survive re-fitting with another seed, bench/RESULTS.md).

``decoder="shared"``: one decoder (batch dimension 1, broadcast over the B shapes) for every shape. Fitted jointly
with B shapes' planes (:func:`fit_batch` with ``decoder=None``: the decoder's gradient is the sum over the shapes),
or given and frozen (``decoder=`` its tensors: only the planes are fitted), see
:mod:`~nfkit.apps.triplanes.shared_decoder`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nfkit.errors import NfkitError

PLANE_AXES = ((0, 1), (0, 2), (1, 2))


@dataclass
class FitConfig:
    """How every shape of a bank is fitted (saved in the bank and in every classifier trained on it)."""

    channels: int = 16  # C, per plane
    resolution: int = 32  # R
    hidden: int = 32  # decoder width
    n_layers: int = 2  # decoder hidden layers
    pe_freqs: int = 0  # NeRF frequencies of p concatenated to the features (p itself always is)
    activation: str = "relu"  # relu | sine (SIREN, omega_0 = 30)
    init_std: float = 0.01  # planes start N(0, init_std^2)
    init: str = "per-shape"  # per-shape: seed * 1_000_003 + shape index (upstream) | shared: seed for every shape
    decoder: str = "per-shape"  # per-shape: one decoder a shape | shared: one for the bank (fitted, then frozen)
    shared_fit_shapes: int = 64  # decoder=shared: training shapes (spread over the classes) it is fitted on
    target: str = "auto"  # occupancy (meshes) | udf (point clouds or meshes' surface samples) | auto: by the files
    udf_clip: float = 0.1  # udf: the BCE label is 1 - min(udf, udf_clip) / udf_clip (1 on the points)
    cloud_points: int = 2048  # udf: points of each shape's cloud (a mesh's surface samples / a cloud's subset)
    seed: int = 0
    steps: int = 250
    points_per_step: int = 2048  # per shape
    samples: int = 32768  # ground-truth points per shape (minibatches cycle through them)
    near_fraction: float = 0.6  # of the samples: surface + N(0, sigma^2), sigma in (0.01, 0.04); rest uniform
    # Adam rates; 0.01 / 0.002 before gave mean IoU 0.868 (now 0.912) on 24 real-arm shapes, 0.940 (0.956) on 20
    # procedural ones, at the same cost
    lr: float = 0.02  # planes
    decoder_lr: float = 0.005  # decoder
    lr_final: float = 0.1  # cosine decay to this fraction of the rates
    surface_points: int = 1024  # surface samples kept per shape (PointNet's input)

    def check(self) -> "FitConfig":
        if self.activation not in ("relu", "sine"):
            raise NfkitError(f"--activation: expected relu or sine, got {self.activation!r}")
        for name, options in (("init", ("per-shape", "shared")), ("decoder", ("per-shape", "shared")),
                              ("target", ("auto", "occupancy", "udf"))):
            if getattr(self, name) not in options:
                raise NfkitError(f"--{name}: expected {' or '.join(options)}, got {getattr(self, name)!r}")
        for name in ("channels", "resolution", "hidden", "n_layers", "steps", "points_per_step", "samples",
                     "surface_points", "shared_fit_shapes", "cloud_points"):
            if int(getattr(self, name)) < 1:
                raise NfkitError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(self, name)}")
        if not 0 <= self.near_fraction <= 1:
            raise NfkitError(f"--near-fraction: expected a value between 0 and 1, got {self.near_fraction}")
        if not self.udf_clip > 0:
            raise NfkitError(f"--udf-clip: expected a positive distance, got {self.udf_clip}")
        return self

    @property
    def in_dim(self) -> int:
        return self.channels + 3 + 6 * self.pe_freqs

    def init_seed(self, index: int) -> int:
        return self.seed if self.init == "shared" else self.seed * 1_000_003 + index


def decoder_shapes(cfg: FitConfig) -> dict:
    """Name -> per-shape shape of every decoder tensor (weights stored [in, out] for ``baddbmm``)."""
    dims = [cfg.in_dim] + [cfg.hidden] * cfg.n_layers + [1]
    out = {}
    for i in range(len(dims) - 1):
        out[f"w{i}"] = (dims[i], dims[i + 1])
        out[f"b{i}"] = (1, dims[i + 1])
    return out


def init_shape(cfg: FitConfig, seed: int) -> dict:
    """One shape's initial tensors from ``torch.Generator(seed)``: planes [3, C, R, R] and the decoder."""
    g = torch.Generator().manual_seed(int(seed))
    out = {"planes": torch.randn(3, cfg.channels, cfg.resolution, cfg.resolution, generator=g) * cfg.init_std}
    shapes = decoder_shapes(cfg)
    n_lin = len(shapes) // 2
    for i in range(n_lin):
        fan_in, fan_out = shapes[f"w{i}"]
        if cfg.activation == "sine":  # SIREN initialisation
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / 30.0
        else:  # torch.nn.Linear's
            bound = 1.0 / math.sqrt(fan_in)
        out[f"w{i}"] = (torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound
        out[f"b{i}"] = (torch.rand(1, fan_out, generator=g) * 2 - 1) * (1.0 / math.sqrt(fan_in))
    return out


def init_bank(cfg: FitConfig, seeds) -> dict:
    """Initial tensors of B shapes: planes [B, 3, C, R, R], w_i [B, d_in, d_out], b_i [B, 1, d_out]."""
    per = [init_shape(cfg, s) for s in seeds]
    return {k: torch.stack([p[k] for p in per]) for k in per[0]}


def sample_planes(planes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """planes [B, 3, C, R, R], x [B, N, 3] in [-1, 1] -> summed plane features [B, N, C] (one grid_sample)."""
    B, P, C, R, _ = planes.shape
    grid = torch.stack([x[..., list(a)] for a in PLANE_AXES], 1)  # [B, 3, N, 2]
    s = F.grid_sample(planes.reshape(B * P, C, R, R), grid.reshape(B * P, 1, -1, 2), mode="bilinear",
                      padding_mode="border", align_corners=False)  # [B*3, C, 1, N]
    return s.reshape(B, P, C, -1).sum(1).transpose(1, 2)


def frequency_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """x [..., 3] -> [..., 6 * n_freqs]: sin and cos of x * 2^k pi, k < n_freqs."""
    f = (2.0 ** torch.arange(n_freqs, dtype=x.dtype)) * math.pi
    xf = (x[..., None, :] * f[:, None]).flatten(-2)
    return torch.cat([xf.sin(), xf.cos()], -1)


def forward(params: dict, x: torch.Tensor, cfg: FitConfig) -> torch.Tensor:
    """Occupancy logits [B, N] of B fields at x [B, N, 3]."""
    h = torch.cat([sample_planes(params["planes"], x), x], -1)
    if cfg.pe_freqs:
        h = torch.cat([h, frequency_encoding(x, cfg.pe_freqs)], -1)
    n_lin = cfg.n_layers + 1
    B = h.shape[0]
    for i in range(n_lin):  # a shared decoder's [1, ...] tensors are broadcast (expand: no copy)
        h = torch.baddbmm(params[f"b{i}"].expand(B, -1, -1), h, params[f"w{i}"].expand(B, -1, -1))
        if i < n_lin - 1:
            h = torch.sin(30.0 * h) if cfg.activation == "sine" else torch.relu(h)
    return h.squeeze(-1)


@torch.no_grad()
def predict(params: dict, x: torch.Tensor, cfg: FitConfig, chunk: int = 1 << 15) -> torch.Tensor:
    """Logits [B, N] at x [B, N, 3], in chunks of points."""
    return torch.cat([forward(params, c, cfg) for c in x.split(chunk, 1)], 1)


def initial_params(cfg: FitConfig, init_seeds, decoder: dict | None = None) -> tuple[dict, list, list]:
    """The tensors :func:`fit_batch` starts from: (params, [planes], [trainable decoder tensors]). Per-shape
    decoders: [B, ...] each. ``cfg.decoder == 'shared'``: [1, ...], ``decoder`` (frozen) when given, else a fresh
    one from seed ``cfg.seed`` (trainable)."""
    params = init_bank(cfg, init_seeds)
    names = list(decoder_shapes(cfg))
    if cfg.decoder == "shared":
        fresh = decoder is None
        start = init_shape(cfg, cfg.seed) if fresh else {k: v[0] for k, v in decoder.items()}
        params.update({k: start[k][None].clone().float() for k in names})
        for k in names:
            params[k].requires_grad_(fresh)
        dec = [params[k] for k in names] if fresh else []
    else:
        dec = [params[k].requires_grad_(True) for k in names]
    return params, [params["planes"].requires_grad_(True)], dec


def fit_batch(points: torch.Tensor, occupancy: torch.Tensor, init_seeds, order_seeds, cfg: FitConfig,
              callback=None, decoder: dict | None = None) -> tuple[dict, dict]:
    """Fit B fields at once. points [B, N, 3], occupancy [B, N] (the BCE target in [0, 1]: 1 inside, or the UDF
    label). Returns (tensors as :func:`init_bank`, detached; a shared decoder's with batch 1; stats {'loss' [B]
    final minibatch BCE, 'seconds', 'steps'}). ``callback(step)`` is called after every step. ``decoder``: a shared
    decoder's tensors ([1, ...]) to keep fixed (``cfg.decoder == 'shared'`` only)."""
    B, N, _ = points.shape
    if decoder is not None and cfg.decoder != "shared":
        raise ValueError("a fixed decoder needs cfg.decoder == 'shared'")
    params, planes, dec = initial_params(cfg, init_seeds, decoder)
    perm = torch.stack([torch.randperm(N, generator=torch.Generator().manual_seed(int(s))) for s in order_seeds])
    groups = [{"params": planes, "lr": cfg.lr}] + ([{"params": dec, "lr": cfg.decoder_lr}] if dec else [])
    try:  # one fused kernel per step over all B shapes' tensors (CPU support since torch 2.4); elementwise either way
        opt = torch.optim.Adam(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t / cfg.steps)))
    P = min(cfg.points_per_step, N)
    ar = torch.arange(P)
    t0 = time.perf_counter()
    loss_b = torch.zeros(B)
    for step in range(cfg.steps):
        idx = perm[:, (step * P + ar) % N]  # [B, P]
        x = points.gather(1, idx[..., None].expand(-1, -1, 3))
        y = occupancy.gather(1, idx)
        loss_b = F.binary_cross_entropy_with_logits(forward(params, x, cfg), y, reduction="none").mean(1)
        opt.zero_grad(set_to_none=True)
        loss_b.sum().backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step)
    stats = {"loss": loss_b.detach(), "seconds": time.perf_counter() - t0, "steps": cfg.steps}
    return {k: v.detach() for k, v in params.items()}, stats


def shape_params(params: dict, i: int) -> dict:
    """Shape i's tensors with a batch dimension of 1 (a shared decoder's as they are)."""
    return {k: v[i: i + 1] if len(v) > 1 else v for k, v in params.items()}


def flat_weights(params: dict, cfg: FitConfig) -> torch.Tensor:
    """The per-shape decoder weights flattened: [B, D] (the weight-space classifier's input)."""
    if cfg.decoder == "shared":
        raise NfkitError("--model mlp: the weight-space MLP reads per-shape decoders; this bank has a shared one"
                         " (fit it with --decoder per-shape)")
    names = list(decoder_shapes(cfg))
    return torch.cat([params[k].flatten(1) for k in names], 1)


@torch.no_grad()
def evaluate_fits(params: dict, meshes, cfg: FitConfig, n_uniform: int = 50_000, mc_resolution: int = 64,
                  chamfer_points: int = 20_000, seed: int = 1) -> list[dict]:
    """IoU (uniform points in [-1, 1]^3) and Chamfer-L1 (marching-cubes surface vs the mesh, normalised units:
    the longest side is 1.8) of each fitted shape against its normalised mesh. Returns [{'iou', 'chamfer'}]."""
    import numpy as np

    from nfkit.apps.triplanes.dataset import release_meshes
    from nfkit.datasets.shapes import chamfer_distance, extract_mesh, inside, iou

    out = []
    for i, mesh in enumerate(meshes):
        p = shape_params(params, i)
        pts = np.random.default_rng(seed + i).uniform(-1, 1, (n_uniform, 3))
        gt = torch.from_numpy(inside(mesh, pts))
        pred = predict(p, torch.from_numpy(pts).float()[None], cfg)[0] > 0
        surf = extract_mesh(lambda q: predict(p, q[None], cfg)[0], mc_resolution, 0.0, inside_positive=True)
        cd = chamfer_distance(surf, mesh, n=chamfer_points) if surf is not None and len(surf.faces) else None
        out.append({"iou": iou(pred, gt), "chamfer": cd})
    release_meshes(meshes)
    return out
