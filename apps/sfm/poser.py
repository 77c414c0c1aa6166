"""nfkit sfm as the capture path's poser: ``nfkit fit VIDEO --poses neural``.

:func:`nfkit.datasets.capture.prepare_capture` takes a ``poser`` with :func:`nfkit.datasets.colmap.run_colmap`'s
signature and return type (:class:`~nfkit.datasets.colmap.PoseResult`); the library never imports the apps, so
``nfkit fit`` (``apps/fit_scene.py``) passes :func:`neural_poser` in.  The frames the capture path wrote are
matched exhaustively (pycolmap SIFT + verification, as ``nfkit sfm``), posed by :func:`.pipeline.run_sfm`, and
the model goes to ``WORK/sparse/0`` (what ``transforms.json`` is made from), with ``WORK/sfm_report.json`` and the
SDF (``WORK/sdf.safetensors``) beside it.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nfkit.atomic import write_json_atomic
from nfkit.datasets.colmap import PoseResult
from nfkit.errors import NfkitError

from .config import SfmConfig


def _pinhole(camera_params) -> list[float] | None:
    """OPENCV (fx, fy, cx, cy, k1, k2, p1, p2) -> [fx, fy, cx, cy]; nfkit sfm models no distortion."""
    if camera_params is None:
        return None
    cp = [float(v) for v in camera_params]
    if any(abs(v) > 1e-12 for v in cp[4:]):
        raise NfkitError("--poses neural: nfkit sfm uses a pinhole camera; the given intrinsics have lens "
                         "distortion (use --poses colmap)")
    return cp[:4]


def neural_poser(image_dir, work_dir, *, matcher: str = "exhaustive", min_fraction: float = 0.8,
                 camera_params=None, verbose: bool = False, cfg: SfmConfig | None = None) -> PoseResult:
    """Poses the images of ``image_dir`` with nfkit sfm -> :class:`PoseResult` (``reconstruction`` None when no
    two views initialise).  matcher: "sequential" (videos: the capture path's matching, 4096 features, no guided
    matching -- exhaustive guided matching of 40 frames takes over an hour on 2 busy cores) or "exhaustive"
    (image folders: ``cfg``'s matching, as ``nfkit sfm``).  min_fraction: accepted for run_colmap's signature
    (nfkit sfm keeps whatever registers)."""
    from .matches import estimate_intrinsics, extract_and_match
    from .outputs import to_reconstruction, write_model
    from .pipeline import run_sfm

    cfg = cfg or SfmConfig()
    if matcher == "sequential":
        cfg = replace(cfg, max_features=min(cfg.max_features, 4096), guided_matching=False)
    t0 = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    intr = _pinhole(camera_params)
    matches = extract_and_match(image_dir, work_dir, intr, cfg.max_features, cfg.sift_peak_threshold,
                                cfg.guided_matching, matcher="sequential" if matcher == "sequential" else "exhaustive")
    n = matches.n_images
    if not matches.pairs:
        return PoseResult(None, n, 0, float("nan"), 0, f"{matcher} (nfkit sfm)", [], time.perf_counter() - t0)
    source = "given"
    if intr is None:
        source = estimate_intrinsics(matches, work_dir, cfg.estimate_principal_point)
    try:
        result = run_sfm(matches, cfg, show_progress=verbose)
    except NfkitError as e:  # no initial pair: the caller reports "could not be posed" with advice
        write_json_atomic(work_dir / "sfm_report.json", {"error": str(e)})
        return PoseResult(None, n, 0, float("nan"), 0, f"{matcher} (nfkit sfm)", [], time.perf_counter() - t0)
    rec = to_reconstruction(result.state, matches)
    write_model(rec, work_dir)
    report = {**result.report, "intrinsics": source}
    write_json_atomic(work_dir / "sfm_report.json", report)
    if result.field is not None:
        from nfkit.fields.io import save

        save(result.field, work_dir / "sdf.safetensors", info={"origin": "nfkit sfm (world of sparse/0)"})
    err = float(report["mean_reprojection_error_px"])
    attempt = {"matcher": matcher, "camera_model": "PINHOLE", "poser": "nfkit sfm",
               "registered": report["registered"], "mean_reprojection_error_px": None if np.isnan(err) else
               round(err, 4), "seconds": round(time.perf_counter() - t0, 2)}
    return PoseResult(rec, n, rec.num_reg_images(), err, rec.num_points3D(), f"{matcher} (nfkit sfm)", [attempt],
                      time.perf_counter() - t0, "PINHOLE")
