"""Benchmark: fit lego (Blender, ../shared/data/lego/<res>) and report test PSNR against training wall time.

    python bench/fit_lego.py [--res 100] [--seconds 180] [--checkpoints 30,60,120,180] [--backend auto|torch]
                             [--device auto|cpu|cuda] [--pixels device|cpu]

Data: ``$NFKIT_SHARED_DATA/lego/<res>`` (default ``../shared/data``). ``--device auto`` trains on CUDA when present;
``--pixels cpu`` keeps the training images on the CPU and moves each sampled batch to the GPU.

Evaluation time is excluded from the wall time. Prints a table, then one JSON line with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
from nfkit.device import cpu_model
import sys
import time
from pathlib import Path

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads, see nfkit/__init__.py)
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=int, default=100, choices=[100, 200])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--checkpoints", type=str, default="")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch"], help="torch: pure-torch reference path")
    ap.add_argument("--out", default="outputs/bench_fit_lego")
    ap.add_argument("--field-options", nargs="*", default=[])
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    ap.add_argument("--pixels", default="device", choices=["device", "cpu"], help="where training images live (CUDA)")
    args = ap.parse_args()
    data = SHARED / "lego" / str(args.res)
    if not data.is_dir():
        print(f"skip: {data} not present (needs ../shared/data/lego)")
        print(json.dumps({"skipped": True}))
        return 0
    if args.backend == "torch":
        os.environ["NFKIT_NO_KERNELS"] = "1"
    from nfkit.datasets import load_dataset
    from nfkit.evaluation import evaluate
    from nfkit.trainer import FitConfig, Trainer
    from nfkit.apps.cli_config import _parse_kv

    cps = [float(c) for c in args.checkpoints.split(",") if c] or [args.seconds * f for f in (1 / 6, 1 / 3, 2 / 3, 1)]
    cfg = FitConfig(data=str(data), out=args.out, steps=10**9, max_seconds=args.seconds, checkpoint_seconds=1e9,
                    field_options=_parse_kv(args.field_options), device=args.device)
    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    Trainer.PIXELS_ON_DEVICE = args.pixels == "device"
    tr = Trainer(cfg, train, test, progress=False)
    rows, pending = [], sorted(cps)

    def cb(t: Trainer):
        while pending and t.elapsed >= pending[0]:
            pending.pop(0)
            ev = evaluate(t.field, t.grid, test, t.opts)
            rows.append({"seconds": round(t.elapsed, 1), "steps": t.step, "psnr": round(ev["psnr"], 3),
                         "ssim": round(ev["ssim"], 4), "samples_per_s": round(t.total_samples / t.elapsed)})
            print(f"{rows[-1]['seconds']:>8.1f} {t.step:>7d} {ev['psnr']:>8.2f} {ev['ssim']:>7.4f} "
                  f"{rows[-1]['samples_per_s']:>12,d}", flush=True)

    dev = str(tr.device) + (f" ({torch.cuda.get_device_name(tr.device)})" if tr.device.type == "cuda" else "")
    print(f"lego/{args.res}, backend={args.backend}, device={dev}, pixels={args.pixels}, "
          f"threads={torch.get_num_threads()}, budget {args.seconds:.0f}s")
    print(f"{'seconds':>8} {'steps':>7} {'psnr':>8} {'ssim':>7} {'samples/s':>12}")
    t0 = time.perf_counter()
    tr.fit(callback=cb)
    if not rows or rows[-1]["steps"] != tr.step:
        pending[:] = [0.0]
        cb(tr)
    final = rows[-1]
    print(json.dumps({
        "bench": "fit_lego", "res": args.res, "backend": args.backend, "seconds_budget": args.seconds,
        "final_psnr": final["psnr"], "final_ssim": final["ssim"], "steps": tr.step,
        "samples_per_second": final["samples_per_s"], "curve": rows, "threads": torch.get_num_threads(),
        "machine": cpu_model(), "device": dev, "pixels": args.pixels,
        "torch": torch.__version__, "wall_seconds_total": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
