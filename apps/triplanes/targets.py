"""Fitting targets of shape files: occupancy of watertight meshes, or a UDF label from point clouds.

* ``occupancy`` (meshes): :func:`~nfkit.apps.triplanes.dataset.shape_targets` (inside tests by ray casting).
* ``udf`` (point clouds, or meshes through ``cloud_points`` surface samples): the cloud [M, 3] (normalised like a
  mesh: bounding box centred, longest side 1.8) is the surface; samples are ``near_fraction`` cloud points +
  N(0, sigma^2) per axis (sigma 0.01 and 0.04, half each) and uniform points in [-1, 1]^3; the unsigned distance
  d to the nearest cloud point (``scipy.spatial.cKDTree``) becomes the BCE label ``1 - min(d, clip) / clip``
  (upstream's pycarus ``compute_udf_from_pcd(convert_to_bce_labels=True)``, as inr2vec describes it: 1 on the
  points, 0 beyond ``clip``). A mesh needs no inside here, so it need not be watertight.
* ``auto`` (:func:`resolve_target`): ``udf`` when any file of the bank is a point cloud, else ``occupancy`` (one
  bank holds one kind of field; a classifier remembers which, and ``classify`` fits new shapes the same way).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from nfkit.apps.triplanes.bank import FitConfig
from nfkit.apps.triplanes.dataset import ShapeTargets, shape_targets
from nfkit.errors import DatasetError


def resolve_target(cfg: FitConfig, files) -> FitConfig:
    """``cfg`` with ``target`` 'auto' replaced by 'udf' (a point cloud among ``files``) or 'occupancy'. Reads only
    PLY headers."""
    from nfkit.datasets.shape_files import file_kind

    if cfg.target != "auto":
        return cfg
    kinds = {file_kind(f) for f in files}
    return replace(cfg, target="udf" if "points" in kinds else "occupancy")


def udf_targets(cloud: np.ndarray, n: int, sigmas=(0.01, 0.04), near_fraction: float = 0.6, n_surface: int = 1024,
                clip: float = 0.1, seed: int = 0) -> ShapeTargets:
    """UDF samples of a normalised point cloud [M, 3]: points [n, 3] float32, label [n] float32
    (``1 - min(udf, clip) / clip``), surface [n_surface, 3] float32 (cloud points, with repeats when M is smaller)."""
    from nfkit.datasets.shape_files import unsigned_distance

    rng = np.random.default_rng(seed)
    n_near = int(round(n * near_fraction))
    per = [n_near // len(sigmas)] * len(sigmas)
    per[0] += n_near - sum(per)
    base = cloud[rng.integers(0, len(cloud), n_near)]
    near = np.concatenate([base[sum(per[:i]): sum(per[: i + 1])] + rng.normal(0, s, (k, 3))
                           for i, (k, s) in enumerate(zip(per, sigmas))])
    pts = np.clip(np.concatenate([near, rng.uniform(-1, 1, (n - n_near, 3))]), -1, 1)
    label = 1.0 - np.minimum(unsigned_distance(cloud, pts), clip) / clip
    surf = cloud[rng.choice(len(cloud), n_surface, replace=len(cloud) < n_surface)]
    return ShapeTargets(pts.astype(np.float32), label.astype(np.float32), surf.astype(np.float32))


def shape_cloud(path, cfg: FitConfig, seed: int) -> np.ndarray:
    """The normalised point cloud [cloud_points, 3] of a shape file: a cloud's random subset (all its points when
    it has fewer) or a mesh's surface samples."""
    from nfkit.datasets.shape_files import normalise_points, read_shape, surface_points

    shape = read_shape(path)
    if shape.kind == "mesh":
        pts = surface_points(shape.mesh, cfg.cloud_points, seed=seed)
    else:
        pts = shape.points
        if len(pts) > cfg.cloud_points:
            pts = pts[np.random.default_rng(seed).choice(len(pts), cfg.cloud_points, replace=False)]
    return normalise_points(pts)[0]


def occupancy_mesh(path):
    """A watertight, normalised mesh for occupancy targets; a point cloud is a one-line error."""
    from nfkit.datasets.shape_files import file_kind
    from nfkit.datasets.shapes import load_mesh

    if file_kind(path) == "points":
        raise DatasetError(f"{path}: a point cloud, but these fields are occupancy of watertight meshes"
                           " (fit point clouds with --target udf or auto)")
    return load_mesh(path)[0]


def file_targets(files, cfg: FitConfig, seeds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets of several shape files (``cfg.target`` resolved): (points [B, N, 3], label [B, N], surface [B, M, 3]).
    ``seeds[b]``: file b's sampling seed."""
    from nfkit.apps.triplanes.dataset import release_meshes

    if cfg.target not in ("occupancy", "udf"):
        raise ValueError(f"unresolved target {cfg.target!r}")
    out, meshes = [], []
    for f, seed in zip(files, seeds):
        if cfg.target == "udf":
            out.append(udf_targets(shape_cloud(f, cfg, seed), cfg.samples, near_fraction=cfg.near_fraction,
                                   n_surface=cfg.surface_points, clip=cfg.udf_clip, seed=seed))
        else:
            meshes.append(occupancy_mesh(f))
            out.append(shape_targets(meshes[-1], cfg.samples, near_fraction=cfg.near_fraction,
                                     n_surface=cfg.surface_points, seed=seed))
    release_meshes(meshes)  # once a batch: it runs the garbage collector
    return tuple(torch.from_numpy(np.stack([getattr(t, k) for t in out])) for k in ("points", "occupancy", "surface"))
