"""``nfkit export FIELD --mesh out.{ply,obj,glb} [--resolution R] [--points out.ply]``: a field file to a mesh
and/or a coloured point cloud, in the input (un-normalised) coordinates. See :mod:`nfkit.export`. A folder of
field files is a resumable batch job split by worker (:mod:`nfkit.apps.batch`).

Mesh: marching cubes at ``--resolution`` over the field's AABB; density fields at the density where one render
step has opacity ``--opacity`` (0.5), SDF fields at 0 (a field whose density depends on the view: the mean
density seen from 8 of the cameras below); vertex colours from the field; largest component only
unless ``--all-components``. Points: pixels of rendered opacity > 0.5 from ``--views`` views (the training cameras
of ``--data`` when given, else virtual cameras in the training cameras' range stored in the field file, else
around the bounds), statistical outlier removal.
"""
from __future__ import annotations

import argparse

from nfkit.errors import NfkitError


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from nfkit.apps.batch import add_worker_args

    p.add_argument("field", help="field file (.safetensors), or a folder of them (a batch job: --mesh and --points "
                   "then name folders; see nfkit.apps.batch)")
    p.add_argument("--mesh", default=None, help="mesh to write (.ply, .obj or .glb)")
    p.add_argument("--resolution", type=int, default=256, help="marching-cubes lattice points per axis")
    p.add_argument("--opacity", type=float, default=0.5, help="density fields: opacity of one render step at the "
                   "surface (sets the density level)")
    p.add_argument("--all-components", action="store_true", help="keep every connected component of the mesh")
    p.add_argument("--points", default=None, help="point cloud to write (.ply)")
    p.add_argument("--data", default=None, help="dataset whose training cameras render the points")
    p.add_argument("--views", type=int, default=64, help="views rendered for --points")
    p.add_argument("--view-size", type=int, default=200, help="virtual views: pixels per side")
    p.add_argument("--max-points", type=int, default=500_000)
    p.add_argument("--no-outlier-filter", action="store_true")
    add_worker_args(p)
    return p


def run(ns: argparse.Namespace) -> dict:
    from pathlib import Path

    from nfkit import export

    if Path(ns.field).is_dir():
        from nfkit.apps.batch import export_batch

        return export_batch(ns)
    from nfkit.apps.batch import refuse_single_file_ranks

    refuse_single_file_ranks("export")
    if ns.mesh is None and ns.points is None:
        raise NfkitError("export: give --mesh OUT and/or --points OUT")
    for flag, path, ok in (("--mesh", ns.mesh, export.MESH_SUFFIXES), ("--points", ns.points, (".ply",))):
        if path is not None and not str(path).lower().endswith(ok):
            raise NfkitError(f"{flag} {path}: expected a file name ending in {', '.join(ok)}")
    return export_one(ns, ns.field, ns.mesh, ns.points)


def export_one(ns: argparse.Namespace, field_path, mesh_path, points_path, quiet: bool = False) -> dict:
    """Export one field file (options from ``ns``) to ``mesh_path`` and/or ``points_path``; returns the counts."""
    import torch

    from nfkit import export
    from nfkit.renderers.camera_range import field_prior, virtual_cameras
    from nfkit.renderers import load_renderable

    say = (lambda *a: None) if quiet else print
    field, grid, opts, meta = load_renderable(field_path)
    norm = meta.get("normalization")
    out = {}

    def cameras():  # the training cameras of --data, else virtual ones in the stored range
        if ns.data is not None:
            from nfkit.datasets import load_dataset

            cams = load_dataset(ns.data, "train").cameras
            if len(cams) > ns.views:
                cams = cams[torch.linspace(0, len(cams) - 1, ns.views).round().long()]
            return cams, "data"
        prior, source = field_prior(field.aabb, meta, str(field_path))
        return virtual_cameras(prior, ns.views, ns.view_size, torch.Generator().manual_seed(0)), source

    if mesh_path is not None:
        from nfkit.renderers.view_density import view_dependent

        centres = cameras()[0].c2w[:, :3, 3] if view_dependent(field) else None
        m = export.extract_mesh(field, ns.resolution, ns.opacity, opts.step_size, centres=centres)
        out["mesh"] = export.write_mesh(m, mesh_path, norm, keep_largest=not ns.all_components)
        say(f"mesh: {out['mesh']['vertices']:,} vertices, {out['mesh']['faces']:,} faces -> {mesh_path}")
    if points_path is not None:
        cams, out["views_from"] = cameras()
        pts = export.extract_points(field, grid, opts, cams, ns.max_points)
        out["points"] = export.write_points(pts, points_path, norm, filter_outliers=not ns.no_outlier_filter)
        say(f"points: {out['points']['points']:,} from {len(cams)} views ({out['views_from']}) -> {points_path}")
    return out
