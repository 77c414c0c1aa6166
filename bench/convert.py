"""Benchmark: PVD distillation against training from scratch, on lego/100 (issue 5).

    python bench/convert.py [--teacher-seconds 120] [--seconds 150] [--families mlp,cam,rbf,triplane]
                            [--roundtrip-seconds 120] [--eval-every 15] [--eval-views 10] [--no-scratch]

1. Teacher: a hash grid fitted with ``nfkit fit``'s trainer on ../shared/data/lego/100 for ``--teacher-seconds``,
   cached in ``outputs/bench_convert/teacher/`` (re-used while its budget matches).
2. Target: the teacher's test PSNR (first ``--eval-views`` test views, white background) - 0.5 dB.
3. For each student family: wall time (evaluation excluded) until the student reaches the target by distillation
   (``nfkit.distill``, family defaults + the common colour head, virtual cameras in the range of the training
   cameras), and training the same family from scratch on the
   images (``nfkit fit``'s trainer, family defaults, ``--scratch-samples`` samples per step); each run stops at the
   target or at ``--seconds``, and the PSNR is checked every ``--eval-every`` seconds of training, so times are
   rounded up to that grid. A run that never gets there is reported as "not reached in X s" with its best PSNR.
4. Round trip: the hash grid teacher -> mlp (the run of step 3, or a new one) -> hashgrid (``--roundtrip-seconds``),
   test PSNR of each stage.

Prints a table, then one JSON object as the last line. A full run with the defaults takes ~25-30 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads, see nfkit/__init__.py)
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "outputs" / "bench_convert"


class Watch:
    """Callback for a trainer / distiller: evaluates every ``every`` seconds of its training time, stops it once
    the PSNR reaches ``target`` (by setting its step limit to the current step)."""

    def __init__(self, test, n_views: int, every: float, target: float | None, grid_of=None):
        self.test, self.n_views, self.every, self.target = test, n_views, every, target
        self.next, self.curve, self.reached = every, [], None
        self.grid_of = grid_of

    def __call__(self, run, force: bool = False):
        from nfkit.evaluation import evaluate

        if not force and run.elapsed < self.next and not run.done():
            return
        self.next = run.elapsed + self.every
        field = run.student if hasattr(run, "student") else run.field
        grid = self.grid_of(run)
        ev = evaluate(field, grid, self.test, run.opts, max_views=self.n_views)
        field.train()
        self.curve.append((round(run.elapsed, 1), run.step, round(ev["psnr"], 3)))
        print(f"    {run.elapsed:7.1f} s  step {run.step:6d}  {ev['psnr']:6.2f} dB", flush=True)
        if self.target is not None and ev["psnr"] >= self.target and self.reached is None:
            self.reached = run.elapsed
            run.cfg.steps = run.step  # stop at the end of this step

    def best(self) -> float | None:
        return max((c[2] for c in self.curve), default=None)


def teacher(args, train, test):
    from nfkit.evaluation import evaluate
    from nfkit.renderers import load_renderable
    from nfkit.trainer import FitConfig, Trainer

    tdir = OUT / "teacher"
    path, meta_path = tdir / "field.safetensors", tdir / "bench_teacher.json"
    if path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()).get("seconds") == args.teacher_seconds:
        print(f"teacher: cached {path}")
    else:
        print(f"teacher: fitting hashgrid for {args.teacher_seconds:.0f} s")
        cfg = FitConfig(data=str(args.data), out=str(tdir), steps=10**9, max_seconds=args.teacher_seconds,
                        checkpoint_seconds=1e9)
        tr = Trainer(cfg, train, test, progress=False)
        tr.fit()
        tr.write_outputs()
        meta_path.write_text(json.dumps({"seconds": args.teacher_seconds, "steps": tr.step}))
    field, grid, opts, _ = load_renderable(path)
    psnr = evaluate(field, grid, test, opts, max_views=args.eval_views)["psnr"]
    return path, psnr


def distill_run(args, src, family, test, target, seconds, dst, user_config=None):
    from nfkit.distill import DistillConfig, convert_file

    watch = Watch(test, args.eval_views, args.eval_every, target, grid_of=lambda r: r.grid)
    cfg = DistillConfig(steps=10**9, max_seconds=seconds, samples_per_step=args.distill_samples)
    t0 = time.perf_counter()
    m = convert_file(src, dst, family, cfg, user_config, data=str(args.data), eval_views=args.eval_views, progress=False,
                     callback=watch, metrics_path=dst.with_suffix(".json"))
    return {"reached_s": watch.reached, "best_psnr": watch.best(), "curve": watch.curve,
            "final_psnr": m.get("psnr_vs_ground_truth"), "psnr_vs_teacher": m.get("psnr_vs_teacher"),
            "train_seconds": m.get("train_seconds"), "steps": m.get("steps"), "n_params": m.get("n_params"),
            "stage_seconds": m.get("stage_seconds"), "wall_s": round(time.perf_counter() - t0, 1)}


def scratch_run(args, family, train, test, target, seconds):
    from nfkit.trainer import FitConfig, Trainer

    watch = Watch(test, args.eval_views, args.eval_every, target, grid_of=lambda r: r.grid)
    cfg = FitConfig(data=str(args.data), out=str(OUT / f"scratch_{family}"), field=family, steps=10**9,
                    max_seconds=seconds, checkpoint_seconds=1e9,
                    samples_per_step=args.scratch_samples if family != "hashgrid" else 1 << 16)
    tr = Trainer(cfg, train, test, progress=False)
    tr.fit(callback=watch)
    if not watch.curve or watch.curve[-1][1] != tr.step:
        watch(tr, force=True)
    return {"reached_s": watch.reached, "best_psnr": watch.best(), "curve": watch.curve, "steps": tr.step,
            "train_seconds": round(tr.elapsed, 1)}


def fmt(r, seconds):
    if r is None:
        return "—"
    return f"{r['reached_s']:.0f} s" if r["reached_s"] is not None else f"not reached in {seconds:.0f} s (best {r['best_psnr']:.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED / "lego" / "100")
    ap.add_argument("--teacher-seconds", type=float, default=120.0)
    ap.add_argument("--seconds", type=float, default=150.0, help="cap of each distillation / scratch run")
    ap.add_argument("--families", default="mlp,cam,rbf,triplane")
    ap.add_argument("--roundtrip-seconds", type=float, default=120.0, help="mlp -> hashgrid leg (0: skip)")
    ap.add_argument("--eval-every", type=float, default=15.0)
    ap.add_argument("--eval-views", type=int, default=10)
    ap.add_argument("--margin", type=float, default=0.5, help="target = teacher PSNR - margin")
    ap.add_argument("--distill-samples", type=int, default=1 << 14)
    ap.add_argument("--scratch-samples", type=int, default=1 << 14)
    ap.add_argument("--no-scratch", action="store_true")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skip: {args.data} not present (needs ../shared/data/lego)")
        print(json.dumps({"bench": "convert", "skipped": True}))
        return 0
    from nfkit.datasets import load_dataset

    OUT.mkdir(parents=True, exist_ok=True)
    train, test = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    t_all = time.perf_counter()
    src, t_psnr = teacher(args, train, test)
    target = t_psnr - args.margin
    print(f"teacher test PSNR {t_psnr:.2f} dB ({args.eval_views} views) -> target {target:.2f} dB; "
          f"cap {args.seconds:.0f} s per run")
    rows = {}
    for fam in [f for f in args.families.split(",") if f]:
        print(f"{fam}: distillation", flush=True)
        d = distill_run(args, src, fam, test, target, args.seconds, OUT / f"student_{fam}.safetensors")
        s = None
        if not args.no_scratch:
            print(f"{fam}: from scratch", flush=True)
            s = scratch_run(args, fam, train, test, target, args.seconds)
        ratio = None
        if s is not None and d["reached_s"] is not None:
            if s["reached_s"] is not None:
                ratio = round(s["reached_s"] / max(d["reached_s"], 1e-9), 2)
            else:
                ratio = f">= {args.seconds / max(d['reached_s'], 1e-9):.1f}"
        rows[fam] = {"distill": d, "scratch": s, "speedup": ratio}
    rt = None
    if args.roundtrip_seconds > 0:
        mlp_path = OUT / "student_mlp.safetensors"
        if "mlp" not in rows:
            print("round trip: hashgrid -> mlp", flush=True)
            rows_mlp = distill_run(args, src, "mlp", test, None, args.seconds, mlp_path)
        else:
            rows_mlp = rows["mlp"]["distill"]
        print("round trip: mlp -> hashgrid", flush=True)
        back = distill_run(args, mlp_path, "hashgrid", test, None, args.roundtrip_seconds,
                           OUT / "roundtrip_hashgrid.safetensors")
        rt = {"teacher_psnr": round(t_psnr, 3), "mlp_psnr": rows_mlp["final_psnr"], "hashgrid_psnr": back["final_psnr"],
              "drop_db": round(t_psnr - back["final_psnr"], 3), "within_1db": t_psnr - back["final_psnr"] <= 1.0,
              "seconds": args.roundtrip_seconds}
    print(f"\nlego/100, teacher hashgrid {args.teacher_seconds:.0f} s: {t_psnr:.2f} dB, target {target:.2f} dB "
          f"(threads={torch.get_num_threads()})")
    print(f"{'student':>9} | {'distill: time to target':>34} | {'scratch: time to target':>34} | speedup")
    for fam, r in rows.items():
        print(f"{fam:>9} | {fmt(r['distill'], args.seconds):>34} | {fmt(r['scratch'], args.seconds):>34} | "
              f"{r['speedup'] if r['speedup'] is not None else '—'}")
    if rt:
        print(f"round trip hashgrid {rt['teacher_psnr']:.2f} -> mlp {rt['mlp_psnr']:.2f} -> hashgrid "
              f"{rt['hashgrid_psnr']:.2f} dB (drop {rt['drop_db']:.2f} dB)")
    print(json.dumps({
        "bench": "convert", "data": str(args.data), "teacher_seconds": args.teacher_seconds,
        "teacher_psnr": round(t_psnr, 3), "target_psnr": round(target, 3), "cap_seconds": args.seconds,
        "eval_every": args.eval_every, "eval_views": args.eval_views, "students": rows, "roundtrip": rt,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "wall_seconds_total": round(time.perf_counter() - t_all, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
