"""Benchmark (issue 23, acceptance 1-3): tri-plane fitting throughput and classification of fitted fields.

    python bench/triplanes.py [--per-class 50] [--test-per-class 20] [--real-per-class 12] [--real-test-per-class 6]
                              [--seeds 3] [--epochs 40] [--eval-shapes 30] [--steps 250] [--no-real] [--clouds]
                              [--work outputs/bench_triplanes]
    python bench/triplanes.py --per-class 4 --test-per-class 2 --real-per-class 2 --real-test-per-class 1 \\
                              --seeds 1 --epochs 2 --eval-shapes 4 --steps 30      # smoke test, ~1-2 min

1. Fitting throughput: the procedural set (10 ModelNet10-named classes, train + test) fitted from its mesh files
   into a fresh bank (3 x 16 x 32^2 planes, default :class:`FitConfig`: per-shape initialisation, per-shape
   decoders) in this process (torch's threads: 2 on the reference machine). shapes/min end to end (reading meshes
   + ground truth + fitting + writing shards) and for the fitting alone; mean IoU (50k uniform points) and
   Chamfer-L1 (marching cubes at 64^3 vs the mesh, normalised units: longest side 1.8) over ``--eval-shapes``
   shapes spread over the set. Goal: >= 100 shapes/min at IoU >= 0.9.
2. Accuracy, ``--seeds`` classifier seeds (mean +- std; one fitted bank per arm), of the channel-token transformer,
   the plane CNN, the weight-space MLP and PointNet, on the procedural classes and on the real-mesh arm (the meshes
   of ../shared/data/meshes as classes under nuisance, including a random rotation about z, so there every model
   trains with random rotations about z unless ``--no-real-rotate-z``; skipped with a note when absent); with
   ``--clouds`` also on the procedural shapes given as point clouds (2048 surface points, NPY), fitted as UDFs.
3. Procedural test set: (a) its tri-plane channels permuted at test time (the transformer's largest logit change;
   every plane model's accuracy), (b) re-fitted from another initialisation seed (every model's accuracy).
   Ablation arm (skip with ``--no-shared-init``): the same with one initialisation shared by every shape.

Prints a table, then one JSON line (machine, date, settings, results).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from nfkit.apps.triplanes.bank import FitConfig, evaluate_fits, shape_params
from nfkit.apps.triplanes.dataset import make_procedural, make_real_arm
from nfkit.apps.triplanes.shards import fit_bank, load_bank
from nfkit.apps.triplanes.train import TrainConfig, accuracy, logits_of, model_inputs, train_classifier
from nfkit.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NFKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MODELS = ("transformer", "cnn", "mlp", "pointnet")
GOAL_RATE, GOAL_IOU = 100.0, 0.9


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fit_fresh(shapes: Path, out: Path, cfg: FitConfig, args, split: str = "all") -> dict:
    shutil.rmtree(out, ignore_errors=True)
    res = fit_bank(shapes, out, cfg, shard_size=args.shard_size, batch_shapes=args.batch_shapes, split=split,
                   progress=not args.quiet)
    n = res["shapes"]
    return {"shapes": n, "seconds": round(res["seconds"], 1), "shapes_per_min": round(n / res["seconds"] * 60, 1),
            "fit_only_shapes_per_min": round(n / res["fit_seconds"] * 60, 1),
            "sample_seconds": round(res["sample_seconds"], 1), "fit_seconds": round(res["fit_seconds"], 1),
            "decoder_seconds": round(res["decoder_seconds"], 1)}


def fit_quality(bank, n: int) -> dict:
    from nfkit.datasets.shapes import load_mesh

    if n <= 0:
        return {}
    idx = sorted({int(i) for i in torch.linspace(0, len(bank.files) - 1, n).round()})
    params = bank.params()
    sub = {k: torch.cat([shape_params(params, i)[k] for i in idx]) for k in params}
    scores = evaluate_fits(sub, [load_mesh(bank.files[i])[0] for i in idx], bank.config)
    ious = [s["iou"] for s in scores]
    cds = [s["chamfer"] for s in scores if s["chamfer"] is not None]
    return {"eval_shapes": len(idx), "iou_mean": round(statistics.fmean(ious), 4), "iou_min": round(min(ious), 4),
            "chamfer_mean": round(statistics.fmean(cds), 5) if cds else None, "no_surface": len(ious) - len(cds)}


def mean_std(xs) -> dict:
    xs = [float(x) for x in xs]
    return {"mean": round(statistics.fmean(xs), 4), "std": round(statistics.pstdev(xs), 4) if len(xs) > 1 else 0.0,
            "runs": [round(x, 4) for x in xs]}


def run_arm(bank, args, refit=None, rotate_z: bool = False) -> dict:
    """Train every model with every seed on the bank's train split; test (and, with ``refit``, the permuted and
    re-fitted test sets). ``rotate_z``: every model trains with random rotations about z (the arm's own nuisance)."""
    tr, te = bank.select("train"), bank.select("test")
    out = {}
    for name in args.models:
        if name == "mlp" and bank.config.decoder == "shared":  # no per-shape weights to read
            continue
        rows = {"test": [], "perm": [], "refit": [], "perm_max_logit_change": [], "train_seconds": []}
        for seed in range(args.seeds):
            cfg = TrainConfig(**{**args.train_options, "model": name, "epochs": args.epochs, "seed": seed,
                                 "rotate_z": rotate_z})
            model, st = train_classifier(tr, bank.config, len(bank.classes), cfg)
            rows["train_seconds"].append(st["seconds"])
            x = model_inputs(te, bank.config, name)
            logits = logits_of(model, x, name, cfg)
            rows["test"].append(accuracy(logits, te["labels"]))
            if refit is not None and name in ("transformer", "cnn"):
                perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(100 + seed))
                lp = logits_of(model, x[:, perm], name, cfg)
                rows["perm"].append(accuracy(lp, te["labels"]))
                rows["perm_max_logit_change"].append(float((lp - logits).abs().max()))
            if refit is not None:
                rx = model_inputs(refit, bank.config, name)
                rows["refit"].append(accuracy(logits_of(model, rx, name, cfg), refit["labels"]))
            log(f"  {name} seed {seed}: test {rows['test'][-1]:.3f} ({st['seconds']:.0f} s)")
        out[name] = {k: mean_std(v) for k, v in rows.items() if v}
    return out


