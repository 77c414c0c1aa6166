"""Benchmark: field families x signals at matched parameter budgets and equal wall time, and the seeds' claims.

    python bench/fields.py [--seconds 60] [--signals image,sdf,radiance] [--families mlp,cam,rbf,triplane,hashgrid]
                           [--budget image=130000 sdf=130000 radiance=50000] [--image skimage:astronaut]
                           [--mesh ../shared/data/meshes/armadillo.off] [--rbf-seconds 30]
                           [--precision default|float32|bfloat16|auto]

Each (family, signal) run trains a fresh field for ``--seconds`` of wall time (evaluation excluded) with the
family's size knob set so its parameter count is closest to the signal's budget (mlp/cam: hidden width; rbf: grid
resolutions; triplane: plane side; hashgrid: table size and levels). Quality is measured at 1/4, 1/2 and all of the
time:

* image: PSNR on the whole image (fit on all pixels, ``fit-image`` defaults);
* sdf: IoU on uniform points in [-1, 1]^3 (``fit-sdf`` defaults); Chamfer distance of the marching-cubes mesh at
  the end;
* radiance: PSNR on the test views of lego/100 from ../shared/data when present, else the embedded demo (the curve
  uses the first ``--curve-views``, the final PSNR all), with ``nfkit fit``'s trainer at 2^14 samples per step (the
  default 2^16 leaves a 50k-parameter MLP a few dozen steps in a minute). The radiance budget is smaller than the
  others (50k) so that the MLP families are not hopeless in a minute on 2 cores; grids at 50k parameters are coarse.

A last run checks the RBF claim with the rbf *defaults* on the mesh for ``--rbf-seconds``. Prints one table, the
claims, then one JSON object as the last line. Evaluating barely trained radiance fields is slow (nothing is pruned
yet), so a full run takes well over families x signals x seconds.
"""
from __future__ import annotations

import argparse
import json
import os
from nfkit.device import cpu_model
import subprocess
import sys
import time
from pathlib import Path

import nfkit  # noqa: F401  (first: sets the OpenMP spin count before torch loads, see nfkit/__init__.py)
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FAMILIES = ["mlp", "cam", "rbf", "triplane", "hashgrid"]
BUDGETS = {"image": 130_000, "sdf": 130_000, "radiance": 50_000}
CHECKS = (0.25, 0.5, 1.0)


# ----- matching parameter budgets ---------------------------------------------------------------------------------
def n_params(family: str, signal: str, opts: dict) -> int:
    """Parameter count of a field, built on the meta device (no memory, no initialisation)."""
    from nfkit import fields

    with torch.device("meta"):
        if family == "hashgrid" and signal == "radiance":
            f = fields.build_field("hashgrid", opts)
        else:
            f = fields.build_field("hashgrid-coord" if family == "hashgrid" else family, {**opts, "signal": signal})
    return sum(p.numel() for p in f.parameters())


