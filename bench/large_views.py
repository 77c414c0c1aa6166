"""Benchmark (issue 25, acceptance 2): a posed capture of real-sized views, end to end with default options.

    python bench/large_views.py [--side 1920] [--train 60] [--test 8] [--work outputs/bench_large]

Builds a Blender-layout capture from ``../shared/data/lego/200``: ``--train`` training views and ``--test``
held-out views, each upscaled (bicubic) from 200 px to ``--side`` px square (RGBA PNGs; 1920 px by default, larger
than 1080 x 1920 in pixel count), then runs ``nfkit fit DIR --out OUT`` with no option but the output folder and
times it from the command's start to its exit (image loading, the default 800 px downscale, training, evaluation
of every held-out view, writing the outputs). Prints a table, then one JSON line. Goal: under 10 minutes on
2 cores, with progress shown throughout (the command's stderr is kept in ``OUT.log``: the bar lines are counted).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from nfkit.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
GOAL_S = 600.0


def upscale_split(src: Path, dst: Path, split: str, n: int, side: int) -> int:
    """Writes the first ``n`` frames of ``src``'s ``split`` upscaled to ``side`` px into ``dst`` (Blender layout)."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    meta = json.loads((src / f"transforms_{split}.json").read_text())
    frames = meta["frames"][:n]
    (dst / split).mkdir(parents=True, exist_ok=True)
    for i, fr in enumerate(frames):
        img = np.asarray(iio.imread(src / (fr["file_path"] + ".png")))
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        big = torch.nn.functional.interpolate(t, size=(side, side), mode="bicubic", align_corners=False)
        out = big[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        name = f"{split}/v_{i:03d}"
        iio.imwrite(dst / f"{name}.png", out, compress_level=1)
        fr["file_path"] = f"./{name}"
    meta["frames"] = frames
    (dst / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    return len(frames)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=1920)
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--work", default=str(ROOT / "outputs" / "bench_large"))
    args = ap.parse_args(argv)
    src = SHARED / "lego" / "200"
    if not (src / "transforms_train.json").is_file():
        print(f"needs {src} (../shared/data/lego/200)", file=sys.stderr)
        return 2
    work = Path(args.work)
    data, out = work / f"lego_{args.side}", work / f"fit_{args.side}"
    if not (data / "transforms_test.json").is_file():
        t0 = time.perf_counter()
        n_tr = upscale_split(src, data, "train", args.train, args.side)
        n_te = upscale_split(src, data, "test", args.test, args.side)
        print(f"wrote {n_tr} + {n_te} views of {args.side} px in {time.perf_counter() - t0:.0f} s -> {data}")
    nfkit = Path(sys.executable).with_name("nfkit")
    cmd = [str(nfkit) if nfkit.is_file() else sys.executable, *([] if nfkit.is_file() else ["-m", "nfkit.apps.cli"]),
           "fit", str(data), "--out", str(out)]
    t0 = time.perf_counter()
    with open(str(out) + ".log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    text = Path(str(out) + ".log").read_text(errors="replace")
    metrics = json.loads((out / "metrics.json").read_text()) if rc == 0 else {}
    row = {"views_train": args.train, "views_test": args.test, "side": args.side, "rc": rc, "wall_s": round(wall, 1),
           "train_seconds": metrics.get("train_seconds"), "steps": metrics.get("steps"), "psnr": metrics.get("psnr"),
           "ssim": metrics.get("ssim"), "eval_views": metrics.get("eval_views"),
           "progress_updates": text.count("\r") + text.count("\n"), "notices": [
               line for line in text.splitlines() if line.startswith("nfkit:")][:5]}
    print(f"{'views':>8} {'side':>6} {'wall s':>8} {'train s':>8} {'steps':>6} {'PSNR':>7}  goal < {GOAL_S:.0f} s")
    print(f"{args.train:>5}+{args.test:<2} {args.side:>6} {wall:8.1f} {row['train_seconds'] or 0:8.1f} "
          f"{row['steps'] or 0:6d} {row['psnr'] or 0:7.2f}  {'met' if rc == 0 and wall < GOAL_S else 'NOT met'}")
    print(json.dumps({"bench": "large_views", "machine": cpu_model(), "threads": os.cpu_count(),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "goal_s": GOAL_S, **row}))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
