"""Benchmark (issue 24, acceptance 1): data-parallel ``nfkit fit`` on torchrun against one process.

    python bench/scale.py [--seconds 180] [--data ../shared/data/lego/100] [--ranks 2] [--work outputs/bench_scale]

Runs ``nfkit fit DATA --max-seconds S`` twice from scratch: one process with ``--ranks`` threads, then ``torchrun
--nproc_per_node R -m nfkit.apps fit ...`` with one thread a rank (gloo). Reports held-out PSNR, steps and
samples/s (all ranks) of both; goal: PSNR within 0.3 dB. Prints a table, then one JSON line. Run it alone on an
idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from nfkit.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
GOAL_DB = 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit(cmd_prefix: list[str], env: dict, data: Path, out: Path, seconds: float) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = ["fit", str(data), "--out", str(out), "--max-seconds", str(seconds), "--steps", "10000000",
            "--no-resume", "--quiet"]
    t0 = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.run(cmd_prefix + args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                              cwd=ROOT, timeout=3 * seconds + 900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}; see {out.parent / (out.name + '.log')}", "wall_s": round(wall, 1)}
    m = json.loads((out / "metrics.json").read_text())
    return {"psnr": m["psnr"], "ssim": m["ssim"], "steps": m["steps"], "train_seconds": m["train_seconds"],
            "samples_per_second": m["samples_per_second"], "wall_s": round(wall, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--data", default=str(SHARED / "lego" / "100"))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--work", default="outputs/bench_scale")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not data.exists():
        print(f"skip: {data} not present (needs ../shared/data/lego)")
        print(json.dumps({"bench": "scale", "skipped": True}))
        return 0
    work = Path(args.work).resolve()
    nfkit = [sys.executable, "-m", "nfkit.apps"]
    one = fit(nfkit, {"OMP_NUM_THREADS": str(args.ranks)}, data, work / "one_process", args.seconds)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "nfkit.apps"]
    ddp = fit(torchrun, {"OMP_NUM_THREADS": "1", "NFKIT_THREADS_PER_RANK": "1"}, data, work / "ranks", args.seconds)
    rows = {f"1 process x {args.ranks} threads": one, f"{args.ranks} ranks x 1 thread (gloo)": ddp}
    print(f"{'run':<28} {'PSNR':>7} {'steps':>6} {'samples/s':>10} {'wall s':>7}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<28} ERROR {r['error']}")
        else:
            print(f"{name:<28} {r['psnr']:7.2f} {r['steps']:6d} {r['samples_per_second']:10,.0f} {r['wall_s']:7.1f}")
    delta = None if "psnr" not in one or "psnr" not in ddp else round(ddp["psnr"] - one["psnr"], 3)
    print(f"PSNR difference (ranks - one process): {delta} dB (goal: within {GOAL_DB})")
    print(json.dumps({"bench": "scale", "machine": cpu_model(), "cores": os.cpu_count(),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": args.seconds,
                      "data": str(data), "ranks": args.ranks, "rows": rows, "psnr_delta_db": delta,
                      "goal_met": None if delta is None else abs(delta) <= GOAL_DB}))
    return 0 if delta is not None else 1


if __name__ == "__main__":
    sys.exit(main())