def knob_options(family: str, signal: str, k: int) -> dict:
    """Field options of ``family`` at integer size knob ``k`` (parameters grow with k)."""
    if family in ("mlp", "cam"):
        return {"hidden": k}
    if family == "rbf":
        ch = [4, 4, 4, 4] if signal == "image" else [4, 4, 2, 2]
        return {"resolutions": [max(2, round(k * f)) for f in (1 / 8, 1 / 4, 1 / 2, 1)], "channels": ch}
    if family == "triplane":
        return {"resolution": k}
    # hashgrid: k encodes (log2 table size, levels) so that parameters grow with k
    return {"log2_hashmap_size": 8 + k // 13, "n_levels": 4 + k % 13}


def sized_options(family: str, signal: str, budget: int) -> tuple[dict, int]:
    """(options, parameter count) with the count closest to ``budget`` (bisection on the size knob)."""
    lo, hi = {"mlp": (4, 2048), "cam": (4, 2048), "rbf": (4, 512), "triplane": (2, 1024)}.get(family, (0, 13 * 12))
    if family == "hashgrid":  # not monotone in k across table sizes: scan them all
        best = min(range(lo, hi), key=lambda k: abs(n_params(family, signal, knob_options(family, signal, k)) - budget))
        opts = knob_options(family, signal, best)
        return opts, n_params(family, signal, opts)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if n_params(family, signal, knob_options(family, signal, mid)) <= budget:
            lo = mid
        else:
            hi = mid
    cands = [(abs(n_params(family, signal, knob_options(family, signal, k)) - budget), k) for k in (lo, hi)]
    opts = knob_options(family, signal, min(cands)[1])
    return opts, n_params(family, signal, opts)


# ----- one run per signal ----------------------------------------------------------------------------------------
def run_image(family, opts, seconds, img) -> dict:
    from nfkit.apps.fit_image import ImageFitConfig, fit_image, render_field_image
    from nfkit.metrics import psnr, ssim

    h, w = img.shape[:2]
    curve = []

    def cb(step, elapsed, loss, field):
        while len(curve) < len(CHECKS) and elapsed >= CHECKS[len(curve)] * seconds:
            pred = render_field_image(field, h, w)
            field.train()
            curve.append({"seconds": round(elapsed, 1), "steps": step, "q": round(psnr(pred, img), 3)})

    field, stats = fit_image(ImageFitConfig(field=family, steps=10**9, max_seconds=seconds, field_options=opts),
                             img, callback=cb)
    pred = render_field_image(field, h, w)
    return {"curve": curve, "steps": stats["steps"], "seconds": round(stats["train_seconds"], 1),
            "psnr": round(psnr(pred, img), 3), "ssim": round(ssim(pred, img), 4)}


def run_sdf(family, opts, seconds, shape) -> dict:
    from nfkit.apps import fit_sdf as fs
    from nfkit.datasets.shapes import iou

    mesh, samples, (pts, gt) = shape
    curve = []

    def q(field):
        with torch.no_grad():
            v = torch.cat([field.density(c) for c in pts.split(1 << 16)])
        field.train()
        return round(iou(v < 0, gt), 4)

    def cb(step, elapsed, loss, field):
        while len(curve) < len(CHECKS) and elapsed >= CHECKS[len(curve)] * seconds:
            curve.append({"seconds": round(elapsed, 1), "steps": step, "q": q(field)})

    field, stats = fs.fit_shape(fs.SDFFitConfig(field=family, steps=10**9, max_seconds=seconds, field_options=opts),
                                samples, callback=cb)
    ev = fs.evaluate_shape(field, mesh, (pts, gt), 128)
    return {"curve": curve, "steps": stats["steps"], "seconds": round(stats["train_seconds"], 1),
            "iou": round(ev["iou"], 4), "chamfer": None if ev["chamfer"] is None else round(ev["chamfer"], 5)}


def run_radiance(family, opts, seconds, data, out, curve_views: int = 5) -> dict:
    from nfkit.datasets import load_dataset
    from nfkit.evaluation import evaluate
    from nfkit.trainer import FitConfig, Trainer

    train, test = load_dataset(data, "train"), load_dataset(data, "test")
    cfg = FitConfig(data=str(data), out=str(out / f"radiance_{family}"), field=family, steps=10**9,
                    max_seconds=seconds, checkpoint_seconds=1e9, samples_per_step=1 << 14, field_options=opts)
    tr = Trainer(cfg, train, test, progress=False)
    curve = []

    def cb(t):
        while len(curve) < len(CHECKS) and t.elapsed >= CHECKS[len(curve)] * seconds:
            ev = evaluate(t.field, t.grid, test, t.opts, max_views=curve_views)
            curve.append({"seconds": round(t.elapsed, 1), "steps": t.step, "q": round(ev["psnr"], 3)})

    tr.fit(callback=cb)
    ev = evaluate(tr.field, tr.grid, test, tr.opts)
    return {"curve": curve, "steps": tr.step, "seconds": round(tr.elapsed, 1), "psnr": round(ev["psnr"], 3),
            "ssim": round(ev["ssim"], 4)}


# ----- data ------------------------------------------------------------------------------------------------------
def load_shape(mesh_path: Path, cache_dir: Path):
    from nfkit.datasets.shapes import ShapeSamples, load_mesh, sample_sdf, uniform_occupancy

    mesh, _, _ = load_mesh(mesh_path)
    cache = cache_dir / f"gt_{mesh_path.stem}_{len(mesh.faces)}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        samples = ShapeSamples(*(torch.from_numpy(z[k]) for k in ("points", "sdf", "occupancy")))
    else:
        samples = sample_sdf(mesh)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache, points=samples.points.numpy(), sdf=samples.sdf.numpy(), occupancy=samples.occupancy.numpy())
    return mesh, samples, uniform_occupancy(mesh)


def radiance_data(out: Path) -> Path:
    lego = SHARED / "lego" / "100"
    if lego.is_dir():
        return lego
    demo = out / "demo"
    if not (demo / "transforms.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "assets" / "make_demo.py"), "--out", str(demo)], check=True,
                       capture_output=True)
    return demo


# ----- claims ----------------------------------------------------------------------------------------------------
def claims(rows: list[dict], rbf_row: dict | None) -> dict:
    by = {(r["signal"], r["family"]): r for r in rows}
    out = {}
    for signal, need in (("image", 1.0), ("radiance", 0.0)):
        a, b = by.get((signal, "cam")), by.get((signal, "mlp"))
        if a and b:
            delta = a["final"] - b["final"]
            out[f"cam_vs_mlp_{signal}"] = {"delta": round(delta, 3), "required": need, "holds": delta >= need}
    if rbf_row is not None:
        out["rbf_sdf_iou_30s"] = {"iou": rbf_row["iou"], "seconds": rbf_row["seconds"], "params": rbf_row["params"],
                                  "required": 0.97, "holds": rbf_row["iou"] >= 0.97}
    for fam in ("triplane", "hashgrid"):
        for signal in ("image", "sdf", "radiance"):
            a, b = by.get((signal, fam)), by.get((signal, "mlp"))
            if a and b and a["curve"] and b["curve"]:
                n = min(len(a["curve"]), len(b["curve"]))
                faster = all(a["curve"][i]["q"] > b["curve"][i]["q"] for i in range(n))
                out[f"{fam}_faster_than_mlp_{signal}"] = {
                    "family": [c["q"] for c in a["curve"]], "mlp": [c["q"] for c in b["curve"]], "holds": faster}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall time per (family, signal)")
    ap.add_argument("--signals", default="image,sdf,radiance")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--budget", nargs="*", default=[], metavar="SIGNAL=N", help="parameter budget per signal")
    ap.add_argument("--image", default="skimage:astronaut", help="image file or skimage:NAME")
    ap.add_argument("--image-side", type=int, default=256, help="downscale the image to this larger side")
    ap.add_argument("--mesh", default=str(SHARED / "meshes" / "armadillo.off"))
    ap.add_argument("--rbf-seconds", type=float, default=30.0, help="RBF claim run (rbf defaults); 0 skips it")
    ap.add_argument("--curve-views", type=int, default=5, help="radiance: test views rendered at the 1/4 and 1/2 "
                    "checkpoints and for the curve's last point (the final PSNR uses all test views)")
    ap.add_argument("--precision", choices=("default", "float32", "bfloat16", "auto"), default="default",
                    help="network precision of the mlp, cam and triplane runs and of the hashgrid image/SDF runs "
                    "(default: each family's own default; rbf and the radiance hash grid keep theirs)")
    ap.add_argument("--out", default="outputs/bench_fields")
    args = ap.parse_args()
    try:
        budgets = dict(BUDGETS, **{k: int(v) for k, v in (b.split("=", 1) for b in args.budget)})
    except ValueError:
        ap.error(f"--budget: expected SIGNAL=N pairs, got {args.budget}")
    signals = [s for s in args.signals.split(",") if s]
    fams = [f for f in args.families.split(",") if f]
    if set(signals) - set(BUDGETS) or set(fams) - set(FAMILIES) or set(budgets) - set(BUDGETS):
        ap.error(f"signals are {', '.join(BUDGETS)}; families are {', '.join(FAMILIES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    from nfkit import kernels

    kernels.load()  # compile/load the C++ kernels before anything is timed
    print(f"fields bench: {args.seconds:.0f}s per run, threads={torch.get_num_threads()}, budgets "
          + ", ".join(f"{s}={budgets[s]:,}" for s in signals), flush=True)
    data, rows, rbf_row, notes = {}, [], None, []
    if "image" in signals:
        from nfkit.images import load_image

        data["image"] = load_image(args.image, args.image_side)
    if "sdf" in signals or args.rbf_seconds > 0:
        if Path(args.mesh).is_file():
            data["sdf"] = load_shape(Path(args.mesh), out)
        else:
            notes.append(f"skip sdf: {args.mesh} not present")
    if "radiance" in signals:
        data["radiance"] = radiance_data(out)
    head = f"{'signal':<9} {'family':<9} {'params':>10} {'secs':>6} {'steps':>7}  quality at 1/4, 1/2, 1 of the time"
    print(head + "\n" + "-" * len(head), flush=True)
    for signal in signals:
        if signal not in data:
            continue
        for fam in fams:
            opts, n = sized_options(fam, signal, budgets[signal])
            if args.precision != "default" and (fam in ("mlp", "cam", "triplane")
                                                or fam == "hashgrid" and signal != "radiance"):
                opts = {**opts, "precision": args.precision}
            torch.manual_seed(0)
            if signal == "image":
                r = run_image(fam, opts, args.seconds, data["image"])
                final, extra = r["psnr"], f"PSNR {r['psnr']:.2f} dB"
            elif signal == "sdf":
                r = run_sdf(fam, opts, args.seconds, data["sdf"])
                final, extra = r["iou"], f"IoU {r['iou']:.4f}, Chamfer {r['chamfer']}"
            else:
                r = run_radiance(fam, opts, args.seconds, data["radiance"], out, args.curve_views)
                final, extra = r["psnr"], f"PSNR {r['psnr']:.2f} dB"
            rows.append({"signal": signal, "family": fam, "params": n, "options": opts, "final": final, **r})
            qs = ", ".join(f"{c['q']:.4g}" for c in r["curve"])
            print(f"{signal:<9} {fam:<9} {n:>10,d} {r['seconds']:>6.1f} {r['steps']:>7d}  {qs:<24} -> {extra}",
                  flush=True)
    if args.rbf_seconds > 0 and "sdf" in data:
        from nfkit import fields

        r = run_sdf("rbf", {}, args.rbf_seconds, data["sdf"])
        n = sum(p.numel() for p in fields.build_field("rbf", {"signal": "sdf"}).parameters())
        rbf_row = {"params": n, **r}
        print(f"{'sdf':<9} {'rbf(def)':<9} {n:>10,d} {r['seconds']:>6.1f} {r['steps']:>7d}  "
              f"{', '.join(str(c['q']) for c in r['curve']):<24} -> IoU {r['iou']:.4f}, Chamfer {r['chamfer']}")
    cl = claims(rows, rbf_row)
    print("\nclaims:")
    for k, v in cl.items():
        detail = json.dumps({a: b for a, b in v.items() if a != "holds"})
        print(f"  {k:<34} {'HOLDS' if v['holds'] else 'DOES NOT HOLD'}  {detail}")
    for n_ in notes:
        print(n_)
    print(json.dumps({
        "bench": "fields", "seconds_per_run": args.seconds, "precision": args.precision,
        "budgets": {s: budgets[s] for s in signals},
        "image": args.image, "image_side": args.image_side, "mesh": args.mesh,
        "radiance_data": str(data.get("radiance", "")), "rows": rows, "rbf_default": rbf_row, "claims": cl,
        "threads": torch.get_num_threads(), "machine": cpu_model(),
        "wall_seconds_total": round(time.perf_counter() - t_start, 1), "date": time.strftime("%Y-%m-%d"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
