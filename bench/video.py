"""Benchmark: the whole ``nfkit fit VIDEO --out DIR`` command on a real hand-held video (issue 6, acceptance 1).

    python bench/video.py [--video ../shared/data/apple_video/apple.mp4] [--out outputs/bench_video]
                          [-- extra nfkit fit arguments]

Runs the command as a user would (a subprocess, default settings: frames, image size and training budget are
the capture defaults of ``nfkit fit``), times it end to end, and reads DIR/metrics.json (written by the
command) and DIR/poses.json.  Acceptance: >= 90 % of the chosen frames registered, held-out PSNR >= 22 dB
(every 8th registered frame is held out), whole command <= 600 s on 2 CPU cores.

Prints a table (frames chosen / registered, reprojection error, held-out PSNR / SSIM, wall time per stage:
decode, poses, train, evaluate -- field file, held-out renders and metrics --, orbit video, mesh),
then, as the last line, one JSON object.  Without the video it prints why and a JSON line with
``"skipped": true`` (exit code 0).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "apple_video" / "apple.mp4"
MIN_REGISTERED, MIN_PSNR, MAX_SECONDS = 0.9, 22.0, 600.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO), help="the video (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench_video"), help="output folder (replaced)")
    ap.add_argument("extra", nargs="*", help="extra nfkit fit arguments (after --)")
    args = ap.parse_args(argv)
    video, out = Path(args.video), Path(args.out)
    if not video.is_file():
        print(f"bench/video.py: skipped: {video} not found (the apple video of ../shared/data is not shipped)")
        print(json.dumps({"bench": "video", "skipped": True, "reason": f"{video} not found"}))
        return 0
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "nfkit.apps.cli", "fit", str(video), "--out", str(out), "--quiet", *args.extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    result = {"bench": "video", "video": str(video), "returncode": proc.returncode, "wall_seconds": round(wall, 1)}
    if proc.returncode != 0 or not (out / "metrics.json").is_file():
        result["ok"] = False
        print(json.dumps(result))
        return 1
    m = json.loads((out / "metrics.json").read_text())
    poses = json.loads((out / "poses.json").read_text())
    chosen, reg = m.get("frames_chosen"), m.get("frames_registered")
    frac = reg / chosen if chosen else 0.0
    t = m.get("timings_s", {})
    decode = poses.get("decode_seconds") or 0.0
    stages = {"decode": decode, "poses": round(t.get("capture", 0.0) - decode, 2), "train": t.get("train"),
              "evaluate": t.get("evaluate"), "orbit_video": t.get("orbit_video"),
              "mesh": t.get("mesh"), "total (inside)": t.get("total"), "command (wall)": round(wall, 1)}
    rows = [("frames (video / chosen / registered)",
             f"{m.get('frames_total')} / {chosen} / {reg} ({100 * frac:.0f} %)"),
            ("mean reprojection error", f"{m.get('reprojection_error_px')} px"),
            ("held-out views", f"{m.get('eval_views')}"),
            ("held-out PSNR / SSIM", f"{m['psnr']:.2f} dB / {m['ssim']:.3f}"),
            ("training steps", f"{m['steps']} ({m['samples_per_second'] / 1e3:.0f}k samples/s)")]
    rows += [(f"time: {k}", f"{v} s") for k, v in stages.items()]
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    checks = {"registered >= 90 %": frac >= MIN_REGISTERED, "PSNR >= 22 dB": m["psnr"] >= MIN_PSNR,
              "command <= 600 s": wall <= MAX_SECONDS}
    print("acceptance: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()))
    result.update(ok=all(checks.values()), frames_total=m.get("frames_total"), frames_chosen=chosen,
                  frames_registered=reg, registered_fraction=round(frac, 4),
                  reprojection_error_px=m.get("reprojection_error_px"), psnr=round(m["psnr"], 3),
                  ssim=round(m["ssim"], 4), eval_views=m.get("eval_views"), steps=m["steps"],
                  samples_per_second=m["samples_per_second"], stage_seconds=stages, checks=checks,
                  outputs={"metrics": str(out / "metrics.json"), "renders": str(out / "renders"),
                           "orbit": m.get("orbit_video"), "field": m.get("field"),
                           "mesh": (m.get("mesh") or {}).get("path")})
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
