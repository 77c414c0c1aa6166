"""``nfkit convert IN OUT --to FAMILY``: distil a radiance field file into another family (PVD), and
``nfkit info FIELD``: what a field file holds.

    nfkit convert IN OUT --to FAMILY [--data DATA] [--steps N] [--max-seconds S] [--config student.json]
                         [--metrics PATH]

Writes OUT (a field file with the teacher's occupancy grid, so ``nfkit view`` / ``render`` work) and
``metrics.json`` beside it (or ``--metrics``): PSNR of the student against the teacher's renders, against ground
truth with ``--data`` (test split), seconds per stage. Converting to the teacher's own family without ``--config``
is an exact copy of the file. See :mod:`nfkit.distill`. IN may be a folder of field files: a resumable batch job
split by worker (:mod:`nfkit.apps.batch`).

Never writes over its input: OUT and ``--metrics`` must differ from IN and from each other, and a metrics file
that another command wrote (e.g. ``nfkit fit``'s ``metrics.json`` when OUT goes into a fit's folder) is not
overwritten: only an earlier ``convert``'s own metrics are (pass ``--metrics`` to write elsewhere).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nfkit.errors import FieldFileError, NfkitError


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from nfkit.distill import RADIANCE_FAMILIES, DistillConfig

    from nfkit.apps.batch import add_worker_args

    d = DistillConfig()
    p.add_argument("src", metavar="IN", help="teacher field file (.safetensors, from nfkit fit or convert), or a "
                   "folder of them (a batch job; see nfkit.apps.batch)")
    p.add_argument("dst", metavar="OUT", help="student field file to write (a folder when IN is a folder)")
    p.add_argument("--to", required=True, dest="family", help=f"student family: {', '.join(RADIANCE_FAMILIES)}")
    p.add_argument("--data", default=None, help="dataset: virtual cameras follow its training cameras; "
                   "ground-truth PSNR on its test split")
    p.add_argument("--steps", type=int, default=d.steps, help=f"distillation steps (default: {d.steps})")
    p.add_argument("--max-seconds", type=float, default=0.0, help="time limit in seconds (0: none)")
    p.add_argument("--config", default=None, help="JSON file with the student's field config (overrides)")
    p.add_argument("--metrics", default=None, help="metrics file (default: metrics.json beside OUT)")
    p.add_argument("--samples-per-step", type=int, default=d.samples_per_step,
                   help=f"student samples a step (default: {d.samples_per_step})")
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate (default: 5e-3 for mlp / cam students, 4e-2 rbf, 2e-2 the other grids)")
    p.add_argument("--eval-views", type=int, default=8, help="views compared with the teacher's renders")
    p.add_argument("--seed", type=int, default=0)
    add_worker_args(p)
    return p


def read_config(path) -> dict | None:
    if path is None:
        return None
    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError:
        raise NfkitError(f"--config {p}: no such file") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NfkitError(f"--config {p}: not a JSON file ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(cfg, dict):
        raise NfkitError(f"--config {p}: expected a JSON object of field options, got {type(cfg).__name__}")
    return cfg


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def is_convert_metrics(path: Path) -> bool:
    """Whether ``path`` holds metrics that ``nfkit convert`` wrote (a JSON object with its 'mode' and 'to')."""
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("mode") in ("copy", "distill") and "to" in m


def check_outputs(src, dst, metrics) -> Path:
    """The metrics path to write; NfkitError when OUT or the metrics would overwrite the input, each other, or
    another command's metrics file."""
    src, dst, flag = Path(src), Path(dst), "--metrics" if metrics else "metrics"
    metrics = Path(metrics) if metrics else dst.parent / "metrics.json"
    if _same(dst, src):
        raise NfkitError(f"OUT {dst}: is the input field file; write the student to another file")
    if _same(metrics, src):
        raise NfkitError(f"{flag} {metrics}: is the input field file; choose another metrics file")
    if _same(metrics, dst):
        raise NfkitError(f"{flag} {metrics}: is OUT; choose another metrics file")
    if metrics.exists() and not is_convert_metrics(metrics):
        raise NfkitError(f"{flag} {metrics}: exists and was not written by nfkit convert (e.g. a fit's metrics); "
                         "write OUT to another folder or pass --metrics FILE")
    return metrics


