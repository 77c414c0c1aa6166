"""``nfkit sfm IMAGES_OR_VIDEO --out DIR``: neural incremental structure from motion on an SDF level set
(Level-S²fM at CPU scale).

    nfkit sfm photos/ --out out/sfm [--intrinsics fx,fy,cx,cy]
    nfkit sfm clip.mp4 --out out/sfm --frames 40
    nfkit sfm photos/ --out out/classic --no-neural-triangulation --no-neural-ba --no-surface-filter

Writes ``DIR/sparse/0`` (COLMAP model), ``DIR/transforms.json`` (``nfkit fit DIR/transforms.json``),
``DIR/report.json``, ``DIR/config.json`` and ``DIR/sdf.safetensors``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nfkit.apps.cli_config import add_dataclass_args, dataclass_from_args
from nfkit.errors import NfkitError

from .config import SfmConfig

HELP = {
    "images": "a folder of images (sorted by name) or a video file",
    "out": "output folder",
    "intrinsics": "known pinhole intrinsics 'fx,fy,cx,cy' (px), kept fixed; default: the focal (and principal "
                  "point) of one pycolmap mapping run on the same matches (its poses are not used), focal refined "
                  "in BA",
    "estimate_principal_point": "without --intrinsics: take the principal point refined by that mapping run (else "
                                "the image centre)",
}


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_dataclass_args(parser, SfmConfig, positional=("images",), help_text=HELP)
    parser.add_argument("--frames", type=int, default=40, help="video input: frames to choose (default: 40)")
    return parser


def _image_folder(src: Path, out: Path, cfg: SfmConfig, n_frames: int) -> Path:
    """A folder of images for the input: the folder itself, or the sharpest frames of a video."""
    from nfkit.datasets.video import is_video_file, select_frames

    if src.is_dir():
        return src
    if src.is_file() and is_video_file(src):
        import imageio.v3 as iio

        sel = select_frames(src, n_frames, cfg.max_side)
        folder = out / "frames"
        folder.mkdir(parents=True, exist_ok=True)
        for k, f in enumerate(sel.frames):
            iio.imwrite(folder / f"frame_{k:05d}.png", f)
        return folder
    raise NfkitError(f"{src}: not a folder of images or a video file")


def sfm(cfg: SfmConfig, n_frames: int = 40, show_progress: bool = True) -> dict:
    """Runs the whole command -> the report."""
    from .matches import extract_and_match, list_images, parse_intrinsics
    from .outputs import write_outputs
    from .pipeline import run_sfm

    if not cfg.images:
        raise NfkitError("nfkit sfm needs IMAGES_OR_VIDEO")
    src, out = Path(cfg.images).expanduser(), Path(cfg.out).expanduser()
    intr = parse_intrinsics(cfg.intrinsics)
    if src.is_dir():
        list_images(src)
    folder = _image_folder(src, out, cfg, n_frames)
    t0 = time.perf_counter()
    matches = extract_and_match(folder, out / "work", intr, cfg.max_features, cfg.sift_peak_threshold,
                                cfg.guided_matching, matcher="exhaustive" if src.is_dir() else "sequential")
    t_match = time.perf_counter() - t0
    if not matches.pairs:
        raise NfkitError(f"{src}: no image pair has verified matches; the images do not overlap")
    source = "given (--intrinsics)"
    if intr is None:
        from .matches import estimate_intrinsics

        source = estimate_intrinsics(matches, out / "work", cfg.estimate_principal_point)
        print(f"nfkit sfm: no --intrinsics: {source}, f = {matches.K[0, 0]:.1f} px, principal point "
              f"({matches.K[0, 2]:.1f}, {matches.K[1, 2]:.1f}); give --intrinsics when they are known",
              file=sys.stderr)
    result = run_sfm(matches, cfg, show_progress=show_progress)
    result.report["intrinsics"] = source
    result.report["seconds_per_stage"] = {"matching": round(t_match, 2), **result.report["seconds_per_stage"]}
    return write_outputs(result, matches, cfg, out)


def run(ns) -> None:
    cfg = dataclass_from_args(SfmConfig, ns)
    rep = sfm(cfg, ns.frames)
    print(f"registered {rep['registered']}/{rep['total']} views, {rep['n_points']} points, mean reprojection "
          f"error {rep['mean_reprojection_error_px']:.3f} px -> {cfg.out}", file=sys.stderr)
    for s in rep["skipped"]:
        print(f"  skipped {s['image']}: {s['reason']}", file=sys.stderr)
