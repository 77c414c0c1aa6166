"""The four shape classifiers and their input transforms.

* ``transformer`` (reads tri-planes): each of the 3C channel maps is one token (its crop x crop values, after the
  planes are L2-normalised across the 3C channels at every location), a linear embedding, a
  ``TransformerEncoder`` without positional embedding, max-pool over tokens, a linear head. Permuting the channels
  permutes the tokens, which nothing downstream of the embedding can see: the logits are channel-order invariant
  by construction.
* ``cnn`` (reads tri-planes): a small convolutional network over the 3C stacked (normalised) planes; channel order
  matters to it.
* ``mlp`` (reads the per-shape decoder weights, flattened and standardised with the training set's mean/std): the
  weight-space baseline.
* ``pointnet`` (reads surface points [M, 3] of the shape): shared 1x1 convolutions, max-pool, MLP head.

Augmentation as upstream: a random resized crop (same crop for every channel of a shape; area ``crop_min_area``-100 %
(upstream: torchvision's 8 %; 50 % by default here, see ``TrainConfig``), aspect 3/4-4/3) to ``crop`` x ``crop`` in
training and a centre crop at test time. Optionally
(``TrainConfig.rotate_z``, for data posed at random about the up axis z) a random rotation about z: of the raw
planes by a multiple of 90 degrees (:func:`rotate_planes_z`: exact, an index permutation of the plane cells) and of
PointNet's points by any angle.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INPUT_KIND = {"transformer": "planes", "cnn": "planes", "mlp": "weights", "pointnet": "points"}


def plane_input(planes: torch.Tensor) -> torch.Tensor:
    """planes [B, 3, C, R, R] -> [B, 3C, R, R], L2-normalised across the 3C channels at every location."""
    x = planes.flatten(1, 2)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def rotate_planes_z(planes: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Raw planes [B, 3, C, R, R] (xy, xz, yz; ``grid_sample`` order: the last axis is the pair's first coordinate)
    of a field f -> the planes of f rotated by k * 90 degrees about z, f'(x, y, z) = f(y, -x, z) for k = 1 (exact up
    to the decoder's own input p): xy' = the xy plane turned a quarter, xz' = yz mirrored in y, yz' = xz."""
    for _ in range(k % 4):
        xy, xz, yz = planes.unbind(1)
        planes = torch.stack([xy.flip(-2).transpose(-1, -2), yz.flip(-1), xz], 1)
    return planes


def random_rotate_z(planes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each of the B raw plane sets [B, 3, C, R, R] turned by its own random multiple of 90 degrees about z."""
    k = torch.randint(0, 4, (planes.shape[0],), generator=generator)
    out = planes.clone()
    for q in range(1, 4):
        sel = k == q
        if sel.any():
            out[sel] = rotate_planes_z(planes[sel], q)
    return out


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, K, R, R] -> [B, K, size, size] (the centre)."""
    o = (x.shape[-1] - size) // 2
    return x[..., o: o + size, o: o + size]


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, K, R, R] -> [B, K, size, size]: per sample a random box (area fraction in ``scale``, aspect in ``ratio``,
    clipped to the plane) resampled bilinearly to size x size; every channel of a sample gets the same box."""
    B = x.shape[0]
    u = torch.rand(B, 4, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    w = torch.sqrt(area * logr.exp()).clamp(max=1.0)  # half-widths in grid units (1 = the whole plane)
    h = torch.sqrt(area / logr.exp()).clamp(max=1.0)
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
    theta = torch.zeros(B, 2, 3, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, [B, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ChannelTransformer(nn.Module):
    """Channel tokens [B, K, S, S] -> logits [B, classes]; invariant to the order of the K tokens."""

    def __init__(self, n_classes: int, crop: int, d_model: int = 128, layers: int = 2, heads: int = 4,
                 ffn: int = 256, dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Linear(crop * crop, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(2))  # [B, K, d]; no positional embedding
        return self.head(self.encoder(tokens).max(1).values)


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PlaneCNN(nn.Module):
    """Stacked planes [B, K, S, S] -> logits [B, classes] (three stride-2 3x3 convolutions, global average pool)."""

    def __init__(self, n_classes: int, in_channels: int, width: int = 64, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(in_channels, width, 2), conv_bn(width, 2 * width, 2),
                                  conv_bn(2 * width, 2 * width, 2))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


class WeightMLP(nn.Module):
    """Flattened decoder weights [B, D] -> logits [B, classes]; standardised by the stored mean/std [D]."""

    def __init__(self, n_classes: int, in_dim: int, width: int = 512, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(width, width // 2), nn.ReLU(inplace=True), nn.Linear(width // 2, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class PointNet(nn.Module):
    """Points [B, M, 3] -> logits [B, classes] (shared MLP 64-128-256, max-pool, MLP 128)."""

    def __init__(self, n_classes: int, dropout: float = 0.3):
        super().__init__()
        dims = (3, 64, 128, 256)
        self.point_mlp = nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:])
                                         for m in (nn.Conv1d(a, b, 1, bias=False), nn.BatchNorm1d(b), nn.ReLU(True))])
        self.head = nn.Sequential(nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(True), nn.Dropout(dropout),
                                  nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.point_mlp(x.transpose(1, 2)).max(2).values)


def build_model(name: str, n_classes: int, dims: dict, cfg) -> nn.Module:
    """A classifier by name. ``dims``: {'channels': 3C, 'weights': D}; ``cfg``: the
    :class:`~nfkit.apps.triplanes.train.TrainConfig` (crop, d_model, layers, heads, dropout)."""
    if name == "transformer":
        return ChannelTransformer(n_classes, cfg.crop, cfg.d_model, cfg.layers, cfg.heads, 2 * cfg.d_model,
                                  cfg.dropout)
    if name == "cnn":
        return PlaneCNN(n_classes, dims["channels"], dropout=cfg.dropout)
    if name == "mlp":
        return WeightMLP(n_classes, dims["weights"], dropout=cfg.dropout)
    if name == "pointnet":
        return PointNet(n_classes)
    raise ValueError(name)