def run(ns: argparse.Namespace) -> dict:
    from nfkit.distill import DistillConfig, convert_file

    if ns.steps < 1:
        raise NfkitError(f"--steps must be at least 1, got {ns.steps}")
    if ns.max_seconds < 0:
        raise NfkitError(f"--max-seconds must be >= 0, got {ns.max_seconds}")
    if ns.samples_per_step < 1:
        raise NfkitError(f"--samples-per-step must be at least 1, got {ns.samples_per_step}")
    if Path(ns.src).is_dir():
        from nfkit.apps.batch import convert_batch

        return convert_batch(ns)
    from nfkit.apps.batch import refuse_single_file_ranks

    refuse_single_file_ranks("convert")
    metrics = check_outputs(ns.src, ns.dst, ns.metrics)
    cfg = DistillConfig(steps=ns.steps, max_seconds=ns.max_seconds, samples_per_step=ns.samples_per_step, lr=ns.lr,
                        seed=ns.seed)
    m = convert_file(ns.src, ns.dst, ns.family, cfg, read_config(ns.config), ns.data, ns.eval_views,
                     metrics_path=metrics)
    keys = ("mode", "from", "to", "steps", "train_seconds", "psnr_vs_teacher", "psnr_vs_ground_truth")
    print(" ".join(f"{k}={round(m[k], 2) if isinstance(m[k], float) else m[k]}" for k in keys if k in m))
    return m


def build_info_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("field", help="field file (.safetensors)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return p


def origin(info: dict) -> str | None:
    """Where a field came from, in words, from its file's ``info`` (written by ``nfkit fit`` / ``convert``)."""
    if "converted_from" in info:
        return (f"converted from {info.get('teacher_family', '?')} {info['converted_from']} "
                f"({info.get('distill_steps', '?')} steps, {float(info.get('distill_seconds', 0)):.0f} s)")
    if "source" in info:
        secs = float(info.get("train_seconds", 0))
        return f"fitted on {info['source']} ({info.get('step', '?')} steps, {secs:.0f} s)"
    return None


def camera_range(info: dict, where: str) -> str | None:
    """The stored training-camera range (what ``convert`` and ``export --points`` aim virtual cameras by)."""
    import math

    from nfkit.renderers.camera_range import prior_from_dict

    if "camera_prior" not in info:
        return None
    try:
        c = prior_from_dict(info["camera_prior"], where)
    except FieldFileError:
        return "corrupt (convert and export --points refuse the file unless --data is given)"
    e0, e1 = (math.degrees(e) for e in c.elevation)
    return (f"distance {c.radius[0]:.2f}-{c.radius[1]:.2f}, elevation {e0:.0f} to {e1:.0f} deg, "
            f"fov {c.fov_y_deg:.0f} deg")


def field_info(path) -> dict:
    """family, kind, parameter count, bounds, format version (and normalisation, occupancy grid, origin, stored
    camera range) of a field file."""
    from nfkit import fields

    field, meta, extras = fields.load(path, return_extras=True)
    grid = extras.get("occgrid.binary")
    info = meta.get("info") or {}
    return {"file": str(path), "family": meta["family"], "kind": field.kind,
            "format_version": meta["format_version"], "n_params": sum(p.numel() for p in field.parameters()),
            "aabb": meta["aabb"], "normalization_scale": meta.get("normalization", {}).get("scale"),
            "occupancy_grid": None if grid is None else round(grid.numel() ** (1 / 3)),
            "background": (meta.get("background") or {}).get("kind"), "origin": origin(info),
            "camera_range": camera_range(info, str(path)), "config": meta.get("config", {})}


def run_info(ns: argparse.Namespace) -> dict:
    info = field_info(ns.field)
    if ns.json:
        print(json.dumps(info))
        return info
    for k in ("file", "family", "kind", "format_version", "n_params", "aabb", "normalization_scale",
              "occupancy_grid", "background", "origin", "camera_range"):
        v = f"{info[k]:,}" if k == "n_params" else info[k]
        print(f"{k:>20}: {v}")
    return info
