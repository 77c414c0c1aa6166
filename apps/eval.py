"""``nfkit eval FIELD --data DATA [--split test] [--out FILE]``: per-view and mean PSNR / SSIM of a field file
on a dataset's views, as JSON (printed, and written to ``--out``). LPIPS only when the ``lpips`` package and its
AlexNet weights are available locally (never downloaded); otherwise ``"lpips": null`` with an ``"lpips_note"``.

Renders exactly as ``nfkit fit``'s evaluation (:func:`nfkit.evaluation.evaluate`: the field file's occupancy grid,
white background for RGBA data, the field's own background model), at the image size the fit used: ``--max-side``
defaults to the fit's (``config.max_side`` of the ``metrics.json`` beside FIELD, when present; else full size),
and the render step to the fit's ``n_steps_per_ray`` likewise (else 256 steps across the AABB's diagonal).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nfkit.errors import NfkitError


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("field", help="field file (.safetensors)")
    p.add_argument("--data", required=True, help="dataset (a Blender folder or a transforms.json)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="views to evaluate")
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    p.add_argument("--max-views", type=int, default=0, help="evaluate the first N views only (0: all)")
    p.add_argument("--max-side", type=int, default=None,
                   help="downscale images so the larger side is at most this (0: full size; default: as the fit)")
    p.add_argument("--renders", default=None, help="folder for ground truth | render images of each view")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def fit_settings(field_path: Path) -> dict:
    """The ``config`` of the ``metrics.json`` that ``nfkit fit`` wrote beside the field file ({} when absent or
    not readable as such)."""
    m = field_path.parent / "metrics.json"
    try:
        cfg = json.loads(m.read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def check_out(out: str | None, field: str) -> None:
    if out is None:
        return
    p = Path(out)
    if p.is_dir():
        raise NfkitError(f"--out {p}: is a folder; expected a JSON file name")
    if p.exists() and p.resolve() == Path(field).resolve():
        raise NfkitError(f"--out {p}: is the field file being evaluated; choose another name")
    if p.suffix.lower() != ".json":
        raise NfkitError(f"--out {p}: expected a file name ending in .json")


def run(ns: argparse.Namespace) -> dict:
    from nfkit.atomic import write_json_atomic
    from nfkit.datasets import load_dataset
    from nfkit.evaluation import evaluate
    from nfkit.renderers import load_renderable
    from nfkit.renderers.render import default_step_size

    check_out(ns.out, ns.field)
    field, grid, opts, meta = load_renderable(ns.field)
    fit = fit_settings(Path(ns.field))
    max_side = ns.max_side if ns.max_side is not None else int(fit.get("max_side") or 0)
    if isinstance(fit.get("n_steps_per_ray"), int) and fit["n_steps_per_ray"] > 0:
        opts.step_size = default_step_size(field.aabb.cpu(), fit["n_steps_per_ray"])
    data = load_dataset(ns.data, ns.split, max_side=max_side or None)
    res = evaluate(field, grid, data, opts, Path(ns.renders) if ns.renders else None, ns.max_views,
                   progress=not ns.quiet, lpips=True)
    if res.get("n_views", 0) == 0:
        raise NfkitError(f"--data {ns.data}: no {ns.split} views to evaluate")
    report = {"field": str(ns.field), "data": str(ns.data), "split": ns.split, "max_side": max_side,
              "n_views": res["n_views"], "psnr": res["psnr"], "ssim": res["ssim"], "lpips": res["lpips"]}
    if "lpips_note" in res:
        report["lpips_note"] = res["lpips_note"]
    report["per_view"] = [{k: _finite(v) for k, v in row.items()} for row in res["per_view"]]
    report = {k: _finite(v) for k, v in report.items()}
    if ns.out:
        write_json_atomic(ns.out, report)
    print(json.dumps(report if ns.out is None else {k: v for k, v in report.items() if k != "per_view"}))
    if ns.out:
        print(f"nfkit eval: per-view metrics -> {ns.out}", file=sys.stderr)
    return report


def _finite(v):
    """JSON has no Infinity: a perfect view's PSNR (inf) is written as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
