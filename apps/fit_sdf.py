"""``nfkit fit-sdf MESH --out DIR --field X``: fit a 3-D shape field (signed distance or occupancy) to a mesh.

Ground truth comes from :mod:`nfkit.datasets.shapes` (surface, near-surface and uniform samples; trimesh distances
and Embree inside tests). The mesh is normalised into [-0.9, 0.9] (longest side) inside the field's AABB [-1, 1]^3.
Writes ``DIR/metrics.json`` (iou on uniform points, chamfer between the marching-cubes mesh and the ground truth, in
normalised units where the shape's longest side is 1.8; steps, train_seconds, n_params, field, ...),
``DIR/field.safetensors`` (signal ``sdf`` or ``occupancy``; its ``normalization`` maps the mesh's coordinates to the
field's) and ``DIR/mesh.ply`` (the extracted surface, in the input mesh's coordinates).

Losses: ``--target sdf``: GNF's relative squared error (pred - gt)^2 / (|gt| + 0.1); ``--target occupancy``: BCE
with logits (surface points target 0.5).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path

import torch

from nfkit.atomic import write_json_atomic
from nfkit.apps.cli_config import add_dataclass_args, dataclass_from_args
from nfkit.apps.fit_image import FAMILIES, coord_family
from nfkit.errors import NfkitError
from nfkit.objectives import fit_points

@dataclass
class SDFFitConfig:
    """Options of ``nfkit fit-sdf`` (every field is a CLI flag)."""

    mesh: str = ""
    out: str = "outputs/fit_sdf"
    field: str = "rbf"
    target: str = "sdf"  # sdf | occupancy
    steps: int = 2000
    max_seconds: float = 0.0  # 0: no time limit
    lr: float = 5e-3  # GNF's SDF rate; families scale it per parameter group
    batch: int = 1 << 14  # points per step
    samples: int = 300_000  # ground truth: 1/6 on the surface, 1/3 + 1/6 near it (sigma 0.01, 0.04), 1/3 uniform
    mc_resolution: int = 128  # marching-cubes lattice over [-1, 1]^3
    eval_points: int = 200_000  # uniform points for IoU
    seed: int = 0
    field_options: dict = dc_field(default_factory=dict)


HELP = {
    "mesh": "watertight triangle mesh (OFF, PLY, OBJ, STL, ...)",
    "out": "output folder (metrics.json, field.safetensors, mesh.ply)",
    "field": f"field family ({', '.join(FAMILIES)}; hashgrid means the hashgrid-coord family)",
    "target": "sdf (signed distance) or occupancy",
    "max_seconds": "stop after this many seconds of training (0: no limit)",
    "field_options": "field config overrides, e.g. n_units=32",
}


def sample_counts(total: int) -> dict:
    """Keyword arguments of :func:`~nfkit.datasets.shapes.sample_sdf` splitting ``total`` samples as documented."""
    if total < 6:
        raise NfkitError(f"--samples must be at least 6, got {total}")
    k = total // 6
    return {"n_surface": k, "n_near": (2 * k, k), "sigmas": (0.01, 0.04), "n_uniform": total - 4 * k}


def shape_loss(target: str):
    """loss(field, points [B, 3], (sdf [B], occupancy [B])) -> scalar."""
    import torch.nn.functional as F

    if target == "sdf":
        def loss(f, x, y):
            gt = y[0]
            return torch.mean((f.density(x) - gt) ** 2 / (gt.abs() + 0.1))
    elif target == "occupancy":
        def loss(f, x, y):
            return F.binary_cross_entropy_with_logits(f.density(x), y[1])
    else:
        raise NfkitError(f"--target: expected sdf or occupancy, got {target!r}")
    return loss


def fit_shape(cfg: SDFFitConfig, samples, progress: bool = False, callback=None):
    """Fit a fresh shape field to :class:`~nfkit.datasets.shapes.ShapeSamples`. Returns (field, stats)."""
    from nfkit import fields
    from nfkit.datasets.shapes import AABB

    loss = shape_loss(cfg.target)
    if cfg.steps <= 0:
        raise NfkitError(f"--steps must be positive, got {cfg.steps}")
    torch.manual_seed(cfg.seed)
    field = fields.build_field(coord_family(cfg.field), {**cfg.field_options, "signal": cfg.target}, AABB)
    n = len(samples)

    def batch(step):
        i = torch.randint(0, n, (min(cfg.batch, n),))
        return samples.points[i], (samples.sdf[i], samples.occupancy[i])

    stats = fit_points(field, batch, loss, cfg.steps, cfg.max_seconds, cfg.lr, callback, progress=progress,
                       desc=f"fit-sdf {cfg.field}")
    return field, stats


@torch.no_grad()
def evaluate_shape(field, mesh, eval_set, mc_resolution: int = 128) -> dict:
    """IoU on the uniform evaluation set (points, inside) and Chamfer distance of the marching-cubes surface.
    Returns {'iou', 'chamfer' (None when the field has no surface), 'mesh' (trimesh or None)}."""
    from nfkit.datasets.shapes import chamfer_distance, extract_mesh, iou

    field.eval()
    occ = field.kind == "occupancy"
    pts, gt = eval_set
    vals = torch.cat([field.density(c) for c in pts.split(1 << 16)])
    pred_in = vals > 0 if occ else vals < 0
    surf = extract_mesh(field.density, mc_resolution, 0.0, inside_positive=occ)
    cd = chamfer_distance(surf, mesh) if surf is not None and len(surf.faces) else None
    return {"iou": iou(pred_in, gt), "chamfer": cd, "mesh": surf}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit fit-sdf", description=__doc__.splitlines()[0])
    add_dataclass_args(parser, SDFFitConfig, positional=("mesh",), help_text=HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(ns: argparse.Namespace) -> dict:
    from nfkit import fields
    from nfkit.datasets.shapes import load_mesh, sample_sdf, uniform_occupancy

    cfg = dataclass_from_args(SDFFitConfig, ns)
    coord_family(cfg.field)
    shape_loss(cfg.target)
    mesh, transform, scale = load_mesh(cfg.mesh)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    samples = sample_sdf(mesh, **sample_counts(cfg.samples), seed=cfg.seed)
    eval_set = uniform_occupancy(mesh, cfg.eval_points, seed=cfg.seed + 1)
    sample_seconds = time.perf_counter() - t0
    if not ns.quiet:
        print(f"  ground truth: {len(samples)} samples in {sample_seconds:.1f}s", file=sys.stderr)
    field, stats = fit_shape(cfg, samples, progress=not ns.quiet)
    ev = evaluate_shape(field, mesh, eval_set, cfg.mc_resolution)
    norm = {"transform": transform.tolist(), "scale": float(scale)}
    field_path = fields.save(field, out / "field.safetensors", normalization=norm,
                             info={"source": cfg.mesh, "steps": stats["steps"],
                                   "train_seconds": stats["train_seconds"]})
    if ev["mesh"] is not None:
        surf = ev["mesh"].copy()
        surf.apply_transform(torch.linalg.inv(transform).numpy())  # back to the input mesh's coordinates
        surf.export(str(out / "mesh.ply"))
    metrics = {
        "iou": ev["iou"], "chamfer": ev["chamfer"], "steps": stats["steps"],
        "train_seconds": round(stats["train_seconds"], 2), "sample_seconds": round(sample_seconds, 2),
        "n_params": sum(p.numel() for p in field.parameters()), "field": str(field_path), "family": cfg.field,
        "signal": cfg.target, "mesh_faces": int(len(mesh.faces)), "config": asdict(cfg),
        "field_config": field.config_dict(),
    }
    write_json_atomic(out / "metrics.json", metrics)
    summary = {k: metrics[k] for k in ("iou", "chamfer", "steps", "train_seconds", "n_params")}
    print(f"nfkit fit-sdf: {json.dumps(summary)}  -> {out}/metrics.json")
    return metrics


def main(argv=None) -> int:
    from nfkit.apps.cli import guarded

    return guarded(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
