"""Benchmark: camera poses recovered by ``prepare_capture`` (pycolmap) against a calibrated ring of cameras.

    python bench/poses.py [--data ../shared/data/temple_ring] [--out outputs/bench_poses] [--known-intrinsics]

Data: Middlebury templeSparseRing (16 real 640x480 images; ``templeSR_par.txt`` gives K, R, t per image with
``x ~ K (R X + t)``, OpenCV axes).  The images folder goes through ``prepare_capture`` as a user's folder of
photos would (exhaustive matching, one shared OPENCV camera).  By default COLMAP estimates the intrinsics
(``--known-intrinsics``: the calibrated K is passed and kept fixed, zero distortion).

Evaluation: the recovered camera centres (saved/OpenGL world of transforms.json) are aligned to the
calibrated centres by a similarity (Umeyama, least squares); per registered image, the rotation error is the
angle of ``R_gt_c2w^T @ R_align @ R_est_c2w`` (OpenCV camera axes on both sides) and the centre error is the
distance after alignment, in % of the ring's diameter (largest distance between two calibrated centres).
Acceptance: median rotation error <= 1 deg, median centre error <= 2 %.  Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads, see nfkit/__init__.py)
import numpy as np

from nfkit.pose_eval import rotation_angle_deg, umeyama

ROOT = Path(__file__).resolve().parents[1]
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def read_par(path: Path) -> dict:
    """templeSR_par.txt -> {image name: (K [3, 3], R [3, 3] world->camera, t [3])}."""
    lines = path.read_text().split("\n")
    n = int(lines[0])
    cams = {}
    for line in lines[1:1 + n]:
        tok = line.split()
        v = np.array([float(x) for x in tok[1:]], dtype=np.float64)
        cams[tok[0]] = (v[:9].reshape(3, 3), v[9:18].reshape(3, 3), v[18:21])
    return cams


def evaluate(transforms: Path, poses_json: Path, cams: dict) -> dict:
    """Compares transforms.json frames with the calibration -> per-image rows and summary numbers."""
    meta = json.loads(transforms.read_text())
    report = json.loads(poses_json.read_text())
    src_names = report["source_names"]  # frame_00000.png <-> source_names[0]
    est_c, est_r, gt_c, gt_r, names = [], [], [], [], []
    for f in meta["frames"]:
        idx = int(Path(f["file_path"]).stem.split("_")[1])
        name = src_names[idx]
        c2w = np.asarray(f["transform_matrix"]) @ GL_TO_CV  # OpenCV camera axes
        _, r, t = cams[name]
        est_c.append(c2w[:3, 3])
        est_r.append(c2w[:3, :3])
        gt_c.append(-r.T @ t)
        gt_r.append(r.T)
        names.append(name)
    est_c, gt_c = np.array(est_c), np.array(gt_c)
    all_c = np.array([-r.T @ t for _, r, t in cams.values()])
    diameter = float(max(np.linalg.norm(a - b) for a in all_c for b in all_c))
    s, ra, ta = umeyama(est_c, gt_c)
    rows = []
    for i, name in enumerate(names):
        c = s * ra @ est_c[i] + ta
        rot_err = rotation_angle_deg(gt_r[i].T @ ra @ est_r[i])
        rows.append({"image": name, "rot_err_deg": rot_err,
                     "centre_err_pct": 100.0 * float(np.linalg.norm(c - gt_c[i])) / diameter})
    k = next(iter(cams.values()))[0]
    return {"rows": rows, "diameter": diameter, "scale": s, "n_registered": len(rows), "n_images": len(cams),
            "fl_x": meta.get("fl_x"), "fl_y": meta.get("fl_y"), "fx_gt": k[0, 0], "fy_gt": k[1, 1],
            "report": report}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "temple_ring"))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_poses"))
    ap.add_argument("--known-intrinsics", action="store_true", help="pass the calibrated K (kept fixed)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from nfkit.datasets.capture import prepare_capture

    data, out = Path(args.data), Path(args.out)
    cams = read_par(data / "templeSR_par.txt")
    camera_params = None
    if args.known_intrinsics:
        k = next(iter(cams.values()))[0]
        camera_params = [k[0, 0], k[1, 1], k[0, 2], k[1, 2], 0.0, 0.0, 0.0, 0.0]
    t0 = time.perf_counter()
    transforms = prepare_capture(data, out, max_side=640, camera_params=camera_params)
    seconds = time.perf_counter() - t0
    ev = evaluate(transforms, out / "poses.json", cams)
    print(f"\n{'image':<18} {'rot err (deg)':>14} {'centre err (% diam)':>20}")
    for r in ev["rows"]:
        print(f"{r['image']:<18} {r['rot_err_deg']:>14.3f} {r['centre_err_pct']:>20.3f}")
    rot = float(np.median([r["rot_err_deg"] for r in ev["rows"]]))
    cen = float(np.median([r["centre_err_pct"] for r in ev["rows"]]))
    rep = ev["report"]
    print(f"{'median':<18} {rot:>14.3f} {cen:>20.3f}")
    print(f"registered {ev['n_registered']}/{ev['n_images']}, reprojection error "
          f"{rep['mean_reprojection_error_px']} px, focal {ev['fl_x']:.1f}/{ev['fl_y']:.1f} px "
          f"(calibrated {ev['fx_gt']:.1f}/{ev['fy_gt']:.1f}), ring diameter {ev['diameter']:.4f}, {seconds:.1f} s")
    tried = ", ".join(f"{a['matcher']}/{a['camera_model']}{'/relaxed' if a['relaxed'] else ''}: {a['registered']}"
                      for a in rep["attempts"])
    print(f"attempts (matching/camera model: registered): {tried}")
    ok = rot <= 1.0 and cen <= 2.0 and ev["n_registered"] >= 3
    print(json.dumps({
        "bench": "poses", "data": "temple_ring", "intrinsics": "known (fixed)" if camera_params else "estimated",
        "n_images": ev["n_images"], "n_registered": ev["n_registered"],
        "median_rot_err_deg": round(rot, 4), "median_centre_err_pct_diameter": round(cen, 4),
        "max_rot_err_deg": round(max(r["rot_err_deg"] for r in ev["rows"]), 4),
        "max_centre_err_pct_diameter": round(max(r["centre_err_pct"] for r in ev["rows"]), 4),
        "mean_reprojection_error_px": rep["mean_reprojection_error_px"],
        "fl_x": round(ev["fl_x"], 2), "fl_y": round(ev["fl_y"], 2), "fx_gt": ev["fx_gt"], "fy_gt": ev["fy_gt"],
        "matcher": rep["matcher"], "camera_model": rep["camera_model"],
        "seconds": round(seconds, 2), "pass": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
