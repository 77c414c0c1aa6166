"""Benchmark: every ordered pair of radiance families converted on lego/100 (issue 5, "any to any" at full scale).

    python bench/convert_pairs.py [--families hashgrid,triplane,rbf,mlp,cam]
                                  [--teacher-seconds hashgrid=60,triplane=60,rbf=90,mlp=180,cam=180]
                                  [--seconds hashgrid=30,triplane=30,rbf=30,mlp=90,cam=90] [--eval-views 10]

1. One teacher per family, fitted as a user would: ``nfkit fit``'s trainer with the family's defaults
   (``FitConfig(field=F, max_seconds=S)``) on ../shared/data/lego/100; cached in ``outputs/bench_pairs/teacher_F/``
   while its budget matches.
2. Every ordered pair (teacher family != student family) is converted with ``nfkit convert``'s library call and its
   defaults, for the student family's ``--seconds`` (the distiller's schedule fitted to that length).
3. Each field is rendered on the first ``--eval-views`` test views (white background): the teacher's and the
   student's PSNR against ground truth, and the student's against the teacher's renders.

The test suite converts every pair on tiny fields; this checks that each pair also works on a real scene and by how
much a student falls short of its teacher in a fixed budget. Prints a matrix, then one JSON object as the last line.
About 30 minutes with the defaults on 2 cores.
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
OUT = ROOT / "outputs" / "bench_pairs"
FAMILIES = ("hashgrid", "triplane", "rbf", "mlp", "cam")
TEACHER_SECONDS = {"hashgrid": 60.0, "triplane": 60.0, "rbf": 90.0, "mlp": 180.0, "cam": 180.0}
STUDENT_SECONDS = {"hashgrid": 30.0, "triplane": 30.0, "rbf": 30.0, "mlp": 90.0, "cam": 90.0}


def per_family(ap, flag: str, text: str, defaults: dict) -> dict:
    """``F=S,F=S`` -> {family: seconds} on top of ``defaults``."""
    out = dict(defaults)
    for item in filter(None, text.split(",")):
        fam, _, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if fam not in FAMILIES or seconds <= 0:
            ap.error(f"--{flag}: expected FAMILY=SECONDS with FAMILY one of {', '.join(FAMILIES)}, got {item!r}")
        out[fam] = seconds
    return out


def fit_teacher(data, family: str, seconds: float, train, test) -> Path:
    from nfkit.trainer import FitConfig, Trainer

    tdir = OUT / f"teacher_{family}"
    path, meta_path = tdir / "field.safetensors", tdir / "bench_teacher.json"
    if path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()).get("seconds") == seconds:
        print(f"teacher {family}: cached {path}", flush=True)
        return path
    print(f"teacher {family}: nfkit fit for {seconds:.0f} s", flush=True)
    cfg = FitConfig(data=str(data), out=str(tdir), field=family, steps=10**9, max_seconds=seconds,
                    checkpoint_seconds=1e9, eval_views=1)
    tr = Trainer(cfg, train, test, progress=False)
    tr.fit()
    tr.write_outputs()
    meta_path.write_text(json.dumps({"seconds": seconds, "steps": tr.step}))
    return path


def psnr_of(path: Path, test, n_views: int) -> float:
    from nfkit.evaluation import evaluate
    from nfkit.renderers import load_renderable

    field, grid, opts, _ = load_renderable(path)
    return evaluate(field, grid, test, opts, max_views=n_views)["psnr"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "lego" / "100")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--teacher-seconds", default="", metavar="F=S,...", help="fit budget per teacher family")
    ap.add_argument("--seconds", default="", metavar="F=S,...", help="conversion budget per student family")
    ap.add_argument("--eval-views", type=int, default=10)
    args = ap.parse_args()
    fams = [f for f in args.families.split(",") if f]
    if bad := [f for f in fams if f not in FAMILIES]:
        ap.error(f"--families: unknown {', '.join(bad)}; expected some of {', '.join(FAMILIES)}")
    t_secs = per_family(ap, "teacher-seconds", args.teacher_seconds, TEACHER_SECONDS)
    s_secs = per_family(ap, "seconds", args.seconds, STUDENT_SECONDS)
    if not args.data.is_dir():
        print(f"skip: {args.data} not present (needs ../shared/data/lego)")
        print(json.dumps({"bench": "convert_pairs", "skipped": True}))
        return 0
    from nfkit.datasets import load_dataset
    from nfkit.distill import DistillConfig, convert_file

    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    t_all = time.perf_counter()
    teachers, t_psnr = {}, {}
    for fam in fams:
        teachers[fam] = fit_teacher(args.data, fam, t_secs[fam], train, test)
        t_psnr[fam] = psnr_of(teachers[fam], test, args.eval_views)
        print(f"teacher {fam}: {t_psnr[fam]:.2f} dB ({args.eval_views} test views)", flush=True)
    pairs = {}
    for src in fams:
        for dst in fams:
            if src == dst:
                continue
            out = OUT / f"{src}_to_{dst}.safetensors"
            print(f"{src} -> {dst} ({s_secs[dst]:.0f} s)", flush=True)
            t0 = time.perf_counter()
            cfg = DistillConfig(steps=10**9, max_seconds=s_secs[dst])
            try:
                m = convert_file(teachers[src], out, dst, cfg, data=None, eval_views=args.eval_views, progress=False,
                                 metrics_path=out.with_suffix(".json"))
            except Exception as e:  # a pair that fails is a result, not the end of the run
                pairs[f"{src}->{dst}"] = {"error": f"{type(e).__name__}: {e}"}
                print(f"    FAILED: {type(e).__name__}: {e}", flush=True)
                continue
            p = psnr_of(out, test, args.eval_views)
            pairs[f"{src}->{dst}"] = {
                "psnr": round(p, 3), "teacher_psnr": round(t_psnr[src], 3), "drop_db": round(t_psnr[src] - p, 3),
                "psnr_vs_teacher": round(m["psnr_vs_teacher"], 3), "steps": m["steps"],
                "train_seconds": m["train_seconds"], "head_copied": m["head_copied"], "n_params": m["n_params"],
                "loss_first": m["loss_first"], "loss_last": m["loss_last"],
                "wall_s": round(time.perf_counter() - t0, 1)}
            print(f"    {p:.2f} dB (teacher {t_psnr[src]:.2f}; {m['psnr_vs_teacher']:.2f} dB against the teacher's "
                  f"renders), {m['steps']} steps", flush=True)
    print(f"\nlego/100, {args.eval_views} test views, PSNR against ground truth (dB); rows: teacher (fit budget), "
          "columns: student (conversion budget); in brackets: student - teacher")
    print(f"{'teacher':>18} | " + " | ".join(f"{f + f' {s_secs[f]:.0f} s':>16}" for f in fams))
    for src in fams:
        cells = []
        for dst in fams:
            r = pairs.get(f"{src}->{dst}")
            cells.append("—" if r is None else "FAILED" if "error" in r else f"{r['psnr']:.2f} ({-r['drop_db']:+.2f})")
        print(f"{src + f' {t_secs[src]:.0f} s {t_psnr[src]:.2f}':>18} | " + " | ".join(f"{c:>16}" for c in cells))
    print(json.dumps({
        "bench": "convert_pairs", "data": str(args.data), "eval_views": args.eval_views,
        "teacher_seconds": t_secs, "student_seconds": s_secs,
        "teacher_psnr": {k: round(v, 3) for k, v in t_psnr.items()}, "pairs": pairs,
        "failed": sorted(k for k, v in pairs.items() if "error" in v), "threads": torch.get_num_threads(),
        "machine": cpu_model(),
        "wall_seconds_total": round(time.perf_counter() - t_all, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
