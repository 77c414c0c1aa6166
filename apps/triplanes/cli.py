"""``nfkit triplanes make-shapes | fit | train | classify``: tri-plane fields as data.

    nfkit triplanes make-shapes --per-class N --out SHAPES          # procedural ModelNet10-named classes
    nfkit triplanes make-shapes --from-meshes DIR --per-class N --out SHAPES   # real-mesh arm (one class a mesh)
    nfkit triplanes fit SHAPES --out BANK [--rank i --world-size n]  # resumable, sharded
    nfkit triplanes train BANK --model transformer --out MODEL.safetensors
    nfkit triplanes classify MODEL SHAPE...                          # fits each shape, prints class + probability

Shapes are meshes (OFF, OBJ, PLY, STL) or point clouds (PLY without faces, XYZ, NPY): watertight meshes are fitted
as occupancy, point clouds as a UDF (``--target``; a bank holds one kind, and ``classify`` fits new shapes as the
classifier's bank was fitted).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nfkit.apps.cli_config import add_dataclass_args, sub_config
from nfkit.apps.triplanes.bank import FitConfig
from nfkit.apps.triplanes.train import TrainConfig
from nfkit.errors import NfkitError
from nfkit.worklist import worker


@dataclass
class MakeShapesConfig:
    out: str = "outputs/triplane_shapes"
    per_class: int = 50  # training shapes per class
    test_per_class: int = 20
    seed: int = 0
    from_meshes: str = ""  # a folder of meshes: the real-mesh arm (each mesh a class, under nuisance)


@dataclass
class FitRunConfig:
    shapes: str = ""
    out: str = "outputs/triplane_bank"
    split: str = "all"  # all | train | test
    shard_size: int = 128
    batch_shapes: int = 64  # shapes fitted together
    rank: int = -1  # this worker (default: $RANK or 0)
    world_size: int = -1  # workers (default: $WORLD_SIZE or 1)
    max_shards: int = 0  # fit at most this many shards in this run (0: all of this worker's)


HELP = {
    "out": "output folder",
    "from_meshes": "folder of meshes for the real-mesh arm (each mesh one class under nuisance)",
    "shapes": "shape folder: SHAPES/<class>/[train|test/]*.{off,obj,ply,stl,xyz,npy}",
    "split": "which shapes to fit: all, train or test",
    "init": "per-shape (seed and shape index: upstream's) or shared (one initialisation for every shape)",
    "decoder": "per-shape (one decoder a shape) or shared (one for the bank, fitted first, then frozen)",
    "shared_fit_shapes": "--decoder shared: training shapes the decoder is fitted on",
    "target": "occupancy (watertight meshes), udf (point clouds; meshes through surface samples) or auto",
    "udf_clip": "udf: distance at which the BCE label 1 - min(udf, clip) / clip reaches 0",
    "cloud_points": "udf: points of each shape's cloud",
    "model": "transformer, cnn, mlp or pointnet",
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit triplanes", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="triplanes_command", required=True)
    p = sub.add_parser("make-shapes", help="write the procedural shape set (or the real-mesh arm)")
    add_dataclass_args(p, MakeShapesConfig, help_text=HELP)
    p = sub.add_parser("fit", help="fit one tri-plane field per shape into a sharded bank (resumable)")
    add_dataclass_args(p, FitRunConfig, positional=("shapes",), help_text=HELP)
    add_dataclass_args(p, FitConfig, help_text=HELP)
    p = sub.add_parser("train", help="train a classifier on a bank")
    p.add_argument("bank", help="bank folder (nfkit triplanes fit)")
    p.add_argument("--out", default="outputs/triplane_classifier.safetensors", help="classifier file")
    add_dataclass_args(p, TrainConfig, help_text=HELP)
    p = sub.add_parser("classify", help="fit shapes and print each one's class and probability")
    p.add_argument("model", help="classifier file (nfkit triplanes train)")
    p.add_argument("shape", nargs="+", help="meshes (OFF, OBJ, PLY, STL) or point clouds (PLY, XYZ, NPY)")
    p.add_argument("--top", type=int, default=1, help="classes printed per shape")
    for q in sub.choices.values():
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_make_shapes(ns) -> dict:
    from nfkit.apps.triplanes.dataset import make_procedural, make_real_arm
    from nfkit.apps.triplanes.procedural import CLASSES
    from nfkit.progress import progress_bar

    cfg = sub_config(MakeShapesConfig, ns)
    if cfg.per_class < 1 or cfg.test_per_class < 0:
        raise NfkitError("--per-class must be positive and --test-per-class >= 0")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise NfkitError(f"--out {cfg.out}: is a file; expected a folder")
    if cfg.from_meshes:
        n_classes = len([p for p in Path(cfg.from_meshes).glob("*") if p.suffix.lower() in (".off", ".obj", ".ply", ".stl")])
    else:
        n_classes = len(CLASSES)
    bar = progress_bar(total=n_classes * (cfg.per_class + cfg.test_per_class), unit="shape", desc="make-shapes",
                       disable=ns.quiet)
    try:
        if cfg.from_meshes:
            n = make_real_arm(cfg.from_meshes, cfg.out, cfg.per_class, cfg.test_per_class, cfg.seed, bar)
        else:
            n = make_procedural(cfg.out, cfg.per_class, cfg.test_per_class, cfg.seed, progress=bar)
    finally:
        bar.close()
    from nfkit.atomic import write_json_atomic

    write_json_atomic(Path(cfg.out) / "shapes.json", {"config": asdict(cfg)})
    print(f"nfkit triplanes make-shapes: {n} new shapes -> {cfg.out}")
    return {"written": n}


def run_fit(ns) -> dict:
    from nfkit.apps.triplanes.shards import fit_bank

    run_cfg, cfg = sub_config(FitRunConfig, ns), sub_config(FitConfig, ns)
    rank, world = worker(run_cfg.rank, run_cfg.world_size)
    res = fit_bank(run_cfg.shapes, run_cfg.out, cfg, run_cfg.shard_size, run_cfg.batch_shapes, run_cfg.split, rank,
                   world, progress=not ns.quiet, max_shards=run_cfg.max_shards)
    rate = res["shapes"] / res["seconds"] * 60 if res["shapes"] else 0.0
    summary = {"fitted_shards": res["fitted"], "skipped_shards": res["skipped"], "shapes": res["shapes"],
               "shapes_per_min": round(rate, 1), "missing_shards": len(res["missing"])}
    # one write of a whole line (every torchrun rank prints one into the same pipe: separate writes interleaved)
    sys.stdout.flush()
    sys.stdout.write(f"nfkit triplanes fit: {json.dumps(summary)} -> {run_cfg.out}\n")
    sys.stdout.flush()
    return res


def run_train(ns) -> dict:
    from nfkit.apps.triplanes.shards import load_bank
    from nfkit.apps.triplanes.train import (accuracy, input_dims, logits_of, model_inputs, save_classifier,
                                            train_classifier)

    cfg = sub_config(TrainConfig, ns)
    bank = load_bank(ns.bank)
    if cfg.model == "mlp" and bank.config.decoder == "shared":
        raise NfkitError(f"--model mlp: {ns.bank} has a shared decoder; the weight-space MLP reads per-shape ones")
    cfg.check(bank.config.resolution)
    if Path(ns.out).is_dir():
        raise NfkitError(f"--out {ns.out}: is a folder; expected a file name")
    tr = bank.select("train")
    if len(tr["labels"]) == 0:
        raise NfkitError(f"{ns.bank}: no training shapes (split 'train') in the bank")
    model, stats = train_classifier(tr, bank.config, len(bank.classes), cfg, progress=not ns.quiet)
    te = bank.select("test")
    acc = {"train": accuracy(logits_of(model, model_inputs(tr, bank.config, cfg.model), cfg.model, cfg), tr["labels"])}
    if len(te["labels"]):
        acc["test"] = accuracy(logits_of(model, model_inputs(te, bank.config, cfg.model), cfg.model, cfg), te["labels"])
    save_classifier(ns.out, model, cfg, bank.config, bank.classes, input_dims(tr, bank.config),
                    info={"bank": str(ns.bank), "accuracy": acc, **stats}, decoder=bank.decoder)
    print(f"nfkit triplanes train: {cfg.model} {json.dumps({k: round(v, 4) for k, v in acc.items()})} -> {ns.out}")
    return {"accuracy": acc, **stats}


def run_classify(ns) -> list:
    from dataclasses import replace

    from nfkit.apps.triplanes.bank import fit_batch
    from nfkit.apps.triplanes.shards import load_targets, order_seed
    from nfkit.apps.triplanes.train import load_classifier, logits_of, model_inputs
    from nfkit.datasets.shape_files import read_shape
    from nfkit.progress import progress_bar

    if ns.top < 1:
        raise NfkitError(f"--top {ns.top}: expected a positive integer")
    for f in ns.shape:  # every input is checked (a mesh or a point cloud) before any work
        read_shape(f)
    model, cfg, fit_cfg, classes, decoder = load_classifier(ns.model)
    if fit_cfg.target == "auto":  # classifiers from before point clouds: occupancy of meshes
        fit_cfg = replace(fit_cfg, target="occupancy")
    pts, occ, surf = load_targets(ns.shape, fit_cfg)
    bar = progress_bar(total=fit_cfg.steps, unit="step", desc=f"fit {len(ns.shape)} shapes", disable=ns.quiet)
    params, _ = fit_batch(pts, occ, [fit_cfg.init_seed(i) for i in range(len(ns.shape))],
                          [order_seed(f) for f in ns.shape], fit_cfg, callback=lambda step: bar.update(1),
                          decoder=decoder)
    bar.close()
    x = model_inputs({**params, "points": surf}, fit_cfg, cfg.model)
    probs = torch.softmax(logits_of(model, x, cfg.model, cfg), 1)
    out = []
    for f, p in zip(ns.shape, probs):
        top = torch.topk(p, min(ns.top, len(classes)))
        pairs = [(classes[int(i)], float(v)) for v, i in zip(top.values, top.indices)]
        print(f"{f}: " + ", ".join(f"{c} ({v:.3f})" for c, v in pairs))
        out.append(pairs)
    return out


def run(ns: argparse.Namespace):
    return {"make-shapes": run_make_shapes, "fit": run_fit, "train": run_train,
            "classify": run_classify}[ns.triplanes_command](ns)


def main(argv=None) -> int:
    from nfkit.apps.cli import main as nfkit_main

    return nfkit_main(["triplanes", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
