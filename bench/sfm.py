"""Benchmark of ``nfkit sfm`` (issue 20): neural incremental SfM against pycolmap's mappers and a classic arm.

    python bench/sfm.py [--part 1|2|3|all] [--data ../shared/data/temple_ring] [--out outputs/bench_sfm]

Arms, all on the same matches (pycolmap SIFT, peak threshold 0.002, exhaustive + guided matching, two-view
verification; the calibrated K is given to every arm and kept fixed -- or, with ``--intrinsics estimated|both``,
estimated as ``nfkit sfm`` does without ``--intrinsics`` and refined; the calibrated poses serve only for
evaluation, and in part 2 to order the ring for the arcs):
(a) nfkit sfm; (b) pycolmap incremental mapping; (c) pycolmap global mapping (GLOMAP); (d) classic: the same
pipeline with DLT triangulation and free-point BA (no SDF); (e) nfkit sfm without the surface filter; a0 / d0:
(a) / (d) without the final pycolmap LM bundle adjustment (``final_lm_ba``: Adam BA only, as before it).
Part 1: temple ring, 16 views (``--seeds 0,1,2``: nfkit's arms once per seed).  Part 2: every second view of the
ring (8), arcs of 6 and 4 consecutive views.
Part 3: robustness with ground truth on two meshes of ../shared/data/meshes, 12 views on a ring: keypoints are
projections of ray-cast surface points (the matcher's stand-in), 0.5 px noise, 15 % / 30 % of each pair's matches
replaced by random outliers; arms (a), (d), (e).  Metrics: registered count, median/max rotation error (deg) and
centre error (% of the ring diameter) after similarity alignment (``nfkit.pose_eval``); part 3 adds the fraction of
outlier matches that became 3D points and the Chamfer (mean distance of the points to the true surface, % of the
mesh's bounding-box diagonal).  Budgets are in steps (SfmConfig defaults); times are wall clock under load.
Prints tables, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import nfkit  # noqa: F401  (first: OpenMP spin count)
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfkit.apps.sfm.config import SfmConfig  # noqa: E402
from nfkit.apps.sfm.matches import Matches, estimate_intrinsics, extract_and_match  # noqa: E402
from nfkit.apps.sfm.pipeline import run_sfm  # noqa: E402
from nfkit.pose_eval import align_poses, max_pairwise_distance  # noqa: E402

CLASSIC = {"neural_triangulation": False, "neural_ba": False, "surface_filter": False}
ARMS = {"a": {}, "d": CLASSIC, "e": {"surface_filter": False},
        "a0": {"final_lm_ba": False}, "d0": {**CLASSIC, "final_lm_ba": False}}  # without pycolmap's LM finish


def read_par(path: Path) -> dict:
    """templeSR_par.txt -> {name: (K, R, t)} (world->camera, OpenCV)."""
    lines = path.read_text().split("\n")
    cams = {}
    for line in lines[1:1 + int(lines[0])]:
        tok = line.split()
        v = np.array([float(x) for x in tok[1:]])
        cams[tok[0]] = (v[:9].reshape(3, 3), v[9:18].reshape(3, 3), v[18:21])
    return cams


def evaluate(est: dict, ref: dict, n_total: int, diameter: float) -> dict:
    row = {"registered": len(est), "total": n_total}
    if len(est) >= 3:
        ev = align_poses(est, ref, scale_length=diameter)
        row.update({k: round(ev[k], 4) for k in ("median_rot_err_deg", "max_rot_err_deg", "median_centre_err_pct",
                                                  "max_centre_err_pct")})
    return row


def pycolmap_arm(matches: Matches, kind: str, out: Path) -> dict:
    """(b)/(c): pycolmap's incremental / global mapper on the arm's database, intrinsics fixed -> {name: pose}."""
    import pycolmap

    out.mkdir(parents=True, exist_ok=True)
    if kind == "b":
        opts = pycolmap.IncrementalPipelineOptions()
        opts.ba_refine_extra_params = opts.ba_refine_principal_point = False
        opts.ba_refine_focal_length = not matches.known_intrinsics
        opts.random_seed = 0
        opts.num_threads = 1
        models = pycolmap.incremental_mapping(matches.database, matches.image_dir, str(out), opts)
    else:
        opts = pycolmap.GlobalPipelineOptions()
        try:
            opts.num_threads = 1
            opts.random_seed = 0
        except AttributeError:
            pass
        models = pycolmap.global_mapping(matches.database, matches.image_dir, str(out), opts)
    if not models:
        return {}
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    poses = {}
    for im in rec.images.values():
        if im.has_pose:
            m = np.asarray(im.cam_from_world().matrix())
            poses[im.name] = (m[:, :3], m[:, 3])
    return poses


def run_arms(matches: Matches, arms, work: Path, seeds=(0,)) -> dict:
    """{(arm, seed): ({name: pose}, seconds, sfm result or None)}; pycolmap's arms once (seed 0), nfkit's arms
    once per seed (torch's and RANSAC's random draws)."""
    out = {}
    for arm in arms:
        for seed in (seeds if arm in ARMS else seeds[:1]):
            t0 = time.perf_counter()
            if arm in ("b", "c"):
                poses, res = pycolmap_arm(matches, arm, work / f"arm_{arm}"), None
            else:
                res = run_sfm(matches, replace(SfmConfig(), **ARMS[arm], seed=seed), show_progress=False)
                poses = {matches.names[i]: p for i, p in res.state.poses.items()}
            out[(arm, seed)] = (poses, time.perf_counter() - t0, res)
    return out


def temple_matches(data: Path, names: list[str], work: Path, K: np.ndarray | None) -> Matches:
    """Matches of a subset of the ring's images (linked into their own folder).  K None: intrinsics unknown,
    estimated as ``nfkit sfm`` does without ``--intrinsics`` (refined in BA)."""
    img = work / "images"
    shutil.rmtree(img, ignore_errors=True)
    img.mkdir(parents=True)
    for n in names:
        (img / n).symlink_to((data / n).resolve())
    cfg = SfmConfig()
    intr = None if K is None else [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    m = extract_and_match(img, work, intr, cfg.max_features, cfg.sift_peak_threshold, cfg.guided_matching)
    if K is None:
        src = estimate_intrinsics(m, work, SfmConfig().estimate_principal_point)
        print(f"{work.name}: {src}: K = {np.round(m.K[[0, 1, 0, 1], [0, 1, 2, 2]], 1).tolist()}", file=sys.stderr)
    return m


def print_table(title, rows):
    print(f"\n{title}")
    print(f"{'set':<14} {'arm':<5}{'reg':>7} {'med rot°':>9} {'max rot°':>9} {'med c%':>8} {'max c%':>8} {'s':>7}")
    for r in rows:
        print(f"{r['set']:<14} {r['arm']:<5}{r['registered']:>3}/{r['total']:<3} "
              f"{r.get('median_rot_err_deg', float('nan')):>9.3f} "
              f"{r.get('max_rot_err_deg', float('nan')):>9.3f} {r.get('median_centre_err_pct', float('nan')):>8.3f} "
              f"{r.get('max_centre_err_pct', float('nan')):>8.3f} {r['seconds']:>7.1f}")


def temple_parts(args, parts) -> list:
    data, out = Path(args.data), Path(args.out)
    cams = read_par(data / "templeSR_par.txt")
    K = next(iter(cams.values()))[0]
    ref = {n: (c[1], c[2]) for n, c in cams.items()}
    centres = np.array([-c[1].T @ c[2] for c in cams.values()])
    diameter = max_pairwise_distance(centres)
    names = list(cams)
    mid = centres.mean(0)
    ang = np.arctan2(centres[:, 1] - mid[1], centres[:, 0] - mid[0])  # ring order (evaluation metadata)
    ring = [names[k] for k in np.argsort(ang)]
    sets = []
    if 1 in parts:
        sets.append(("ring16", ring))
    if 2 in parts:
        sets += [("every2nd8", ring[::2]), ("arc6", ring[:6]), ("arc4", ring[:4])]
    if args.intrinsics == "estimated":
        sets = [(f"{n}-noK", s) for n, s in sets]
    elif args.intrinsics == "both":
        sets = [x for n, s in sets for x in ((n, s), (f"{n}-noK", s))]
    rows = []
    for set_name, subset in sets:
        m = temple_matches(data, sorted(subset), out / set_name, None if set_name.endswith("-noK") else K)
        for (arm, seed), (poses, sec, res) in run_arms(m, args.arms, out / set_name, args.seeds).items():
            row = {"set": set_name, "arm": arm if len(args.seeds) == 1 else f"{arm}/{seed}", "seed": seed,
                   "seconds": round(sec, 1),
                   **evaluate(poses, {n: ref[n] for n in subset}, len(subset), diameter)}
            if res is not None:
                row["focal_px"] = [round(f, 1) for f in res.report["focal_px"]]
                row["tracks"] = res.report.get("tracks")
            rows.append(row)
        print_table(f"temple ring ({set_name})", [r for r in rows if r["set"] == set_name])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="all", help="1, 2, 3 or all (comma-separated allowed)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "temple_ring"))
    ap.add_argument("--meshes", default=str(ROOT.parent / "shared" / "data" / "meshes"))
    ap.add_argument("--mesh-names", default="cow,bull")
    ap.add_argument("--arms", default="a,b,c,d,e")
    ap.add_argument("--intrinsics", default="calibrated", choices=("calibrated", "estimated", "both"),
                    help="parts 1-2: the calibrated K for every arm (fixed), or estimated as nfkit sfm does without "
                         "--intrinsics (sets named *-noK; pycolmap's incremental arm then refines the focal too)")
    ap.add_argument("--seeds", default="0", help="parts 1-2: nfkit's arms once per seed (comma-separated)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_sfm"))
    args = ap.parse_args(argv)
    args.arms = args.arms.split(",")
    args.seeds = [int(x) for x in args.seeds.split(",")]
    torch.set_num_threads(1)
    parts = {1, 2, 3} if args.part == "all" else {int(p) for p in args.part.split(",")}
    from nfkit.device import cpu_model

    t0 = time.perf_counter()
    rows = temple_parts(args, parts) if parts & {1, 2} else []
    robust = []
    if 3 in parts:
        from bench.sfm_robust import robustness

        robust = robustness(Path(args.meshes), args.mesh_names.split(","), [a for a in args.arms if a in ARMS])
    print(json.dumps({"bench": "sfm", "cpu": cpu_model(), "parts": sorted(parts), "temple": rows,
                      "robustness": robust, "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
