"""Batch forms of ``nfkit convert`` and ``nfkit export``: a folder of field files in, one output per file, split
by worker and resumable (:mod:`nfkit.worklist`).

    nfkit convert FIELDS/ OUT/ --to mlp            # OUT/<name>.safetensors + OUT/<name>.metrics.json
    nfkit export FIELDS/ --mesh MESHES/ [--points POINTS/]   # MESHES/<name>.ply, POINTS/<name>.ply
    torchrun --nproc_per_node 2 -m nfkit.apps convert FIELDS/ OUT/ --to mlp   # two ranks share the list
    nfkit convert FIELDS/ OUT/ --to mlp --rank 1 --world-size 2               # the same, started by hand

Each output is written atomically and the item's record after it, so a rerun after a crash does only the missing
items; ``manifest.json`` in the output folder (the ``--mesh`` folder for export, else ``--points``) lists them all.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nfkit.errors import NfkitError


def add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rank", type=int, default=-1, help="batch jobs (a folder of fields): this worker "
                   "(default: torchrun's rank, $RANK or 0)")
    p.add_argument("--world-size", type=int, default=-1, help="batch jobs: number of workers (default: torchrun's, "
                   "$WORLD_SIZE or 1)")


def refuse_single_file_ranks(command: str) -> None:
    """Under torchrun, convert and export split a folder of fields by rank; one file cannot be split."""
    from nfkit import distributed

    if distributed.current() is not None:
        raise NfkitError(f"nfkit {command} runs as several ranks only on a folder of field files (one output per "
                         "file); run it on a single file in one process")


def convert_batch(ns: argparse.Namespace) -> dict:
    """``nfkit convert DIR OUT_DIR --to FAMILY``: every field file of DIR distilled into OUT_DIR."""
    from nfkit.apps.convert import read_config
    from nfkit.distill import DistillConfig, convert_file
    from nfkit.worklist import WorkItem, field_files, run_worklist, worker

    if ns.metrics:
        raise NfkitError("--metrics: not used when IN is a folder (each field's metrics go to OUT/<name>.metrics.json)")
    out = Path(ns.dst)
    if out.resolve() == Path(ns.src).resolve():
        raise NfkitError(f"OUT {out}: is the input folder; write the converted fields to another folder")
    cfg = DistillConfig(steps=ns.steps, max_seconds=ns.max_seconds, samples_per_step=ns.samples_per_step, lr=ns.lr,
                        seed=ns.seed)
    user_config = read_config(ns.config)
    items = [WorkItem(f.stem, str(f), (str(out / f.name), str(out / f"{f.stem}.metrics.json")))
             for f in field_files(ns.src)]

    def do(item):
        m = convert_file(item.source, item.outputs[0], ns.family, cfg, user_config, ns.data, ns.eval_views,
                         progress=False, metrics_path=item.outputs[1])
        return {k: m[k] for k in ("mode", "from", "to", "psnr_vs_teacher", "psnr_vs_ground_truth") if k in m}

    rank, world = worker(ns.rank, ns.world_size)
    job = {"command": "convert", "to": ns.family, "steps": ns.steps, "source": str(ns.src)}
    res = run_worklist(items, do, out, job, rank, world, desc=f"convert -> {ns.family}")
    _print_summary(res, len(items), out)
    return res


def export_batch(ns: argparse.Namespace) -> dict:
    """``nfkit export DIR --mesh MESH_DIR [--points POINTS_DIR]``: every field file of DIR exported."""
    from nfkit.apps.export import export_one
    from nfkit.worklist import WorkItem, field_files, run_worklist, worker

    if ns.mesh is None and ns.points is None:
        raise NfkitError("export: give --mesh OUT_DIR and/or --points OUT_DIR")
    dirs = [Path(d) for d in (ns.mesh, ns.points) if d is not None]
    items = []
    for f in field_files(ns.field):
        outs = tuple(str(d / f"{f.stem}.ply") for d in dirs)
        items.append(WorkItem(f.stem, str(f), outs))

    def do(item):
        mesh = item.outputs[0] if ns.mesh is not None else None
        points = item.outputs[-1] if ns.points is not None else None
        return export_one(ns, item.source, mesh, points, quiet=True)

    rank, world = worker(ns.rank, ns.world_size)
    job = {"command": "export", "mesh": ns.mesh, "points": ns.points, "resolution": ns.resolution,
           "source": str(ns.field)}
    res = run_worklist(items, do, dirs[0], job, rank, world, desc="export")
    _print_summary(res, len(items), dirs[0])
    return res


def _print_summary(res: dict, total: int, out: Path) -> None:
    m = res.get("manifest")
    state = "" if m is None else (" complete" if m["complete"] else f" ({len(m['missing'])} still to do)")
    print(f"{len(res['done'])} done, {len(res['skipped'])} already complete, of {total} items -> "
          f"{out / 'manifest.json'}{state}")
