"""``nfkit ponder make-rooms | pretrain | probe``: pretraining a 3D point-cloud encoder by differentiable rendering.

    nfkit ponder make-rooms --out DATA [--train 200 --test 50 --seed 0]   # procedural labelled rooms + RGB-D frames
    nfkit ponder pretrain DATA --out ENC.safetensors [--semantic] [--steps 400]
    nfkit ponder probe ENC.safetensors DATA            # JSON: linear-probe and 10-scene fine-tune mIoU
    nfkit ponder probe random DATA --init-seed 0       # the same for a randomly initialised encoder
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

from nfkit.apps.cli_config import add_dataclass_args, sub_config
from nfkit.errors import NfkitError

from .encoder import EncoderConfig
from .pretrain import PretrainConfig
from .probe import ProbeConfig
from .rooms import RoomsConfig

HELP = {"out": "output (make-rooms: a folder; pretrain: the encoder .safetensors file)",
        "data": "rooms folder (nfkit ponder make-rooms)", "steps": "pretraining steps",
        "batch": "scenes per step", "dropout": "fraction of input points dropped (augmentation)",
        "w_semantic": "semantic rendering weight (0: rendering only; --semantic sets 0.1)",
        "eval_every": "held-out depth error every this many steps (0: never)"}
SEMANTIC_WEIGHT = 0.1  # upstream's semantic_loss weight


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="nfkit ponder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="ponder_command", required=True)
    p = sub.add_parser("make-rooms", help="write procedural labelled rooms with RGB-D frames")
    add_dataclass_args(p, RoomsConfig, help_text=HELP)
    p = sub.add_parser("pretrain", help="pretrain the encoder by rendering RGB-D frames (PonderV2)")
    p.add_argument("data", help=HELP["data"])
    p.add_argument("--out", default="outputs/ponder_encoder.safetensors", help="encoder file (.safetensors)")
    p.add_argument("--semantic", action="store_true", help="add semantic rendering (fixed random class codes)")
    add_dataclass_args(p, PretrainConfig, help_text=HELP)
    p = sub.add_parser("probe", help="linear probe and few-scene fine-tune; prints JSON metrics")
    p.add_argument("encoder", help="encoder file (nfkit ponder pretrain), or 'random' for a random initialisation")
    p.add_argument("data", help=HELP["data"])
    p.add_argument("--init-seed", type=int, default=0, help="seed of the 'random' encoder")
    p.add_argument("--no-finetune", action="store_true", help="linear probe only")
    add_dataclass_args(p, ProbeConfig, help_text=HELP)
    for q in sub.choices.values():
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_make_rooms(ns) -> dict:
    from nfkit.progress import progress_bar

    from .rooms import write_rooms

    cfg = sub_config(RoomsConfig, ns)
    bar = progress_bar(total=cfg.train + cfg.test, unit="room", desc="make-rooms", disable=ns.quiet)
    try:
        counts = write_rooms(cfg, bar)
    finally:
        bar.close()
    print(f"nfkit ponder make-rooms: {counts['train']} train + {counts['test']} test rooms -> {cfg.out}")
    return counts


def run_pretrain(ns) -> dict:
    from .files import save_model
    from .pretrain import pretrain
    from .render import PonderModel, RenderConfig
    from .rooms import load_rooms

    cfg = sub_config(PretrainConfig, ns)
    if ns.semantic and cfg.w_semantic == 0:
        cfg.w_semantic = SEMANTIC_WEIGHT
    if not 0 <= cfg.dropout < 1:
        raise NfkitError(f"--dropout {cfg.dropout}: expected a fraction in [0, 1)")
    train, test = load_rooms(ns.data, "train"), load_rooms(ns.data, "test")
    torch.manual_seed(cfg.seed)
    model = PonderModel(EncoderConfig(), RenderConfig(sem_dim=cfg.sem_dim if cfg.w_semantic > 0 else 0))
    log = None if ns.quiet else (lambda s, e: print(f"step {s}: held-out depth error {e:.4f}", flush=True))
    res = pretrain(model, train, test, cfg, len(train["classes"]), progress=not ns.quiet, log=log)
    save_model(ns.out, model, {"data": str(ns.data), "pretrain": asdict(cfg), **res})
    print(f"nfkit ponder pretrain: {res['steps']} steps in {res['seconds']:.0f} s, held-out depth error "
          f"{res['depth_curve'][0][1] if res['depth_curve'] else float('nan'):.4f} -> "
          f"{res['depth_curve'][-1][1] if res['depth_curve'] else float('nan'):.4f} -> {ns.out}")
    return res


def run_probe(ns) -> dict:
    from .files import load_model
    from .probe import encoder_features, finetune, linear_probe
    from .render import PonderModel, RenderConfig
    from .rooms import load_rooms

    cfg = sub_config(ProbeConfig, ns)
    train, test = load_rooms(ns.data, "train"), load_rooms(ns.data, "test")
    if ns.encoder == "random":
        torch.manual_seed(ns.init_seed)
        model = PonderModel(EncoderConfig(), RenderConfig())
    else:
        model, _ = load_model(ns.encoder)
    n_classes = len(train["classes"])
    t0 = time.perf_counter()
    enc = model.encoder
    res = {"encoder": ns.encoder, "linear_probe": linear_probe(encoder_features(enc, train), train["labels"],
                                                               encoder_features(enc, test), test["labels"],
                                                               n_classes, cfg)}
    if not ns.no_finetune:
        res["finetune"] = finetune(enc, train, test, n_classes, cfg, progress=not ns.quiet)
        res["finetune"].pop("scenes")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res))
    return res


def run(ns) -> dict:
    return {"make-rooms": run_make_rooms, "pretrain": run_pretrain, "probe": run_probe}[ns.ponder_command](ns)
