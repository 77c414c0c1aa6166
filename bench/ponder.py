"""Benchmark (issue 22, acceptance 1, 3, 4): does pretraining a point-cloud encoder by rendering (PonderV2) help
per-point semantic segmentation? Procedural rooms (``nfkit ponder make-rooms``, fixed seed).

    python bench/ponder.py                       # 200 train / 50 test rooms, 3 seeds (the acceptance setting)
    python bench/ponder.py --quick               # 40 / 12 rooms, 2 seeds, short runs: a smoke test (~5 min)
    python bench/ponder.py --lidar-only          # only the real LiDAR arm (needs libcgal-demo)

Arms, each for ``--seeds`` seeds (mean +- std): random initialisation; rendering-only pretraining; rendering +
semantic rendering (fixed random class codes, contrastive at T = 0.07, weight 0.1); handcrafted per-point features
(xyz, colour, normal, height). The two pretrained arms start from the random arm's initialisation of the same seed.
Protocols: linear probe on frozen per-point features (all training scenes' labels), and fine-tuning the encoder +
a linear head on 10 labelled scenes (the handcrafted arm: a linear probe on the same 10 scenes). Metric: test mIoU
over 6 classes. Also logged: the held-out rendered depth error (mean |D^ - D| over valid pixels of 8 test scenes)
during pretraining, and the pretraining time per run.

Real LiDAR arm (acceptance 2; skipped with a note when libcgal-demo is absent): CGAL's b9_training.ply split by a
checkerboard of 10 m blocks (tiles of 30 m, :mod:`nfkit.apps.ponder.lidar`), pretraining (depth only, from
z-buffered splat frames) on urban.las + the b9 training tiles without labels; random vs rendering-only vs
handcrafted (xyz, normal, height; no colour), linear probe and fine-tune on the training tiles (the handcrafted
arm: its linear probe in both columns); ground / vegetation / roof mIoU.

Goal: rendering-only beats random init by >= 5 mIoU points in the linear probe with the +-1 std intervals apart.
Budgets are in steps; times are wall-clock of this process (report whether the machine was loaded).
Prints a table, then one JSON line (machine, date, settings, results).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from nfkit.apps.ponder.encoder import EncoderConfig
from nfkit.apps.ponder.pretrain import PretrainConfig, pretrain
from nfkit.apps.ponder.probe import (ProbeConfig, encoder_features, finetune, handcrafted_features,
                                     handcrafted_finetune, linear_probe)
from nfkit.apps.ponder.render import PonderModel, RenderConfig
from nfkit.apps.ponder.rooms import RoomsConfig, load_rooms, write_rooms
from nfkit.device import cpu_model

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("random", "render", "render+semantic", "handcrafted")
GOAL_POINTS = 5.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rooms(args) -> tuple[dict, dict, float]:
    """The rooms of ``args`` (cached in ``args.data`` when its config matches), and the generation seconds."""
    cfg = RoomsConfig(out=str(args.data), train=args.train, test=args.test, seed=args.data_seed)
    meta = Path(args.data) / "rooms.json"
    t0 = time.perf_counter()
    if not (meta.is_file() and json.loads(meta.read_text()).get("config") == asdict(cfg)):
        log(f"generating {cfg.train} + {cfg.test} rooms -> {cfg.out}")
        write_rooms(cfg)
    return load_rooms(cfg.out, "train"), load_rooms(cfg.out, "test"), time.perf_counter() - t0


def evaluate_encoder(model: PonderModel, train, test, pcfg: ProbeConfig, n_classes: int) -> dict:
    enc = model.encoder
    lp = linear_probe(encoder_features(enc, train), train["labels"], encoder_features(enc, test), test["labels"],
                      n_classes, pcfg)
    t0 = time.perf_counter()
    ft = finetune(copy.deepcopy(enc), train, test, n_classes, pcfg)
    return {"linear": lp["miou"], "finetune": ft["miou"], "linear_acc": lp["acc"], "finetune_acc": ft["acc"],
            "finetune_seconds": round(time.perf_counter() - t0, 1)}


def run_seed(seed: int, train, test, args, n_classes: int) -> dict:
    pcfg = ProbeConfig(finetune_steps=args.finetune_steps, finetune_scenes=args.finetune_scenes, seed=seed)
    out = {}
    hand = linear_probe(handcrafted_features(train), train["labels"], handcrafted_features(test), test["labels"],
                        n_classes, pcfg)
    hand10 = handcrafted_finetune(train, test, n_classes, pcfg)
    out["handcrafted"] = {"linear": hand["miou"], "finetune": hand10["miou"]}
    log(f"seed {seed} handcrafted: {out['handcrafted']}")
    for arm in ("random", "render", "render+semantic"):
        semantic = arm == "render+semantic"
        torch.manual_seed(seed)  # the same initialisation for the three arms of a seed
        model = PonderModel(EncoderConfig(), RenderConfig(sem_dim=32 if semantic else 0))
        res = {}
        if arm != "random":
            cfg = PretrainConfig(steps=args.steps, seed=seed, w_semantic=0.1 if semantic else 0.0,
                                 eval_every=args.eval_every, eval_scenes=args.eval_scenes)
            pre = pretrain(model, train, test, cfg, n_classes, progress=not args.quiet)
            res = {"pretrain_seconds": round(pre["seconds"], 1), "depth_curve": [[s, round(e, 4)] for s, e in
                                                                                 pre["depth_curve"]]}
            log(f"seed {seed} {arm}: pretrained {pre['steps']} steps in {pre['seconds']:.0f} s; held-out depth "
                f"error {pre['depth_curve'][0][1]:.4f} -> {pre['depth_curve'][-1][1]:.4f}")
        res.update(evaluate_encoder(model, train, test, pcfg, n_classes))
        log(f"seed {seed} {arm}: linear {res['linear']:.4f} finetune {res['finetune']:.4f}")
        out[arm] = res
    return out


def run_lidar(args) -> dict | None:
    """The real LiDAR arm (module docstring); None when the data is absent."""
    from nfkit.apps.ponder.lidar import find_cgal_data, lidar_splits

    data = find_cgal_data()
    if data is None:
        log("LiDAR arm skipped: libcgal-demo is not installed (apt-get install -y libcgal-demo)")
        return None
    sp = lidar_splits(data)
    pre, train, test = sp["pretrain"], sp["train"], sp["test"]
    log(f"LiDAR arm: {pre['points'].shape[0]} pretraining tiles, {train['points'].shape[0]} train / "
        f"{test['points'].shape[0]} test tiles")
    n_classes, per_seed = 3, []
    for seed in range(args.seeds):
        pcfg = ProbeConfig(finetune_steps=args.finetune_steps, finetune_scenes=train["points"].shape[0], seed=seed)
        hand = linear_probe(handcrafted_features(train), train["labels"], handcrafted_features(test),
                            test["labels"], n_classes, pcfg)
        out = {"handcrafted": {"linear": hand["miou"], "finetune": hand["miou"]}}
        for arm in ("random", "render"):
            torch.manual_seed(seed)
            model = PonderModel(EncoderConfig(), RenderConfig())
            res = {}
            if arm == "render":
                cfg = PretrainConfig(steps=args.lidar_steps, seed=seed, w_rgb=0.0, eval_every=args.eval_every,
                                     eval_scenes=args.eval_scenes)
                p = pretrain(model, pre, test, cfg, n_classes, progress=not args.quiet)
                res = {"pretrain_seconds": round(p["seconds"], 1),
                       "depth_curve": [[s, round(e, 4)] for s, e in p["depth_curve"]]}
            res.update(evaluate_encoder(model, train, test, pcfg, n_classes))
            log(f"LiDAR seed {seed} {arm}: linear {res['linear']:.4f} finetune {res['finetune']:.4f}")
            out[arm] = res
        per_seed.append(out)
    summ = {}
    for arm in ("random", "render", "handcrafted"):
        summ[arm] = {}
        for proto in ("linear", "finetune"):
            m, s = mean_std([100 * r[arm][proto] for r in per_seed])
            summ[arm][proto] = {"mean": round(m, 2), "std": round(s, 2)}
    summ["render"]["depth_error_first_last"] = [round(statistics.fmean(r["render"]["depth_curve"][i][1]
                                                                       for r in per_seed), 4) for i in (0, -1)]
    print("LiDAR arm (b9_training.ply, 10 m checkerboard split; ground / vegetation / roof):")
    for arm, s in summ.items():
        print(f"  {arm:<14} linear {s['linear']['mean']:6.2f} ± {s['linear']['std']:<5.2f} "
              f"fine-tune {s['finetune']['mean']:6.2f} ± {s['finetune']['std']:<5.2f}")
    return {"tiles": {k: int(v["points"].shape[0]) for k, v in sp.items()}, "summary": summ, "per_seed": per_seed}


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(per_seed: list[dict]) -> dict:
    summ = {}
    for arm in ARMS:
        summ[arm] = {}
        for proto in ("linear", "finetune"):
            m, s = mean_std([100 * r[arm][proto] for r in per_seed])
            summ[arm][proto] = {"mean": round(m, 2), "std": round(s, 2)}
        if arm in ("render", "render+semantic"):
            summ[arm]["pretrain_seconds"] = round(statistics.fmean(r[arm]["pretrain_seconds"] for r in per_seed), 1)
            first = [r[arm]["depth_curve"][0][1] for r in per_seed]
            last = [r[arm]["depth_curve"][-1][1] for r in per_seed]
            summ[arm]["depth_error_first_last"] = [round(statistics.fmean(first), 4), round(statistics.fmean(last), 4)]
    return summ


def goal(summ: dict) -> dict:
    r, z = summ["render"]["linear"], summ["random"]["linear"]
    gap = r["mean"] - z["mean"]
    apart = r["mean"] - r["std"] > z["mean"] + z["std"]
    return {"render_minus_random_linear": round(gap, 2), "intervals_apart": apart,
            "met": bool(gap >= GOAL_POINTS and apart)}


def print_table(summ: dict, per_seed: list[dict]) -> None:
    print(f"{'arm':<18}{'linear probe mIoU':>20}{'10-scene fine-tune':>22}{'pretrain s':>12}{'depth err 0->end':>20}")
    for arm in ARMS:
        s = summ[arm]
        lin, ft = s["linear"], s["finetune"]
        de = s.get("depth_error_first_last")
        print(f"{arm:<18}{lin['mean']:>13.2f} ± {lin['std']:<5.2f}{ft['mean']:>15.2f} ± {ft['std']:<5.2f}"
              f"{s.get('pretrain_seconds', 0):>12.0f}{'' if de is None else f'{de[0]:.4f} -> {de[1]:.4f}':>20}")
    curve = per_seed[0]["render"]["depth_curve"]
    print("held-out depth error during rendering-only pretraining (seed 0): "
          + ", ".join(f"{s}: {e:.4f}" for s, e in curve))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke-test setting")
    ap.add_argument("--data", default=str(ROOT / "outputs" / "bench_ponder_rooms"), help="rooms cache folder")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400, help="pretraining steps (batch 2 scenes)")
    ap.add_argument("--finetune-steps", type=int, default=200)
    ap.add_argument("--finetune-scenes", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-scenes", type=int, default=8)
    ap.add_argument("--lidar-steps", type=int, default=300, help="pretraining steps of the LiDAR arm")
    ap.add_argument("--no-lidar", action="store_true", help="skip the real LiDAR arm")
    ap.add_argument("--lidar-only", action="store_true", help="only the real LiDAR arm")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.train, args.test, args.seeds, args.steps, args.finetune_steps, args.eval_every, args.eval_scenes = \
            40, 12, 2, 100, 60, 50, 4
        args.data, args.lidar_steps = args.data + "_quick", 60
    t_start = time.perf_counter()
    if args.lidar_only:
        res = {"bench": "ponder", "machine": cpu_model(), "threads": torch.get_num_threads(),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "settings": {k: v for k, v in vars(args).items() if k != "quiet"}, "lidar": run_lidar(args),
               "total_seconds": round(time.perf_counter() - t_start, 1)}
        print(json.dumps(res))
        return res
    train, test, gen_s = rooms(args)
    n_classes = len(train["classes"])
    per_seed = [run_seed(seed, train, test, args, n_classes) for seed in range(args.seeds)]
    summ = summarise(per_seed)
    print_table(summ, per_seed)
    g = goal(summ)
    lidar = None if args.no_lidar else run_lidar(args)
    total = time.perf_counter() - t_start
    print(f"goal (render-only linear probe >= random + {GOAL_POINTS:.0f} points, ±1 std apart): "
          f"{'met' if g['met'] else 'NOT met'} ({g['render_minus_random_linear']:+.2f} points); total {total:.0f} s")
    res = {"bench": "ponder", "machine": cpu_model(), "threads": torch.get_num_threads(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "settings": {k: v for k, v in vars(args).items() if k != "quiet"}, "classes": train["classes"],
           "generate_seconds": round(gen_s, 1), "total_seconds": round(total, 1), "summary": summ, "goal": g,
           "per_seed": per_seed, "lidar": lidar}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