def procedural_arm(work: Path, cfg: FitConfig, args, tag: str, quality: bool = True):
    """Fit the procedural set (fresh bank), score the fits, re-fit the test split from seed + 1, train and test
    every model. Returns (fit stats, re-fit stats, accuracies)."""
    log(f"fitting the procedural set, init {cfg.init} (fresh bank)")
    fit = fit_fresh(work / "proc", work / f"{tag}_bank", cfg, args)
    bank = load_bank(work / f"{tag}_bank")
    if quality:
        fit.update(fit_quality(bank, args.eval_shapes))
    log(f"fit: {fit}")
    refit_cfg = FitConfig(**{**asdict(cfg), "seed": cfg.seed + 1})
    refit_stats = fit_fresh(work / "proc", work / f"{tag}_refit", refit_cfg, args, split="test")
    refit = load_bank(work / f"{tag}_refit").select("test")
    assert torch.equal(refit["labels"], bank.select("test")["labels"])
    log(f"classifiers, procedural arm, init {cfg.init}")
    return fit, refit_stats, run_arm(bank, args, refit)


def real_arm(meshes: Path, work: Path, cfg: FitConfig, args):
    log("real-mesh arm")
    make_real_arm(meshes, work / "real", args.real_per_class, args.real_test_per_class, seed=0)
    fit = fit_fresh(work / "real", work / "real_bank", cfg, args)
    rbank = load_bank(work / "real_bank")
    fit.update(fit_quality(rbank, min(args.eval_shapes, 24)))
    return fit, run_arm(rbank, args, rotate_z=args.real_rotate_z)


def write_clouds(src: Path, dst: Path, n: int) -> int:
    """Every mesh of the shape folder ``src`` as a point cloud of ``n`` surface points (NPY, same layout) under
    ``dst``; files already there are kept. Returns the number written."""
    import numpy as np

    from nfkit.apps.triplanes.dataset import list_shapes
    from nfkit.apps.triplanes.shards import order_seed
    from nfkit.atomic import atomic_path
    from nfkit.datasets.shape_files import read_mesh, surface_points

    written = 0
    for f in list_shapes(src).files:
        out = dst / Path(f).relative_to(src).with_suffix(".npy")
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(out) as tmp, open(tmp, "wb") as fh:
                np.save(fh, surface_points(read_mesh(f), n, seed=order_seed(f) + 1).astype(np.float32))
            written += 1
    return written


def cloud_arm(work: Path, cfg: FitConfig, args):
    """The procedural set as point clouds (2048 surface points a shape, no faces): UDF fields (target auto)."""
    log("point-cloud arm: the procedural shapes as clouds, UDF fields")
    write_clouds(work / "proc", work / "proc_clouds", 2048)
    fit = fit_fresh(work / "proc_clouds", work / "clouds_bank", cfg, args)
    bank = load_bank(work / "clouds_bank")
    fit["target"] = bank.config.target
    return fit, run_arm(bank, args)


