"""The point-cloud encoder: scatter-mean voxelisation -> dense 3D U-Net -> a feature volume split in two halves.

PonderV2 voxelises the cloud, runs a sparse-convolution U-Net (spconv, CUDA) and densifies its point features into
a 128 x 128 x 32 volume, then a 3D CNN; on the CPU we scatter-mean the input features (colour, normal, occupancy)
straight into a small dense grid (default 32 x 32 x 16 over ``ROOM_AABB``) and run one dense U-Net
(:class:`UNet3D`), as the reference's CPU design (apps.md section 3 (d) (i)). The output volume's channels split
in halves: the first feeds the SDF decoder, the second the colour (and semantic) decoders.

Layouts: volumes are ``[B, C, Z, Y, X]`` (torch's ``grid_sample`` order: x indexes the last axis); points
``[B, N, 3]`` in world coordinates; the grid maps ``aabb`` [2, 3] onto ``[-1, 1]^3`` with voxel centres at
``align_corners=False`` positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EncoderConfig:
    grid: tuple = (32, 32, 16)  # voxels along x, y, z
    aabb: tuple = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.0))
    base: int = 16  # channels of the first level; doubled per level
    levels: int = 3
    out_channels: int = 32  # split in two halves (SDF | colour)
    in_features: int = 6  # colour + normal (an occupancy channel is added)


def voxel_index(points: torch.Tensor, aabb: torch.Tensor, grid) -> torch.Tensor:
    """Flat voxel index [B, N] (z-major: ``(z * Y + y) * X + x``) of points [B, N, 3]; outside points are clamped."""
    res = torch.tensor(grid, dtype=points.dtype, device=points.device)
    ijk = ((points - aabb[0]) / (aabb[1] - aabb[0]) * res).floor().long()
    ijk = torch.minimum(ijk.clamp_min(0), (res - 1).long())
    nx, ny, _ = grid
    return (ijk[..., 2] * ny + ijk[..., 1]) * nx + ijk[..., 0]


def scatter_mean(points: torch.Tensor, feats: torch.Tensor, aabb: torch.Tensor, grid, mask=None) -> torch.Tensor:
    """Mean of point features per voxel plus an occupancy channel: points [B, N, 3], feats [B, N, C], optional
    mask [B, N] (False: dropped point) -> volume [B, C + 1, Z, Y, X] (empty voxels 0; last channel 1 where occupied)."""
    b, n, c = feats.shape
    nx, ny, nz = grid
    idx = voxel_index(points, aabb, grid) + torch.arange(b, device=points.device)[:, None] * (nx * ny * nz)
    w = torch.ones(b, n, 1, dtype=feats.dtype, device=feats.device) if mask is None else mask[..., None].to(feats.dtype)
    src = torch.cat([feats * w, w], -1).reshape(b * n, c + 1)
    acc = torch.zeros(b * nx * ny * nz, c + 1, dtype=feats.dtype, device=feats.device)
    acc.index_add_(0, idx.reshape(-1), src)
    cnt = acc[:, c:]
    mean = acc[:, :c] / cnt.clamp_min(1.0)
    vol = torch.cat([mean, (cnt > 0).to(feats.dtype)], -1)
    return vol.reshape(b, nz, ny, nx, c + 1).permute(0, 4, 1, 2, 3).contiguous()


def scatter_mean_reference(points, feats, aabb, grid):
    """:func:`scatter_mean` of one scene by a Python loop over points (for tests): [N, 3], [N, C] -> [C+1, Z, Y, X]."""
    nx, ny, nz = grid
    c = feats.shape[1]
    sums, counts = {}, {}
    lo, hi = aabb[0].tolist(), aabb[1].tolist()
    for p, f in zip(points.tolist(), feats):
        ijk = [min(max(int((p[a] - lo[a]) / (hi[a] - lo[a]) * grid[a] // 1), 0), grid[a] - 1) for a in range(3)]
        key = tuple(ijk)
        sums[key] = sums.get(key, 0) + f
        counts[key] = counts.get(key, 0) + 1
    vol = torch.zeros(c + 1, nz, ny, nx, dtype=feats.dtype)
    for (i, j, k), s in sums.items():
        vol[:c, k, j, i] = s / counts[(i, j, k)]
        vol[c, k, j, i] = 1.0
    return vol


def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Conv3d 3x3x3 -> GroupNorm -> ReLU (GroupNorm: the same in train and eval, batch of 1-4 scenes)."""
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(4, cout), cout), nn.ReLU(inplace=True))


class UNet3D(nn.Module):
    """Dense 3D U-Net: ``levels`` levels of (conv block x2), stride-2 conv down, trilinear up to the skip's exact
    size (so any grid size works, odd included) + concat + conv block. [B, cin, Z, Y, X] -> [B, cout, Z, Y, X]."""

    def __init__(self, cin: int, cout: int, base: int = 16, levels: int = 3):
        super().__init__()
        ch = [base * 2 ** i for i in range(levels)]
        self.stem = nn.Sequential(block(cin, ch[0]), block(ch[0], ch[0]))
        self.down = nn.ModuleList(nn.Sequential(block(ch[i], ch[i + 1], stride=2), block(ch[i + 1], ch[i + 1]))
                                  for i in range(levels - 1))
        self.up = nn.ModuleList(block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(levels - 1)))
        self.head = nn.Conv3d(ch[0], cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        h = skips.pop()
        for u in self.up:
            s = skips.pop()
            h = F.interpolate(h, size=s.shape[2:], mode="trilinear", align_corners=False)
            h = u(torch.cat([h, s], 1))
        return self.head(h)


class PointEncoder(nn.Module):
    """Point cloud -> feature volume [B, out_channels, Z, Y, X] (see the module docstring)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("aabb", torch.tensor(cfg.aabb, dtype=torch.float32), persistent=False)
        self.unet = UNet3D(cfg.in_features + 1, cfg.out_channels, cfg.base, cfg.levels)

    def forward(self, points: torch.Tensor, feats: torch.Tensor, mask=None) -> torch.Tensor:
        """points [B, N, 3], feats [B, N, in_features] (colour, normal), mask [B, N] or None."""
        return self.unet(scatter_mean(points, feats, self.aabb, self.cfg.grid, mask))


def sample_volume(vol: torch.Tensor, x: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """Trilinear features [B, P, C] of volume [B, C, Z, Y, X] at world points x [B, P, 3] (border-clamped)."""
    g = (x - aabb[0]) / (aabb[1] - aabb[0]) * 2.0 - 1.0
    out = F.grid_sample(vol, g[:, :, None, None, :], mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, :, 0, 0].transpose(1, 2)


def random_dropout(n_points: int, batch: int, keep: float, generator=None) -> torch.Tensor:
    """Point-dropout mask [B, N] keeping a random ``keep`` fraction of each scene's points (at least one)."""
    k = max(1, round(n_points * keep))
    order = torch.rand(batch, n_points, generator=generator).argsort(1)
    mask = torch.zeros(batch, n_points, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask
