"""Benchmark: frames per second of the viewer's render loop on the demo field, at 128^2, 256^2 and 512^2.

    python bench/viewer.py [--field FIELD.safetensors] [--fit-steps 600] [--seconds 3]

Without ``--field`` it generates the demo capture (``assets/make_demo.py``) and fits it for ``--fit-steps``
steps first (about 60 s on a quiet 2-core machine; a step count, not a time limit, so that a busy machine still
gets the same field), in a temporary folder. A frame is what one browser session does per frame (``apps/viewer.py``):
render the view (``ViewerApp.render``: density cache + preview options once the cache is built, as ``nfkit view``
does) and hand it to viser as a JPEG background image with its depth map (both encodings included; no browser
attached). The camera
orbits the scene (radius 4, 25 degrees elevation, vertical fov 40 degrees) and moves every frame. Columns:

* ``loop fps``: the render loop as the viewer runs it (goal: >= 10 fps at 256^2 on 2 cores);
* ``exact fps``: the same frames with exact marching (what the viewer does while a fit runs), and the PSNR of
  the loop's frames against them;
* ``moving res @10fps``: the frame size the adaptive policy picks while the camera moves, from the measured rays/s.

The load average is printed before and after: the numbers only mean something on an otherwise idle machine
(torch's OpenMP threads slow down many times over when the cores are oversubscribed).

Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads, see nfkit/__init__.py)
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESOLUTIONS = (128, 256, 512)


def make_demo_field(workdir: Path, fit_steps: int) -> Path:
    demo, out = workdir / "demo", workdir / "fit"
    subprocess.run([sys.executable, str(ROOT / "assets" / "make_demo.py"), "--out", str(demo)], check=True)
    subprocess.run([sys.executable, "-m", "nfkit.apps.cli", "fit", str(demo), "--out", str(out), "--steps",
                    str(fit_steps), "--quiet"], check=True)
    return out / "field.safetensors"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orbit(i: int, n: int = 48):
    from nfkit.apps.view_render import look_at

    az, el = 2 * math.pi * i / n, math.radians(25)
    eye = 4 * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(eye, (0.0, 0.0, 0.0))


def loop_fps(frame, seconds: float, min_frames: int = 3) -> tuple[float, list]:
    """Runs ``frame(i)`` until ``seconds`` have passed (at least ``min_frames``); returns (fps, images)."""
    frame(0)  # warm-up
    imgs, t0, i = [], time.perf_counter(), 0
    while i < min_frames or time.perf_counter() - t0 < seconds:
        imgs.append(frame(i + 1))
        i += 1
    return i / (time.perf_counter() - t0), imgs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / 255**2
    return -10 * math.log10(max(mse, 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--field", help="field file (default: fit the demo capture first)")
    ap.add_argument("--fit-steps", type=int, default=600, help="training steps of the demo fit (default 600)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = ap.parse_args(argv)

    import logging

    from nfkit.apps.viewer import ViewerApp
    from nfkit.renderers import load_renderable
    from nfkit.renderers.view_density import stored_view_centres
    from nfkit.viewer_policy import moving_resolution

    logging.getLogger("websockets").setLevel(logging.WARNING)
    tmp = None
    field_path = args.field
    if field_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="nfkit-bench-viewer-")
        field_path = make_demo_field(Path(tmp.name), args.fit_steps)
    field, grid, opts, meta = load_renderable(field_path)
    app = ViewerApp(field, grid, opts, port=free_port(), verbose=False,
                    view_centres=stored_view_centres(field, meta, field_path))
    t0 = time.perf_counter()
    if app.cache_thread is not None:  # None: no density cache for this field (its density depends on the view)
        app.cache_thread.join()
    cache_s = time.perf_counter() - t0
    settings = {"mode": "rgb", "bg": (1.0, 1.0, 1.0), "crop": None}
    cache = app.cache
    rows = {}
    load0 = os.getloadavg()[0]
    print(f"field {field_path}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"density cache built in {cache_s:.1f} s; load average {load0:.2f}")
    print(f"{'resolution':<11} {'loop fps':>9} {'ms/frame':>9} {'exact fps':>10} {'PSNR vs exact':>14} "
          f"{'moving res @10fps':>18}")
    try:
        for res in RESOLUTIONS:
            def frame(i, res=res):
                img, depth = app.render(orbit(i), (res, res), 40.0, settings)
                app.server.scene.set_background_image(img, format="jpeg", jpeg_quality=40, depth=depth)
                return img

            app.cache = cache
            fps, imgs = loop_fps(frame, args.seconds)
            rate = fps * res * res
            app.cache = None  # exact marching, same frames
            n = min(len(imgs), 3)
            fps_exact, exact = loop_fps(frame, 0.0, min_frames=n)
            app.cache = cache
            quality = float(np.mean([psnr(a, b) for a, b in zip(imgs[:n], exact[:n])]))
            moving = moving_resolution(rate, 10.0, 1.0, 512)
            rows[res] = {"fps": round(fps, 2), "ms": round(1000 / fps, 1), "fps_exact": round(fps_exact, 2),
                         "psnr_vs_exact": round(quality, 2), "rays_per_s": round(rate)}
            print(f"{f'{res}x{res}':<11} {fps:>9.2f} {1000 / fps:>9.1f} {fps_exact:>10.2f} {quality:>13.2f}  "
                  f"{f'{moving[0]}x{moving[1]}':>18}", flush=True)
    finally:
        app.stop()
        if tmp is not None:
            tmp.cleanup()
    load1 = os.getloadavg()[0]
    print(f"load average after: {load1:.2f}" + ("  (busy machine: these numbers are not representative)"
                                                 if max(load0, load1) > 2.5 else ""))
    print(json.dumps({
        "bench": "viewer", "date": time.strftime("%Y-%m-%d %H:%M"), "field": str(field_path),
        "threads": torch.get_num_threads(), "cache_build_s": round(cache_s, 2),
        "load_avg": [round(load0, 2), round(load1, 2)],
        "fps": {str(r): v["fps"] for r, v in rows.items()},
        "fps_exact": {str(r): v["fps_exact"] for r, v in rows.items()},
        "psnr_cached_vs_exact": {str(r): v["psnr_vs_exact"] for r, v in rows.items()},
        "goal_fps_256": 10.0, "meets_goal": rows[256]["fps"] >= 10.0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