def in_child(fn, *a):
    """``fn(*a)`` in a fresh (spawned) process: each arm reads ~1000 meshes at most per process (embreex once
    segfaulted after ~1200 in one process), and a crash ends one arm with an error instead of the whole bench."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(fn, *a).result()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=50, help="procedural training shapes per class")
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--real-per-class", type=int, default=12, help="real-mesh arm: training samples per mesh")
    p.add_argument("--real-test-per-class", type=int, default=6)
    p.add_argument("--no-real", action="store_true", help="skip the real-mesh arm")
    p.add_argument("--no-shared-init", action="store_true",
                   help="skip the ablation arm: the procedural set fitted from one initialisation shared by all shapes")
    p.add_argument("--clouds", action="store_true",
                   help="also the point-cloud arm: the procedural shapes as surface point clouds, fitted as UDFs")
    p.add_argument("--seeds", type=int, default=3, help="classifier seeds")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--eval-shapes", type=int, default=30, help="fitted shapes scored by IoU / Chamfer")
    p.add_argument("--steps", type=int, default=FitConfig.steps, help="fit steps per shape")
    p.add_argument("--fit-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FitConfig override (repeatable), e.g. --fit-option samples=32768")
    p.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                   help="TrainConfig override for every classifier (repeatable), e.g. --train-option crop_min_area=0.5")
    p.add_argument("--real-rotate-z", action=argparse.BooleanOptionalAction, default=True,
                   help="real-mesh arm: every model trains with random rotations about z, the arm's nuisance "
                        "(planes: multiples of 90 degrees, exact; points: any angle)")
    p.add_argument("--batch-shapes", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=128)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--work", default=str(ROOT / "outputs" / "bench_triplanes"))
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    a.fit_options, a.train_options = key_values(a.fit_option), key_values(a.train_option)
    return a


def key_values(items) -> dict:
    """['k=v', ...] -> {k: v} (v a number or true/false when it reads as one, else the string)."""
    out = {}
    for kv in items:
        k, v = kv.split("=", 1)
        out[k] = json.loads(v) if v[:1].isdigit() or v[:1] in "-." or v in ("true", "false") else v
    return out


def print_table(res: dict) -> None:
    f = res["fit"]
    print(f"fit (procedural, {f['shapes']} shapes, 3 x {res['fit_config']['channels']} x "
          f"{res['fit_config']['resolution']}^2): {f['shapes_per_min']} shapes/min end to end, "
          f"{f['fit_only_shapes_per_min']} fitting only; IoU {f.get('iou_mean')} (min {f.get('iou_min')}), "
          f"Chamfer {f.get('chamfer_mean')} over {f.get('eval_shapes')} shapes")
    if "fit_shared_init" in res:
        r = res["fit_shared_init"]
        print(f"fit (procedural, shared init, {r['shapes']} shapes): {r['shapes_per_min']} shapes/min")
    if "cloud_fit" in res:
        r = res["cloud_fit"]
        print(f"fit (procedural point clouds, {r['target']}, {r['shapes']} shapes): {r['shapes_per_min']} shapes/min")
    if "real_fit" in res:
        r = res["real_fit"]
        print(f"fit (real arm, {r['shapes']} shapes): {r['shapes_per_min']} shapes/min; IoU {r.get('iou_mean')}, "
              f"Chamfer {r.get('chamfer_mean')}")
    print(f"\n| arm | model | test acc (mean ± std) | channels permuted | re-fit (seed+1) | max logit change (perm) |")
    print("|---|---|---|---|---|---|")
    for arm, models in res["accuracy"].items():
        for name, r in models.items():
            cell = lambda k: f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}" if k in r else "—"  # noqa: E731
            pl = f"{r['perm_max_logit_change']['mean']:.2e}" if "perm_max_logit_change" in r else "—"
            print(f"| {arm} | {name} | {cell('test')} | {cell('perm')} | {cell('refit')} | {pl} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    cfg = FitConfig(**{"steps": args.steps, **args.fit_options}).check()
    res = {"bench": "triplanes", "machine": cpu_model(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "fit_config": asdict(cfg),
           "settings": {k: v for k, v in vars(args).items() if k != "quiet"}, "accuracy": {}}
    t0 = time.perf_counter()
    log("procedural shapes")
    make_procedural(work / "proc", args.per_class, args.test_per_class, seed=0)
    res["fit"], res["refit"], res["accuracy"]["procedural"] = in_child(procedural_arm, work, cfg, args, "proc")
    if not args.no_shared_init and cfg.init != "shared":
        sh = FitConfig(**{**asdict(cfg), "init": "shared"})
        res["fit_shared_init"], _, res["accuracy"]["procedural, shared init"] = in_child(
            procedural_arm, work, sh, args, "proc_shared", False)
    if args.clouds:
        res["cloud_fit"], res["accuracy"]["procedural point clouds (UDF)"] = in_child(cloud_arm, work, cfg, args)
    meshes = SHARED / "meshes"
    if args.no_real or not meshes.is_dir():
        res["real_arm"] = "skipped" if args.no_real else f"skipped: {meshes} absent"
    else:
        res["real_fit"], res["accuracy"]["real"] = in_child(real_arm, meshes, work, cfg, args)
    res["total_seconds"] = round(time.perf_counter() - t0, 1)
    f = res["fit"]
    res["goals"] = {"fit_rate": f["shapes_per_min"] >= GOAL_RATE, "fit_iou": f.get("iou_mean", 0) >= GOAL_IOU}
    for arm, accs in res["accuracy"].items():
        if {"transformer", "pointnet", "mlp"} <= set(accs):
            t, pn, mlp = (accs[m]["test"]["mean"] for m in ("transformer", "pointnet", "mlp"))
            res["goals"][arm] = {"transformer_minus_pointnet": round(t - pn, 4), "transformer_minus_mlp": round(t - mlp, 4),
                                 "within_3_points_of_pointnet": t >= pn - 0.03}
    print_table(res)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
